"""Canary judges: verdicts, explanations, persisted state and error control under peeking."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pytest
from scipy import stats

from bot.engine.analysis import (
    AnalysisState,
    MetricSeries,
    MetricSpec,
    SequentialState,
    ThresholdState,
    Verdict,
    judge,
    mann_whitney,
    sequential,
    threshold,
)

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


def mw_spec(**kw: object) -> MetricSpec:
    base: dict[str, object] = {"name": "p99", "label": "p99 latency", "unit": "seconds",
                               "judge": "mann-whitney"}
    return MetricSpec.model_validate(base | kw)


def series(name: str, canary: Iterable[float | None],
           baseline: Iterable[float | None]) -> MetricSeries:
    return MetricSeries(name=name, canary=tuple(canary), baseline=tuple(baseline))


# --- Mann-Whitney (Kayenta) -----------------------------------------------------------------

def test_mann_whitney_identical_distributions_pass() -> None:
    rng = np.random.default_rng(1)
    r = mann_whitney.evaluate(mw_spec(), series("p99", rng.lognormal(-1, 0.2, 60),
                                                rng.lognormal(-1, 0.2, 60)))
    assert r.verdict is Verdict.PASS and not r.final
    assert "no significant difference" in r.explanation
    assert r.ci is not None and r.ci[0] <= 0 <= r.ci[1]


def test_mann_whitney_regression_fails_with_numbers() -> None:
    rng = np.random.default_rng(2)
    c, b = rng.lognormal(np.log(0.412), 0.05, 30), rng.lognormal(np.log(0.380), 0.05, 30)
    r = mann_whitney.evaluate(mw_spec(allowed_increase=0.05), series("p99", c, b))
    assert r.verdict is Verdict.FAIL
    assert r.explanation.startswith("p99 latency ")
    assert " ms vs " in r.explanation and "fails" in r.explanation and "98% CI" in r.explanation
    assert r.p_value is not None and r.p_value < 0.02
    assert r.shift is not None and r.ci is not None and 0 < r.ci[0] <= r.shift <= r.ci[1]


def test_mann_whitney_significant_but_within_allowed_increase_passes() -> None:
    rng = np.random.default_rng(3)
    c, b = rng.normal(1.05, 0.01, 40), rng.normal(1.0, 0.01, 40)
    r = mann_whitney.evaluate(mw_spec(unit="plain", allowed_increase=0.1), series("x", c, b))
    assert r.verdict is Verdict.PASS and "within the 10% allowed" in r.explanation


def test_mann_whitney_direction_is_respected() -> None:
    rng = np.random.default_rng(4)
    lower, higher = rng.normal(70, 3, 30), rng.normal(100, 3, 30)
    better = mann_whitney.evaluate(mw_spec(unit="plain"), series("p99", lower, higher))
    assert better.verdict is Verdict.PASS and "(better)" in better.explanation
    throughput = mw_spec(name="rps", label="throughput", unit="plain", direction="higher")
    worse = mann_whitney.evaluate(throughput, series("rps", lower, higher))
    assert worse.verdict is Verdict.FAIL and "lower (worse)" in worse.explanation


@pytest.mark.parametrize(("canary", "baseline", "words"), [
    ([], [0.1] * 10, "no data for the canary — inconclusive"),
    ([0.1, float("nan"), None, 0.2], [0.1] * 10, "only 2 canary and 10 baseline samples"),
])
def test_mann_whitney_too_little_data_is_inconclusive(canary: list, baseline: list,
                                                      words: str) -> None:
    r = mann_whitney.evaluate(mw_spec(), series("p99", canary, baseline))
    assert r.verdict is Verdict.INCONCLUSIVE and words in r.explanation


def test_hodges_lehmann_matches_definition_and_thinning() -> None:
    shift, lo, hi = mann_whitney.hodges_lehmann([3.0, 4.0, 5.0], [1.0, 2.0], 0.5)
    assert shift == float(np.median([2, 1, 3, 2, 4, 3]))
    assert lo <= shift <= hi
    rng = np.random.default_rng(5)
    c, b = rng.normal(0.3, 1, 2000), rng.normal(0, 1, 1500)
    s, lo, hi = mann_whitney.hodges_lehmann(c, b, 0.98)  # thinned path
    half = 2.326 * math.sqrt(1 / 2000 + 1 / 1500)  # normal-theory width for comparison
    assert lo < 0.3 < hi and abs(s - 0.3) < 0.1 and hi - lo == pytest.approx(2 * half, rel=0.15)


def test_mann_whitney_vectorised_classify_matches_scalar() -> None:
    rng = np.random.default_rng(6)
    c = rng.lognormal(0, 0.3, (20, 12)) * np.linspace(0.8, 1.4, 20)[:, None]
    b = rng.lognormal(0, 0.3, (20, 12))
    codes, _, _ = mann_whitney.classify(c, b, mw_spec())
    for row in range(20):
        r = mann_whitney.evaluate(mw_spec(), series("p99", c[row], b[row]))
        assert (r.verdict is Verdict.FAIL) == (codes[row] == 3)


# --- threshold (Argo Rollouts / Flagger) ----------------------------------------------------

ERR = MetricSpec(name="errors", label="error rate", unit="ratio", max=0.01, max_increase=0.005,
                 combine="any")
P99 = MetricSpec(name="p99", label="p99 latency", unit="seconds", max_relative=1.2)


def test_threshold_explanations_read_well() -> None:
    r, _ = threshold.evaluate(ERR, series("errors", [0.024], [0.001]))
    assert r.verdict is Verdict.FAIL and r.final
    assert r.explanation.startswith("error rate 2.4% vs 0.1% — fails: ")
    assert "+2.3 pp > allowed +0.5 pp" in r.explanation
    r, _ = threshold.evaluate(P99, series("p99", [0.412], [0.380]))
    assert r.verdict is Verdict.PASS
    assert r.explanation == "p99 latency 412 ms vs 380 ms — passes: within 1.2× baseline (1.08×)"


def test_threshold_any_combination_accepts_low_absolute_rate() -> None:
    # 0.8 % vs 0.1 % breaks "baseline + 0.5 pp" but satisfies "<= 1 %"
    r, _ = threshold.evaluate(ERR, series("errors", [0.008], [0.001]))
    assert r.verdict is Verdict.PASS and "≤ max 1%" in r.explanation


def test_threshold_failure_limit_counts_across_checks() -> None:
    spec = P99.model_copy(update={"failure_limit": 2})
    state = None
    verdicts = []
    for value in (0.5, 0.3, 0.5, 0.5, 0.3):  # baseline 0.3: 0.5 is 1.67x, a failure
        r, state = threshold.evaluate(spec, series("p99", [value], [0.3]), state)
        verdicts.append(r.verdict)
    assert verdicts == [Verdict.PASS, Verdict.PASS, Verdict.PASS, Verdict.FAIL, Verdict.FAIL]
    assert state is not None and state.failed and state.failures == 3
    assert "3 failed measurements, 2 tolerated" in r.explanation  # sticky after a good one


def test_threshold_consecutive_errors_become_inconclusive_and_reset() -> None:
    spec = P99.model_copy(update={"consecutive_error_limit": 2})
    r, st = threshold.evaluate(spec, None)
    assert r.verdict is Verdict.INCONCLUSIVE  # nothing measured yet
    r, st = threshold.evaluate(spec, series("p99", [0.3], [0.3]), st)
    assert r.verdict is Verdict.PASS
    outcomes = []
    for s in (None, series("p99", [float("nan")], [0.3]), series("p99", [], [])):
        r, st = threshold.evaluate(spec, s, st)
        outcomes.append(r.verdict)
    assert outcomes == [Verdict.PASS, Verdict.PASS, Verdict.INCONCLUSIVE]
    assert "no data for the canary (3 in a row, 2 tolerated)" in r.explanation
    r, st = threshold.evaluate(spec, series("p99", [0.3], [0.3]), st)
    assert r.verdict is Verdict.PASS and st.consecutive_errors == 0 and st.errors == 4


def test_threshold_requires_a_condition() -> None:
    with pytest.raises(ValueError, match="needs max"):
        MetricSpec(name="x", judge="threshold")


# --- sequential (anytime-valid) -------------------------------------------------------------

SEQ = MetricSpec(name="errors", label="error rate", unit="ratio", judge="sequential")


def run_counts(spec: MetricSpec, p_canary: float, p_base: float, looks: int, seed: int,
               canary_rps: int = 200, base_rps: int = 1800):
    rng = np.random.default_rng(seed)
    state, cum, results = None, np.zeros(4, np.int64), []
    for _ in range(looks):
        n, m = rng.poisson(canary_rps), rng.poisson(base_rps)
        cum += (n, rng.binomial(n, p_canary), m, rng.binomial(m, p_base))
        s = MetricSeries(name=spec.name, canary_requests=int(cum[0]), canary_errors=int(cum[1]),
                         baseline_requests=int(cum[2]), baseline_errors=int(cum[3]))
        r, state = sequential.evaluate(spec, s, state)
        results.append(r)
    return results, state


def test_sequential_identical_traffic_passes_only_after_min_requests() -> None:
    results, state = run_counts(SEQ, 0.01, 0.01, looks=10, seed=7)
    assert results[0].verdict is Verdict.INCONCLUSIVE  # ~200 of 1000 canary requests
    assert "of 1,000 canary requests needed before a pass" in results[0].explanation
    assert results[-1].verdict is Verdict.PASS and not results[-1].final
    assert "no regression detected so far" in results[-1].explanation
    assert state is not None and state.decided is None


def test_sequential_large_regression_fails_at_once_and_sticks() -> None:
    results, state = run_counts(SEQ, 0.05, 0.001, looks=3, seed=8)
    first = results[0]
    assert first.verdict is Verdict.FAIL and first.final
    assert first.e_value is not None and first.e_value >= 100
    assert first.explanation.startswith("error rate ") and "safe to roll back now" in (
        first.explanation)
    assert all(r.verdict is Verdict.FAIL for r in results)
    assert state is not None and state.decided is Verdict.FAIL
    r, _ = sequential.evaluate(SEQ, None, state)  # a provider outage does not undo it
    assert r.verdict is Verdict.FAIL and r.final


def test_sequential_improvement_never_fails_and_can_pass_early() -> None:
    spec = SEQ.model_copy(update={"allowed_increase": 0.5})
    results, _ = run_counts(spec, 0.01, 0.03, looks=60, seed=9)
    assert not any(r.verdict is Verdict.FAIL for r in results)
    final = [r for r in results if r.final]
    assert final and final[0].verdict is Verdict.PASS
    assert "passes (final)" in final[0].explanation and "safe to promote now" in (
        final[0].explanation)


def test_sequential_too_little_traffic_or_no_data_is_inconclusive() -> None:
    results, state = run_counts(SEQ, 0.0, 0.0, looks=5, seed=10, canary_rps=5)
    assert all(r.verdict is Verdict.INCONCLUSIVE for r in results)
    r, same = sequential.evaluate(SEQ, None, state)
    assert r.verdict is Verdict.INCONCLUSIVE and same == state
    assert "no data from the metrics provider" in r.explanation
    r, _ = sequential.evaluate(SEQ, series("errors", [0.1] * 10, [0.1] * 10))
    assert r.verdict is Verdict.INCONCLUSIVE and "needs cumulative" in r.explanation


def test_sequential_counter_reset_reanchors_without_evidence() -> None:
    def s(cr: int, ce: int, br: int, be: int) -> MetricSeries:
        return MetricSeries(name="errors", canary_requests=cr, canary_errors=ce,
                            baseline_requests=br, baseline_errors=be)
    _, st = sequential.evaluate(SEQ, s(500, 1, 5000, 10))
    r, st2 = sequential.evaluate(SEQ, s(20, 0, 5100, 10), st)
    assert r.verdict is Verdict.INCONCLUSIVE and "went backwards" in r.explanation
    assert st2.resets == 1 and st2.seen_canary == st.seen_canary
    _, st3 = sequential.evaluate(SEQ, s(120, 0, 6100, 11), st2)
    assert st3.seen_canary == (600, 1)


def hist(rng: np.random.Generator, n: int, median: float, tail: float = 0.0) -> np.ndarray:
    """Per-bucket counts (last = +Inf) of n lognormal latencies, a share ``tail`` +400 ms."""
    x = rng.lognormal(np.log(median), 0.5, n)
    x[: int(tail * n)] += 0.4
    return np.bincount(np.searchsorted(BOUNDS, x), minlength=len(BOUNDS) + 1)


def run_latency(spec: MetricSpec, looks: int, seed: int, median: float = 0.05,
                tail: float = 0.0, warm: tuple[int, float] = (0, 1.0)):
    rng = np.random.default_rng(seed)
    cum_c, cum_b = np.zeros(len(BOUNDS) + 1, np.int64), np.zeros(len(BOUNDS) + 1, np.int64)
    state, results = None, []
    for i in range(looks):
        slow = warm[1] if i < warm[0] else 1.0
        cum_c += hist(rng, 200, median * slow, tail)
        cum_b += hist(rng, 1800, 0.05)

        def as_le(c: np.ndarray) -> dict[float, int]:
            cs = np.cumsum(c)
            return {**dict(zip(BOUNDS, map(int, cs[:-1]), strict=True)), math.inf: int(cs[-1])}
        s = MetricSeries(name=spec.name, canary_histogram=as_le(cum_c),
                         baseline_histogram=as_le(cum_b))
        r, state = sequential.evaluate(spec, s, state)
        results.append(r)
    return results, state


LAT = MetricSpec(name="latency", label="latency", unit="seconds", judge="sequential")


@pytest.mark.parametrize(("median", "tail", "expected"), [
    (0.05, 0.0, Verdict.PASS),  # identical
    (0.04, 0.0, Verdict.PASS),  # faster canary
    (0.06, 0.0, Verdict.FAIL),  # median x1.2
    (0.05, 0.02, Verdict.FAIL),  # 2 % of requests +400 ms, median flat
])
def test_sequential_latency_histograms(median: float, tail: float, expected: Verdict) -> None:
    results, state = run_latency(LAT, looks=30, seed=11, median=median, tail=tail)
    assert results[-1].verdict is expected
    if expected is Verdict.FAIL:
        assert "slower than" in results[-1].explanation and results[-1].final
    else:
        assert not any(r.verdict is Verdict.FAIL for r in results)
    assert SequentialState.model_validate_json(state.model_dump_json()) == state


def test_sequential_warmup_checks_ignore_a_slow_start() -> None:
    slow_start = {"warm": (6, 1.6)}
    results, _ = run_latency(LAT, looks=12, seed=12, **slow_start)
    assert any(r.verdict is Verdict.FAIL for r in results)  # warm-up held against it
    spec = LAT.model_copy(update={"warmup_checks": 6})
    results, state = run_latency(spec, looks=30, seed=12, **slow_start)
    assert "warming up, check 1 of 6 ignored" in results[0].explanation
    assert not any(r.verdict is Verdict.FAIL for r in results)
    assert state is not None and state.seen_canary[0] < 30 * 200 * 0.9


def test_repeated_peeking_keeps_the_false_alarm_rate_within_alpha() -> None:
    """200 identical canaries checked 50 times each: the anytime-valid count test stays
    within alpha; naive fixed-sample tests at every look (p < alpha once) do not."""
    alpha, seeds, looks = 0.05, 200, 50
    spec = SEQ.model_copy(update={"alpha": alpha})
    rng = np.random.default_rng(2024)
    n = rng.poisson(100, (seeds, looks))
    m = rng.poisson(900, (seeds, looks))
    ce, be = rng.binomial(n, 0.02), rng.binomial(m, 0.02)
    cn, cm, cce, cbe = (np.cumsum(a, axis=1) for a in (n, m, ce, be))
    sequential_alarms = 0
    for s in range(seeds):
        state = None
        for t in range(looks):
            series_t = MetricSeries(name="errors", canary_requests=int(cn[s, t]),
                                    canary_errors=int(cce[s, t]),
                                    baseline_requests=int(cm[s, t]),
                                    baseline_errors=int(cbe[s, t]))
            r, state = sequential.evaluate(spec, series_t, state)
            if r.verdict is Verdict.FAIL:
                sequential_alarms += 1
                break
    # naive: one-sided two-proportion z-test on the cumulative counts at every look
    pc, pb = cce / cn, cbe / cm
    pooled = (cce + cbe) / (cn + cm)
    z = (pc - pb) / np.sqrt(pooled * (1 - pooled) * (1 / cn + 1 / cm))
    naive_alarms = int((stats.norm.sf(z) < alpha).any(axis=1).sum())
    margin = 2 * math.sqrt(alpha * (1 - alpha) / seeds)
    assert sequential_alarms / seeds <= alpha + margin
    assert naive_alarms / seeds > alpha + 2 * margin  # peeking breaks the fixed-sample test
    single_look = float((stats.norm.sf(z[:, -1]) < alpha).mean())
    assert single_look <= alpha + 2 * margin  # ...although each look alone is calibrated


# --- judge(): dispatch, aggregation, persisted state ----------------------------------------

def test_critical_metric_failure_fails_whole_judgement() -> None:
    rng = np.random.default_rng(13)
    specs = [mw_spec(name=f"m{i}", unit="plain") for i in range(10)]
    specs.append(mw_spec(name="crit", unit="plain", critical=True))
    data = {s.name: series(s.name, rng.normal(10, 1, 30), rng.normal(10, 1, 30))
            for s in specs}
    data["crit"] = series("crit", rng.normal(20, 1, 30), rng.normal(10, 1, 30))
    j, _ = judge(specs, data)
    assert j.verdict is Verdict.FAIL and j.final and "critical metric crit failed" in j.summary
    # the same failure on a non-critical metric is only marginal (score 90.9)
    specs[-1] = mw_spec(name="crit", unit="plain")
    j, _ = judge(specs, data)
    assert j.verdict is Verdict.INCONCLUSIVE and j.marginal and "marginal score 90.9" in j.summary


def test_no_data_is_never_a_pass() -> None:
    specs = [mw_spec(name="a", unit="plain"), SEQ, P99]
    rng = np.random.default_rng(14)
    data = {"a": series("a", rng.normal(1, 0.1, 20), rng.normal(1, 0.1, 20)),
            "errors": None, "p99": None}
    j, state = judge(specs, data)
    assert j.verdict is Verdict.INCONCLUSIVE and not j.final
    assert "2 of 3 metrics undecided (errors, p99)" in j.summary
    assert "no data from the metrics provider" in j.summary
    j, _ = judge(specs, {}, state)
    assert j.verdict is Verdict.INCONCLUSIVE and j.score == 0


def test_score_bands_and_hopeless_scores_fail() -> None:
    rng = np.random.default_rng(15)
    good = [mw_spec(name=f"g{i}", unit="plain") for i in range(19)]
    data = {s.name: series(s.name, rng.normal(5, 1, 30), rng.normal(5, 1, 30)) for s in good}
    bad = mw_spec(name="bad", unit="plain")
    data["bad"] = series("bad", rng.normal(9, 1, 30), rng.normal(5, 1, 30))
    j, _ = judge([*good, bad], data)
    assert j.verdict is Verdict.PASS and j.score == 95 and not j.final
    assert "promote when the window ends" in j.summary
    # one failure and one missing out of three: even a pass of the missing one gives 66.7
    specs = [good[0], bad, mw_spec(name="gone", unit="plain")]
    j, _ = judge(specs, {**data, "gone": None})
    assert j.verdict is Verdict.FAIL and "below 75" in j.summary


def test_judge_state_round_trips_through_json() -> None:
    specs = [SEQ, P99]
    state = AnalysisState()
    rng = np.random.default_rng(16)
    cum = np.zeros(4, np.int64)
    for _ in range(8):
        n, m = rng.poisson(200), rng.poisson(1800)
        cum += (n, rng.binomial(n, 0.05), m, rng.binomial(m, 0.001))
        data = {"errors": MetricSeries(name="errors", canary_requests=int(cum[0]),
                                       canary_errors=int(cum[1]), baseline_requests=int(cum[2]),
                                       baseline_errors=int(cum[3])),
                "p99": series("p99", [0.3], [0.3])}
        j, state = judge(specs, data, AnalysisState.model_validate_json(state.model_dump_json()))
    assert j.verdict is Verdict.FAIL and j.final and j.summary.startswith("FAIL: critical metric")
    assert isinstance(state.metrics["errors"], SequentialState)
    assert isinstance(state.metrics["p99"], ThresholdState) and state.metrics["p99"].successes == 8


def test_duplicate_metric_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        judge([P99, P99], {})
