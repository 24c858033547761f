"""Judges at their edges, as the canary thread explains them. Threshold: a measurement
exactly at a limit passes, just beyond it fails; for "higher is better" metrics the limits
bound a drop; a limit relative to the baseline cannot be judged without one. Mann-Whitney:
the sentence for each outcome, and five samples a side are enough."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from scipy import stats

from bot.engine.analysis import (
    MetricResult,
    MetricSeries,
    MetricSpec,
    Verdict,
    mann_whitney,
    threshold,
)
from bot.engine.analysis.model import CODE_FAIL, CODE_INCONCLUSIVE, CODE_PASS

LIMITS = {
    "max": MetricSpec(name="m", unit="plain", max=10),
    "min": MetricSpec(name="m", unit="plain", min=100),
    "relative": MetricSpec(name="m", unit="plain", max_relative=1.5),
    "relative-higher": MetricSpec(name="m", unit="plain", max_relative=2, direction="higher"),
    "increase": MetricSpec(name="m", unit="plain", max_increase=0.5),
    "increase-higher": MetricSpec(name="m", unit="plain", max_increase=10,
                                  direction="higher"),
}
TALLY = " (1 failed measurement, 0 tolerated)"


def check(limit: str, canary: float, baseline: float | None) -> tuple[Verdict, str]:
    series = MetricSeries(name="m", canary=(canary,),
                          baseline=() if baseline is None else (baseline,))
    result, _ = threshold.evaluate(LIMITS[limit], series)
    return result.verdict, result.explanation


@pytest.mark.parametrize(("limit", "canary", "baseline", "verdict", "explanation"), [
    ("max", 10, 1, Verdict.PASS, "m 10 vs 1 — passes: ≤ max 10"),
    ("max", 11, 1, Verdict.FAIL, "m 11 vs 1 — fails: 11 > max 10" + TALLY),
    ("min", 100, 1, Verdict.PASS, "m 100 vs 1 — passes: ≥ min 100"),
    ("min", 99, 1, Verdict.FAIL, "m 99 vs 1 — fails: 99 < min 100" + TALLY),
    ("relative", 3, 2, Verdict.PASS, "m 3 vs 2 — passes: within 1.5× baseline (1.50×)"),
    ("relative", 3.5, 2, Verdict.FAIL,
     "m 3.5 vs 2 — fails: 1.75× baseline, beyond allowed 1.5×" + TALLY),
    ("relative-higher", 50, 100, Verdict.PASS,
     "m 50 vs 100 — passes: within 1/2× baseline (0.50×)"),
    ("relative-higher", 49, 100, Verdict.FAIL,
     "m 49 vs 100 — fails: 0.49× baseline, beyond allowed 1/2×" + TALLY),
    ("relative-higher", 500, 100, Verdict.PASS,
     "m 500 vs 100 — passes: within 1/2× baseline (5.00×)"),
    ("increase", 0.75, 0.25, Verdict.PASS, "m 0.75 vs 0.25 — passes: +0.5 within allowed +0.5"),
    ("increase", 1, 0.25, Verdict.FAIL, "m 1 vs 0.25 — fails: +0.75 > allowed +0.5" + TALLY),
    ("increase-higher", 90, 100, Verdict.PASS, "m 90 vs 100 — passes: −10 within allowed −10"),
    ("increase-higher", 89, 100, Verdict.FAIL,
     "m 89 vs 100 — fails: −11 < allowed −10" + TALLY),
    ("increase-higher", 200, 100, Verdict.PASS,
     "m 200 vs 100 — passes: +100 within allowed −10"),
    ("relative", 3, None, Verdict.INCONCLUSIVE,
     "m 3 vs n/a — inconclusive: no baseline data to compare with (1 in a row, 4 tolerated)"),
    ("increase", 3, None, Verdict.INCONCLUSIVE,
     "m 3 vs n/a — inconclusive: no baseline data to compare with (1 in a row, 4 tolerated)"),
])
def test_a_limit_holds_up_to_its_edge(limit: str, canary: float, baseline: float | None,
                                      verdict: Verdict, explanation: str) -> None:
    assert check(limit, canary, baseline) == (verdict, explanation)


def test_a_relative_limit_on_a_zero_baseline() -> None:
    assert check("relative", 1, 0) == (
        Verdict.FAIL, "m 1 vs 0 — fails: ∞× baseline, beyond allowed 1.5×" + TALLY)
    assert check("relative", 0, 0) == (
        Verdict.PASS, "m 0 vs 0 — passes: within 1.5× baseline (1×)")


def test_tolerated_failures_then_a_failure_for_good_read_as_such() -> None:
    spec = MetricSpec(name="m", unit="plain", max=10, failure_limit=1)
    state, said = None, []
    for value in ((11,), (5,), (11,), (), (5,)):
        r, state = threshold.evaluate(spec, MetricSeries(name="m", canary=value), state)
        said.append((r.verdict, r.explanation))
    assert said == [
        (Verdict.PASS, "m 11 vs n/a — passes for now: this measurement failed, 11 > max 10 "
                       "(1 failed measurement, 1 tolerated)"),
        (Verdict.PASS, "m 5 vs n/a — passes: ≤ max 10 (1 failed measurement, 1 tolerated)"),
        (Verdict.FAIL, "m 11 vs n/a — fails: 11 > max 10 (2 failed measurements, 1 tolerated)"),
        (Verdict.FAIL, "m — fails: earlier failures exceeded the limit (2 failed measurements, "
                       "1 tolerated); now no data for the canary (1 in a row, 4 tolerated)"),
        (Verdict.FAIL, "m 5 vs n/a — fails: earlier failures exceeded the limit (2 failed "
                       "measurements, 1 tolerated); now ≤ max 10"),
    ]


def test_all_limits_must_hold_unless_any_is_enough() -> None:
    both = MetricSpec(name="m", unit="plain", max=10, min=5)
    cases = {7: Verdict.PASS, 4: Verdict.FAIL, 11: Verdict.FAIL}
    for value, verdict in cases.items():
        r, _ = threshold.evaluate(both, MetricSeries(name="m", canary=(value,)))
        assert r.verdict is verdict, value
    either = both.model_copy(update={"combine": "any"})
    for value in (4, 7, 11):
        r, _ = threshold.evaluate(either, MetricSeries(name="m", canary=(value,)))
        assert r.verdict is Verdict.PASS, value


def test_an_absolute_limit_does_not_need_a_baseline_even_with_a_relative_one() -> None:
    spec = MetricSpec(name="m", unit="plain", max=10, max_relative=1.5, combine="any")
    r, _ = threshold.evaluate(spec, MetricSeries(name="m", canary=(8,)))
    assert r.verdict is Verdict.PASS and r.explanation == "m 8 vs n/a — passes: ≤ max 10"
    r, _ = threshold.evaluate(spec, MetricSeries(name="m", canary=(12,)))
    assert r.verdict is Verdict.INCONCLUSIVE  # the relative limit might still hold


# --- Mann-Whitney (Kayenta): the sentence for each outcome, on five samples a side -----------

LATENCY = MetricSpec(name="p99", label="p99 latency", unit="seconds", judge="mann-whitney")
BASE = (0.30, 0.31, 0.32, 0.33, 0.34)


@pytest.mark.parametrize(("canary", "baseline", "verdict", "explanation"), [
    ((0.40, 0.41, 0.42, 0.43, 0.44), BASE, Verdict.FAIL,
     "p99 latency 420 ms vs 320 ms — fails: canary higher (worse) by 31.3%, more than the 10% "
     "allowed, significant at 98% (p=0.012; shift +100 ms, 98% CI +60 ms … +140 ms)"),
    ((0.20, 0.21, 0.22, 0.23, 0.24), BASE, Verdict.PASS,
     "p99 latency 220 ms vs 320 ms — passes: canary lower (better) by 31.2% (p=0.012; shift "
     "−100 ms, 98% CI −140 ms … −60 ms)"),
    ((0.31, 0.32, 0.33, 0.34, 0.35), BASE, Verdict.PASS,
     "p99 latency 330 ms vs 320 ms — passes: no significant difference at 98% (p=0.4; shift "
     "+10 ms, 98% CI −30 ms … +50 ms)"),
    ((0.3,) * 4, BASE, Verdict.INCONCLUSIVE,
     "p99 latency 300 ms vs 320 ms — inconclusive: only 4 canary and 5 baseline samples, "
     "need 5 each"),
    ((0.3,) * 5, (), Verdict.INCONCLUSIVE, "p99 latency: no data for the baseline — inconclusive"),
])
def test_mann_whitney_explains_each_outcome(canary: tuple[float, ...],
                                            baseline: tuple[float, ...], verdict: Verdict,
                                            explanation: str) -> None:
    r = mann_whitney.evaluate(LATENCY, MetricSeries(name="p99", canary=canary,
                                                    baseline=baseline))
    assert (r.verdict, r.explanation) == (verdict, explanation)
    assert r.canary_value == pytest.approx(sum(canary) / len(canary))
    assert r.baseline_value == (pytest.approx(sum(baseline) / len(baseline)) if baseline
                                else None)


def test_mann_whitney_without_a_series_says_the_provider_gave_nothing() -> None:
    r = mann_whitney.evaluate(LATENCY, None)
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.explanation == "p99 latency: no data from the metrics provider — inconclusive"


@pytest.mark.parametrize(("window", "verdict", "explanation"), [
    ((0.6,), Verdict.FAIL, "p99 latency 600 ms vs n/a — fails: 600 ms > max 500 ms" + TALLY),
    ((0.05,), Verdict.FAIL, "p99 latency 50 ms vs n/a — fails: 50 ms < min 100 ms" + TALLY),
    ((0.2, 0.4), Verdict.PASS,  # the measurement is the window's mean
     "p99 latency 300 ms vs n/a — passes: ≤ max 500 ms; ≥ min 100 ms"),
])
def test_limits_are_explained_in_the_metrics_unit(window: tuple[float, ...], verdict: Verdict,
                                                  explanation: str) -> None:
    spec = MetricSpec(name="p99", label="p99 latency", unit="seconds", max=0.5, min=0.1,
                      weight=2)
    r, state = threshold.evaluate(spec, MetricSeries(name="p99", canary=window))
    assert (r.verdict, r.explanation) == (verdict, explanation)
    assert r.canary_value == pytest.approx(sum(window) / len(window))
    assert (r.baseline_value, r.critical, r.weight, state.measurements) == (None, True, 2, 1)


def test_the_explanation_names_what_decided() -> None:
    either = MetricSpec(name="m", unit="plain", max=10, min=5, combine="any")
    r, _ = threshold.evaluate(either, MetricSeries(name="m", canary=(11,)))
    assert r.explanation == "m 11 vs n/a — passes: ≥ min 5"  # the limit that held
    both = MetricSpec(name="m", unit="plain", max=10, max_relative=1.5)
    r, _ = threshold.evaluate(both, MetricSeries(name="m", canary=(11,), baseline=(2,)))
    assert r.explanation == ("m 11 vs 2 — fails: 11 > max 10; 5.50× baseline, beyond allowed "
                             "1.5×" + TALLY)
    assert (r.canary_value, r.baseline_value) == (11, 2)
    no_increase = MetricSpec(name="m", unit="plain", max_increase=0)
    r, _ = threshold.evaluate(no_increase, MetricSeries(name="m", canary=(1,), baseline=(1,)))
    assert r.explanation == "m 1 vs 1 — passes: +0 within allowed +0"


def test_measurements_are_counted_and_classified_one_by_one() -> None:
    spec = MetricSpec(name="m", unit="plain", max=10)
    state = None
    for _ in range(3):
        _, state = threshold.evaluate(spec, MetricSeries(name="m", canary=(1,)), state)
    assert state is not None and state.measurements == 3
    codes = threshold.measure([5.0, 11.0, float("nan")], [1.0, 1.0, 1.0], spec)
    assert codes.tolist() == [threshold.SUCCESS, threshold.FAILURE, threshold.ERROR]
    either = MetricSpec(name="m", unit="plain", max=10, max_relative=1.5, combine="any")
    codes = threshold.measure([11.0, 5.0], [2.0, 4.0], either)  # one canary per row
    assert codes.tolist() == [threshold.FAILURE, threshold.SUCCESS]


THROUGHPUT = MetricSpec(name="rps", label="throughput", unit="plain", judge="mann-whitney",
                        direction="higher")
ERRORS = MetricSpec(name="e", label="errors", unit="plain", judge="mann-whitney")
RPS = (100, 101, 102, 103, 104)


@pytest.mark.parametrize(("spec", "canary", "baseline", "verdict", "explanation"), [
    (THROUGHPUT, (80, 81, 82, 83, 84), RPS, Verdict.FAIL,
     "throughput 82 vs 102 — fails: canary lower (worse) by 19.6%, more than the 10% allowed, "
     "significant at 98% (p=0.012; shift −20, 98% CI −24 … −16)"),
    (THROUGHPUT, (120, 121, 122, 123, 124), RPS, Verdict.PASS,
     "throughput 122 vs 102 — passes: canary higher (better) by 19.6% (p=0.012; shift +20, "
     "98% CI +16 … +24)"),
    (THROUGHPUT, (95, 96, 97, 98, 99), RPS, Verdict.PASS,
     "throughput 97 vs 102 — passes: lower by 4.9%, within the 10% allowed (p=0.012; shift "
     "−5, 98% CI −9 … −1)"),
    (ERRORS, (1, 2, 3, 4, 5), (0,) * 5, Verdict.FAIL,
     "errors 3 vs 0 — fails: canary higher (worse) by ∞%, more than the 10% allowed, "
     "significant at 98% (p=0.0075; shift +3, 98% CI +1 … +5)"),
    (ERRORS, (0,) * 5, (1, 2, 3, 4, 5), Verdict.PASS,
     "errors 0 vs 3 — passes: canary lower (better) by 100% (p=0.0075; shift −3, 98% CI −5 … "
     "−1)"),
    (ERRORS, (0,) * 5, (0,) * 5, Verdict.PASS,
     "errors 0 vs 0 — passes: no significant difference at 98% (p=1; shift +0, 98% CI +0 … "
     "+0)"),
])
def test_mann_whitney_direction_and_zero_baselines(spec: MetricSpec, canary: tuple[int, ...],
                                                   baseline: tuple[int, ...], verdict: Verdict,
                                                   explanation: str) -> None:
    r = mann_whitney.evaluate(spec, MetricSeries(name=spec.name, canary=canary,
                                                 baseline=baseline))
    assert (r.verdict, r.explanation) == (verdict, explanation)


def test_mann_whitney_relative_change_against_a_baseline_of_exactly_one() -> None:
    spec = MetricSpec(name="m", unit="plain", judge="mann-whitney")
    r = mann_whitney.evaluate(spec, MetricSeries(name="m", canary=(1.03, 1.04, 1.05, 1.06, 1.07),
                                                 baseline=(0.98, 0.99, 1.0, 1.01, 1.02)))
    assert r.verdict is Verdict.PASS
    assert r.explanation.startswith("m 1.05 vs 1 — passes: higher by 5%, within the 10% allowed")


def test_mann_whitney_rows_are_judged_separately_with_missing_samples() -> None:
    """The benchmark's vectorised path: NaN pads a short row; too few samples is
    inconclusive per row, whichever side is short."""
    spec = MetricSpec(name="m", unit="plain", judge="mann-whitney")
    nan = float("nan")
    canary = [[5, 6, 7, 8, 9, nan, nan], [20, 21, 22, 23, 24, 25, 26], [1, 2] + [nan] * 5]
    baseline = [[5, 6, 7, 8, 9, 10, 11], [1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7]]
    codes, p, rel = mann_whitney.classify(canary, baseline, spec)
    assert codes.tolist() == [CODE_PASS, CODE_FAIL, CODE_INCONCLUSIVE]
    assert rel.tolist() == pytest.approx([-0.125, 4.75, -0.625])
    assert p[1] < 0.02 < p[0]
    codes, _, _ = mann_whitney.classify([[1, 2, 3, 4, 5]], [[1, 2, nan, nan, nan]], spec)
    assert codes.tolist() == [CODE_INCONCLUSIVE]


@pytest.mark.parametrize(("n", "m"), [(20, 20), (400, 3)])
def test_hodges_lehmann_ci_ends_are_the_kth_pairwise_differences(n: int, m: int) -> None:
    rng = np.random.default_rng(n)
    c, b = rng.normal(1, 1, n), rng.normal(0, 1, m)
    diffs = np.sort((c[:, None] - b[None, :]).ravel())
    z = stats.norm.ppf(0.99)  # 98 % two-sided
    k = max(math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12)), 1)
    shift, lo, hi = mann_whitney.hodges_lehmann(c, b, 0.98)
    assert (shift, lo, hi) == (float(np.median(diffs)), diffs[k - 1], diffs[n * m - k])


# --- Mann-Whitney: the classification rule at its edges ------------------------------------
# Kayenta's rule: High needs three things at once (significant, the canary's samples rank
# higher, U > nm/2, and its mean is more than allowed_increase above the baseline's); Low
# is the mirror image. The expected p-values and U statistics come from scipy.

LAT = MetricSpec(name="lat", label="latency", unit="plain", judge="mann-whitney")
RATE = MetricSpec(name="rps", label="throughput", unit="plain", judge="mann-whitney",
                  direction="higher")
ONE_TO_200 = np.arange(1, 201, dtype=float)


def mw(spec: MetricSpec, canary: Iterable[float], baseline: Iterable[float]) -> MetricResult:
    return mann_whitney.evaluate(spec, MetricSeries(
        name=spec.name, canary=tuple(float(x) for x in canary),
        baseline=tuple(float(x) for x in baseline)))


def scipy_mwu(canary: Iterable[float], baseline: Iterable[float]) -> tuple[float, float]:
    """(U of the canary, two-sided asymptotic p) as scipy computes them."""
    res = stats.mannwhitneyu(canary, baseline, method="asymptotic")
    return float(res.statistic), float(res.pvalue)


@pytest.mark.parametrize(("spec", "canary", "baseline", "sentence"), [
    # 199 samples at 0.8x the baseline's and one 10 s outlier: faster almost everywhere,
    # yet the mean is 129.6 vs 100.5 (+29%).
    (LAT, [*(0.8 * ONE_TO_200[:-1]), 10_000.0], ONE_TO_200,
     "latency 130 vs 100 — passes: higher by 29% on the mean, more than the 10% allowed, "
     "but its samples rank lower, significant at 98% (p="),
    # The canary serves 1.25x on every interval; the baseline had one burst of 10 000:
    # mean 125.6 vs 149.5 (-16%).
    (RATE, 1.25 * ONE_TO_200, [*ONE_TO_200[:-1], 10_000.0],
     "throughput 126 vs 150 — passes: lower by 16% on the mean, more than the 10% allowed, "
     "but its samples rank higher, significant at 98% (p="),
])
def test_mann_whitney_a_mean_moved_by_outliers_against_the_ranks_passes(
        spec: MetricSpec, canary: list[float], baseline: list[float], sentence: str) -> None:
    """Significant, beyond the allowed change on the mean, but the ranks point the other
    way: neither High nor Low, so it passes, and the sentence does not call a 29 % change
    "within the 10 % allowed"."""
    u, p = scipy_mwu(canary, baseline)
    nm = len(canary) * len(baseline)
    assert p < 0.02
    assert nm / 3 < u < nm / 2 if spec is LAT else nm / 2 < u < 2 * nm / 3
    r = mw(spec, canary, baseline)
    assert r.verdict is Verdict.PASS
    assert r.explanation.startswith(sentence)
    assert r.p_value == pytest.approx(p)


def test_mann_whitney_a_drop_on_most_samples_fails_even_with_overlapping_ranks() -> None:
    """Throughput at 0.8x the baseline on every interval: the ranks overlap a lot
    (U = 0.4 nm, well above nm/3) but the drop is significant and 20 % on the mean."""
    canary = 0.8 * ONE_TO_200
    u, p = scipy_mwu(canary, ONE_TO_200)
    assert 200 * 200 / 3 < u < 200 * 200 / 2 and p < 0.02
    r = mw(RATE, canary, ONE_TO_200)
    assert r.verdict is Verdict.FAIL
    assert r.explanation.startswith("throughput 80.4 vs 100 — fails: canary lower (worse) by "
                                    "20%, more than the 10% allowed, significant at 98% (p=")
    assert r.p_value == pytest.approx(p)


@pytest.mark.parametrize(("spec", "verdict", "explanation"), [
    (RATE.model_copy(update={"label": "queue growth"}), Verdict.FAIL,
     "queue growth -3 vs 0 — fails: canary lower (worse) by ∞%, more than the 10% allowed, "
     "significant at 98% (p=0.0075; shift −3, 98% CI −5 … −1)"),
    (LAT.model_copy(update={"label": "queue growth"}), Verdict.PASS,
     "queue growth -3 vs 0 — passes: canary lower (better) by ∞% (p=0.0075; shift −3, 98% CI "
     "−5 … −1)"),
])
def test_mann_whitney_a_negative_canary_against_a_zero_baseline_is_an_unbounded_drop(
        spec: MetricSpec, verdict: Verdict, explanation: str) -> None:
    """A baseline mean of 0 has no relative scale: any drop below it is -∞ % (the mirror of
    errors appearing from 0, +∞ %)."""
    r = mw(spec, (-5, -4, -3, -2, -1), (0,) * 5)
    assert (r.verdict, r.explanation) == (verdict, explanation)
    _, _, rel = mann_whitney.classify([-5, -4, -3, -2, -1], [0] * 5, spec)
    assert float(rel) == -math.inf


@pytest.mark.parametrize("spec", [LAT, RATE])
def test_mann_whitney_equal_means_at_zero_are_no_change_whatever_the_ranks(
        spec: MetricSpec) -> None:
    """Nine samples at -1 and one at 9 against ten zeros: the ranks differ significantly,
    but both means are exactly 0, a relative change of 0 (not ±∞): it passes."""
    canary, baseline = [-1.0] * 9 + [9.0], [0.0] * 10
    _, p = scipy_mwu(canary, baseline)
    assert p < 0.02
    codes, _, rel = mann_whitney.classify(canary, baseline, spec)
    assert (int(codes), float(rel)) == (CODE_PASS, 0.0)
    r = mw(spec, canary, baseline)
    assert r.verdict is Verdict.PASS
    assert r.explanation.startswith(f"{spec.title} 0 vs 0 — passes: lower by 0%, within the "
                                    "10% allowed (p=")


BASE_8 = (7.0, 7.5, 8.0, 8.5, 9.0)  # mean 8, exactly
UP_25 = (9.5, 9.75, 10.0, 10.25, 10.5)  # mean 10: +25 % exactly, every sample above
DOWN_25 = (5.5, 5.75, 6.0, 6.25, 6.5)  # mean 6: -25 % exactly, every sample below


@pytest.mark.parametrize(("spec", "canary", "sentence"), [
    (LAT, UP_25, "latency 10 vs 8 — passes: higher by 25%, within the 25% allowed (p=0.012"),
    (RATE, DOWN_25, "throughput 6 vs 8 — passes: lower by 25%, within the 25% allowed (p=0.012"),
    (LAT, DOWN_25, "latency 6 vs 8 — passes: lower by 25%, within the 25% allowed (p=0.012"),
])
def test_mann_whitney_a_change_of_exactly_the_allowed_increase_passes(
        spec: MetricSpec, canary: tuple[float, ...], sentence: str) -> None:
    """"More than allowed_increase" is strict: exactly 25 % with 25 % allowed is within it,
    in the bad direction (no failure) and in the good one (not called "better")."""
    r = mw(spec.model_copy(update={"allowed_increase": 0.25}), canary, BASE_8)
    assert r.verdict is Verdict.PASS
    assert r.explanation.startswith(sentence)
    r = mw(spec.model_copy(update={"allowed_increase": 0.24}), canary, BASE_8)
    assert r.verdict is (Verdict.PASS if spec is LAT and canary is DOWN_25 else Verdict.FAIL)


def test_mann_whitney_a_p_value_of_exactly_one_minus_confidence_is_not_significant() -> None:
    """Significant means p < 1 - confidence, strictly. The confidence is chosen so that
    1 - confidence is exactly scipy's p for these samples."""
    canary, baseline = (9, 10, 10, 10, 10), (10, 11, 12, 13, 14)  # -18 % on the mean
    _, p = scipy_mwu(canary, baseline)
    confidence = 1 - p
    assert 1 - confidence == p  # exact in binary floating point for this p
    at_edge = mw(RATE.model_copy(update={"confidence": confidence}), canary, baseline)
    assert at_edge.verdict is Verdict.PASS
    assert at_edge.explanation.startswith(
        "throughput 9.8 vs 12 — passes: no significant difference at 97% (p=0.026")
    codes, _, _ = mann_whitney.classify(canary, baseline,
                                        RATE.model_copy(update={"confidence": confidence}))
    assert int(codes) == CODE_PASS
    beyond = mw(RATE.model_copy(update={"confidence": 0.97}), canary, baseline)
    assert beyond.verdict is Verdict.FAIL


def test_mann_whitney_padded_rows_are_judged_on_their_samples_only() -> None:
    """The benchmark pads short rows with NaN: the padding is left out, so a padded row
    gets the p-value and verdict of its real samples."""
    nan = math.nan
    canary = [[20, 21, 22, 23, 24, nan, nan], [5, 6, 7, 8, 9, 10, 11]]
    baseline = [[1, 2, 3, 4, 5, 6, 7], [5, 6, 7, 8, 9, nan, nan]]
    codes, p, _ = mann_whitney.classify(canary, baseline, LAT)
    assert codes.tolist() == [CODE_FAIL, CODE_PASS]
    assert p.tolist() == pytest.approx([scipy_mwu([20, 21, 22, 23, 24], range(1, 8))[1],
                                        scipy_mwu(range(5, 12), [5, 6, 7, 8, 9])[1]])


def test_mann_whitney_a_row_without_samples_is_inconclusive_with_no_evidence() -> None:
    """A canary that reported nothing in one row of the benchmark: that row is
    inconclusive with p = 1 (no evidence of a difference); the next row is judged."""
    nan = math.nan
    canary = [[nan] * 5, [20, 21, 22, 23, 24]]
    baseline = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]]
    codes, p, _ = mann_whitney.classify(canary, baseline, LAT)
    assert codes.tolist() == [CODE_INCONCLUSIVE, CODE_FAIL]
    assert p.tolist() == pytest.approx([1.0, scipy_mwu([20, 21, 22, 23, 24], [1, 2, 3, 4, 5])[1]])
