"""The sequential judge's numbers, checked against an independent computation of its rule.

The rule (module docstring of ``bot.engine.analysis.sequential``): within one check the
canary's share of the events is Binomial(events, q) with q = r·θ / (r·θ + 1 - r), r the
canary's share of the requests and θ the ratio of the per-request event rates. The fail
e-value is the equal-weight mixture over the grid of log-ratios 0.01·1.4^k (k < 20: 0.01 … 6,
geometric) of the likelihood ratio θ = e^effect against θ = 1, multiplied over the checks;
the pass e-value tests θ = 1 + allowed_increase against θ = (1 + allowed_increase)·e^-effect.
Latency: one such test per finite histogram boundary on "requests slower than b"; fail
averages all boundaries, an early pass needs every boundary whose pooled exceedance is
within 1-99 %. Here the likelihoods come from ``scipy.stats.binom``, one check at a time.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bot.engine.analysis import MetricSeries, MetricSpec, SequentialState, Verdict, sequential

GRID = [0.01 * 1.4**k for k in range(20)]  # 0.01 … 5.96
SEQ = MetricSpec(name="errors", label="error rate", unit="ratio", judge="sequential")
LAT = MetricSpec(name="latency", label="latency", unit="seconds", judge="sequential")

Check = tuple[int, int, int, int]  # canary requests, canary events, baseline requests, events


def _q(rho: float, log_theta: float) -> float:
    theta = math.exp(log_theta)
    return rho * theta / (rho * theta + 1 - rho)


def _llr(checks: list[Check], null: float, alt: float) -> float:
    """Sum over the checks of log Binom(ce; ce+be, q(alt)) - log Binom(ce; ce+be, q(null))."""
    total = 0.0
    for cr, ce, br, be in checks:
        if cr == 0 or br == 0 or ce + be == 0:
            continue  # no split of requests or no events: the check says nothing
        rho = cr / (cr + br)
        total += (stats.binom.logpmf(ce, ce + be, _q(rho, alt))
                  - stats.binom.logpmf(ce, ce + be, _q(rho, null)))
    return float(total)


def e_fail(checks: list[Check]) -> float:
    return float(np.mean([math.exp(_llr(checks, 0.0, g)) for g in GRID]))


def e_pass(checks: list[Check], allowed: float) -> float:
    m = math.log1p(allowed)
    return float(np.mean([math.exp(_llr(checks, m, m - g)) for g in GRID]))


def counts(cr: int, ce: int, br: int, be: int) -> MetricSeries:
    return MetricSeries(name="errors", canary_requests=cr, canary_errors=ce,
                        baseline_requests=br, baseline_errors=be)


def run(spec: MetricSpec, cumulative: list[Check], state: SequentialState | None = None):
    results = []
    for c in cumulative:
        r, state = sequential.evaluate(spec, counts(*c), state)
        results.append(r)
    return results, state


def increments(cumulative: list[Check]) -> list[Check]:
    out, last = [], (0, 0, 0, 0)
    for c in cumulative:
        out.append(tuple(a - b for a, b in zip(c, last, strict=True)))
        last = c
    return out  # type: ignore[return-value]


# --- counts: the e-values -------------------------------------------------------------------

def test_one_check_e_values_are_the_binomial_mixtures() -> None:
    # 30 of the 120 errors on a canary serving 10 % of the requests: θ = 3 at face value
    spec = SEQ.model_copy(update={"allowed_increase": 0.5})
    r, st = sequential.evaluate(spec, counts(1000, 30, 9000, 90))
    assert r.e_value == pytest.approx(e_fail([(1000, 30, 9000, 90)]), rel=1e-9)
    assert r.e_value == pytest.approx(4915.08, rel=1e-5)
    assert r.e_value_pass == pytest.approx(e_pass([(1000, 30, 9000, 90)], 0.5), rel=1e-9)
    assert r.verdict is Verdict.FAIL and r.final
    assert (r.canary_value, r.baseline_value) == (pytest.approx(0.03), pytest.approx(0.01))
    assert st.decided is Verdict.FAIL and st.checks == 1
    assert st.seen_canary == (1000, 30) and st.seen_baseline == (9000, 90)


@pytest.mark.parametrize("allowed", [0.1, 0.5, 0.0])
def test_evidence_multiplies_over_checks_whatever_the_canary_weight(allowed: float) -> None:
    """Each check is conditioned on its own request split: the weight may change (10 %, then
    50 %, then 25 %) and checks without events or without requests change nothing."""
    spec = SEQ.model_copy(update={"allowed_increase": allowed, "min_requests": 10**6})
    cumulative = [(1000, 12, 9000, 95), (1000, 12, 9000, 95),  # nothing happened
                  (3000, 40, 11000, 120), (3000, 40, 11000, 120),
                  (4000, 47, 14000, 141), (4000, 47, 14000, 141), (5000, 60, 17000, 170)]
    results, st = run(spec, cumulative)
    steps = increments(cumulative)
    for i, r in enumerate(results):
        assert r.e_value == pytest.approx(e_fail(steps[: i + 1]), rel=1e-9)
        assert r.e_value_pass == pytest.approx(e_pass(steps[: i + 1], allowed), rel=1e-9)
        assert r.verdict is Verdict.INCONCLUSIVE  # min_requests never reached
    assert st.checks == 7 and st.seen_canary == (5000, 60) and st.seen_baseline == (17000, 170)
    assert st.last_canary == (5000, 60) and st.last_baseline == (17000, 170)


def test_an_improvement_builds_pass_evidence_and_passes_early() -> None:
    spec = SEQ.model_copy(update={"allowed_increase": 0.1})
    r, st = sequential.evaluate(spec, counts(5000, 60, 5000, 100))
    assert r.e_value_pass == pytest.approx(e_pass([(5000, 60, 5000, 100)], 0.1), rel=1e-9)
    assert r.e_value_pass == pytest.approx(138.82, rel=1e-4)
    assert r.e_value == pytest.approx(e_fail([(5000, 60, 5000, 100)]), rel=1e-9)
    assert r.verdict is Verdict.PASS and r.final and st.decided is Verdict.PASS
    assert r.explanation == (
        "error rate 1.2% vs 2% (−0.80 pp, 95% CI [−1.30, −0.31]) — passes (final): with 99% "
        "anytime-valid confidence the canary "
        "is less than 1.1× worse (60 errors in 5,000 canary requests vs 100 in 5,000 baseline; "
        "e_pass=139 ≥ 100) — safe to promote now")
    # the same data against a 5 % margin is not enough for a final pass
    r, _ = sequential.evaluate(spec.model_copy(update={"allowed_increase": 0.05}),
                               counts(5000, 60, 5000, 100))
    assert r.e_value_pass == pytest.approx(e_pass([(5000, 60, 5000, 100)], 0.05), rel=1e-9)
    assert r.e_value_pass < 100 and r.verdict is Verdict.PASS and not r.final


# --- counts: what the on-call reads ---------------------------------------------------------

def test_a_failure_says_how_much_worse_with_the_evidence_and_the_bar() -> None:
    r, _ = sequential.evaluate(SEQ, counts(1000, 30, 9000, 90))
    e = e_fail([(1000, 30, 9000, 90)])
    assert f"{e:.3g}" == "4.92e+03"
    assert r.explanation == (
        "error rate 3% vs 1% (+2.00 pp, 95% CI [+1.08, +3.26]) — fails: canary error rate is "
        "higher (30 errors in 1,000 canary "
        "requests vs 90 in 9,000 baseline; 3× baseline; e=4.92e+03 ≥ 100, anytime-valid at "
        "α=0.01) — safe to roll back now")
    assert r.name == "errors" and r.judge == "sequential" and r.critical and r.weight == 1


def test_a_pass_so_far_shows_the_evidence_below_the_bar() -> None:
    spec = SEQ.model_copy(update={"alpha": 0.05, "weight": 2.5, "critical": False})
    r, st = sequential.evaluate(spec, counts(1000, 20, 9000, 90))
    e = e_fail([(1000, 20, 9000, 90)])
    assert 1 < e < 20 and f"{e:.3g}" == "5.18"
    assert r.verdict is Verdict.PASS and not r.final and st.decided is None
    assert r.explanation == (
        "error rate 2% vs 1% (+1.00 pp, 95% CI [+0.26, +2.09]) — passes: no regression detected "
        "so far (20 errors in 1,000 "
        "canary requests vs 90 in 9,000 baseline; e=5.18 < 20); promote when the analysis "
        "window ends")
    assert not r.critical and r.weight == 2.5


def test_before_min_requests_it_is_inconclusive_and_says_how_far_along() -> None:
    r, st = sequential.evaluate(SEQ, counts(999, 1, 9000, 9))
    assert r.verdict is Verdict.INCONCLUSIVE and not r.final
    e = e_fail([(999, 1, 9000, 9)])
    assert r.e_value == pytest.approx(e, rel=1e-9)
    assert r.explanation == (
        f"error rate 0.1% vs 0.1% (+0.00 pp, 95% CI [−0.12, +0.47]) — inconclusive: 999 of 1,000 "
        f"canary requests needed before a pass (1 error in 999 canary requests vs 9 in 9,000 "
        f"baseline; e={e:.3g} < 100; a 5× rise would show by ~2,159 canary "
        "requests)")
    assert (r.requests_needed, r.detect_requests) == (1, 2159)
    # one more canary request reaches min_requests (">="): a pass
    r, _ = sequential.evaluate(SEQ, counts(1000, 1, 9000, 9), st)
    assert r.verdict is Verdict.PASS


def test_no_canary_traffic_yet() -> None:
    r, st = sequential.evaluate(SEQ, counts(0, 0, 9000, 9))
    assert r.verdict is Verdict.INCONCLUSIVE
    assert r.explanation == "error rate: no canary traffic yet — inconclusive"
    assert r.e_value == 1 and r.e_value_pass == 1  # no evidence either way
    assert r.canary_value is None and r.baseline_value == pytest.approx(0.001)
    assert st.seen_canary == (0, 0) and st.seen_baseline == (9000, 9)


def test_a_baseline_without_errors_gives_no_ratio() -> None:
    r, _ = sequential.evaluate(SEQ, counts(1000, 9, 9000, 0))
    e = e_fail([(1000, 9, 9000, 0)])
    assert r.e_value == pytest.approx(e, rel=1e-9) and r.verdict is Verdict.FAIL
    assert f"{e:.1e}" == "6.0e+07"  # 1e4 and more: one decimal, exponent
    assert r.explanation == (
        "error rate 0.9% vs 0% (+0.90 pp, 95% CI [+0.47, +1.70]) — fails: canary error rate is "
        "higher (9 errors in 1,000 "
        "canary requests vs 0 in 9,000 baseline; e=6.0e+07 ≥ 100, anytime-valid at α=0.01) "
        "— safe to roll back now")


# --- latency: one count test per boundary ---------------------------------------------------

INF = math.inf


def lat_llrs(canary: dict[float, int], baseline: dict[float, int], null: float,
             alt: float) -> list[float]:
    """One check from zero: per boundary, the LLR of the split of "slower than b"."""
    return [_llr([(canary[INF], canary[INF] - canary[b], baseline[INF],
                   baseline[INF] - baseline[b])], null, alt)
            for b in sorted(k for k in canary if k != INF)]


def log_mix(values: list[float]) -> float:
    return float(np.logaddexp.reduce(values) - math.log(len(values)))


def lat_log_e(canary: dict[float, int], baseline: dict[float, int], allowed: float,
              active: list[bool]) -> tuple[float, float, list[float]]:
    """(log e fail over every boundary and alternative, log e pass at the active boundaries,
    log e fail per boundary)."""
    by_alt = [lat_llrs(canary, baseline, 0.0, g) for g in GRID]  # [alt][bound]
    bounds = range(len(by_alt[0]))
    log_fail = log_mix([x for row in by_alt for x in row])
    per_bound_fail = [log_mix([row[i] for row in by_alt]) for i in bounds]
    m = math.log1p(allowed)
    by_alt = [lat_llrs(canary, baseline, m, m - g) for g in GRID]
    per_bound = [log_mix([row[i] for row in by_alt]) for i in bounds]
    log_pass = min((p for p, a in zip(per_bound, active, strict=True) if a), default=-INF)
    return log_fail, log_pass, per_bound_fail


def hist(canary: dict[float, int], baseline: dict[float, int]) -> MetricSeries:
    return MetricSeries(name="latency", canary_histogram=canary, baseline_histogram=baseline)


def test_a_tail_regression_fails_and_names_the_boundary_where_it_is() -> None:
    # 5 % of canary requests slower than 400 ms vs 0.5 % of baseline ones; 60 % vs 50 %
    # slower than 100 ms; the same 10 % slower than 200 ms
    canary = {0.1: 400, 0.2: 900, 0.4: 950, INF: 1000}
    baseline = {0.1: 5000, 0.2: 9000, 0.4: 9950, INF: 10000}
    # pooled exceedance: 5600/11000, 1100/11000, 100/11000 < 1 %: the last is not active
    log_fail, log_pass, per_bound = lat_log_e(canary, baseline, 0.1, [True, True, False])
    assert max(per_bound) == per_bound[2]  # the 400 ms boundary carries the evidence
    r, st = sequential.evaluate(LAT, hist(canary, baseline))
    assert r.verdict is Verdict.FAIL and r.final and st.decided is Verdict.FAIL
    assert math.log(r.e_value) == pytest.approx(log_fail, rel=1e-9)
    assert math.log(r.e_value_pass) == pytest.approx(log_pass, rel=1e-9)
    assert st.test == "latency" and st.bounds == (0.1, 0.2, 0.4)
    assert st.seen_canary == (1000, 600, 100, 50) and st.seen_baseline == (10000, 5000, 1000, 50)
    # p50: canary 0.1 + 0.1·(500-400)/(900-400) = 120 ms, baseline 100 ms (at the bound);
    # p99: canary rank 990 is in +Inf, reported as the last bound, 400 ms; baseline
    # 0.2 + 0.2·(9900-9000)/(9950-9000) = 389 ms
    assert r.canary_value == pytest.approx(0.4)
    assert r.baseline_value == pytest.approx(0.2 + 0.2 * 900 / 950)
    assert r.explanation == (
        f"latency p50 120 ms vs 100 ms, p99 400 ms vs 389 ms — fails: canary latency is "
        f"stochastically larger (5% of canary requests slower than 400 ms vs 0.5% of "
        f"baseline; 10× baseline; e={math.exp(log_fail):.1e} ≥ 100, anytime-valid at α=0.01) "
        "— safe to roll back now")


@pytest.mark.parametrize(("allowed", "final"), [(0.5, True), (0.2, True), (0.1, False)])
def test_an_early_latency_pass_needs_every_active_boundary(allowed: float, final: bool) -> None:
    # 20,000 requests each, the same shape; at 1 ms nearly all (> 99 %) and at 1 s nearly
    # none (< 1 %) of the requests are slower: those two boundaries are not active
    canary = {0.001: 10, 0.1: 10000, 0.2: 18000, 1.0: 19985, INF: 20000}
    baseline = {0.001: 12, 0.1: 10050, 0.2: 18000, 1.0: 19990, INF: 20000}
    spec = LAT.model_copy(update={"allowed_increase": allowed})
    log_fail, log_pass, _ = lat_log_e(canary, baseline, allowed, [False, True, True, False])
    r, st = sequential.evaluate(spec, hist(canary, baseline))
    assert math.log(r.e_value) == pytest.approx(log_fail, rel=1e-9)
    assert math.log(r.e_value_pass) == pytest.approx(log_pass, rel=1e-9)
    assert (log_pass >= math.log(100)) is final
    assert r.verdict is Verdict.PASS and r.final is final
    assert (st.decided is Verdict.PASS) is final
    head = "latency p50 100 ms vs 99.5 ms, p99 925 ms vs 924 ms — "
    what = "20,000 canary vs 20,000 baseline requests"
    if final:
        assert r.explanation == (
            f"{head}passes (final): with 99% anytime-valid confidence the canary is less "
            f"than {1 + allowed:g}× worse ({what}; e_pass={math.exp(log_pass):.1e} ≥ 100) — "
            "safe to promote now")
    else:
        assert r.explanation == (
            f"{head}passes: no regression detected so far ({what}; "
            f"e={math.exp(log_fail):.3g} < 100); promote when the analysis window ends")


def test_the_pass_test_ignores_boundaries_outside_1_to_99_percent() -> None:
    # at 1 s: 15 vs 10 slow requests, far too few to rule out a 50 % increase, but only
    # 0.06 % of the requests are that slow, so the boundary does not hold the pass back
    canary = {0.1: 10000, 1.0: 19985, INF: 20000}
    baseline = {0.1: 10050, 1.0: 19990, INF: 20000}
    spec = LAT.model_copy(update={"allowed_increase": 0.5})
    _, log_pass_all, _ = lat_log_e(canary, baseline, 0.5, [True, True])
    _, log_pass, _ = lat_log_e(canary, baseline, 0.5, [True, False])
    assert log_pass_all < 0 < math.log(100) < log_pass
    r, _ = sequential.evaluate(spec, hist(canary, baseline))
    assert r.final and math.log(r.e_value_pass) == pytest.approx(log_pass, rel=1e-9)


def test_without_an_active_boundary_there_is_no_early_pass() -> None:
    canary = {5.0: 19990, INF: 20000}  # 0.05 % slower than 5 s
    baseline = {5.0: 19990, INF: 20000}
    r, st = sequential.evaluate(LAT, hist(canary, baseline))
    assert r.e_value_pass == 0 and r.verdict is Verdict.PASS and not r.final
    assert st.decided is None


# --- state: counters, warm-up, resets, sticky decisions, configuration changes ---------------

def test_warm_up_checks_only_anchor_the_counters() -> None:
    spec = SEQ.model_copy(update={"warmup_checks": 2, "min_requests": 0})
    cumulative = [(500, 40, 4500, 10), (1000, 80, 9000, 20),  # a bad start: ignored
                  (2000, 90, 18000, 110), (3000, 100, 27000, 200)]
    results, st = run(spec, cumulative)
    assert [r.explanation for r in results[:2]] == [
        "error rate: warming up, check 1 of 2 ignored — inconclusive",
        "error rate: warming up, check 2 of 2 ignored — inconclusive"]
    assert all(r.verdict is Verdict.INCONCLUSIVE and r.e_value is None for r in results[:2])
    steps = increments(cumulative)[2:]  # evidence starts from the second anchor
    assert results[2].e_value == pytest.approx(e_fail(steps[:1]), rel=1e-9)
    assert results[3].e_value == pytest.approx(e_fail(steps), rel=1e-9)
    assert results[3].e_value_pass == pytest.approx(e_pass(steps, 0.1), rel=1e-9)
    assert st.checks == 4 and st.seen_canary == (2000, 20) and st.seen_baseline == (18000, 180)
    assert results[3].verdict is Verdict.PASS  # min_requests 0


def test_a_counter_reset_re_anchors_and_the_evidence_continues_from_there() -> None:
    spec = SEQ.model_copy(update={"min_requests": 10**6})
    _, st = run(spec, [(1000, 12, 9000, 95)])
    r, st2 = sequential.evaluate(spec, counts(1000, 12, 900, 95), st)  # baseline restarted
    assert r.verdict is Verdict.INCONCLUSIVE and r.e_value is None
    assert r.explanation == ("error rate: counters went backwards (restart?); re-anchored, "
                             "this check adds no evidence — inconclusive")
    assert st2.resets == 1 and st2.checks == 2
    assert st2.last_canary == (1000, 12) and st2.last_baseline == (900, 95)
    assert (st2.fail_llr, st2.pass_llr, st2.seen_canary) == (st.fail_llr, st.pass_llr,
                                                             st.seen_canary)
    r, st3 = sequential.evaluate(spec, counts(1500, 20, 5400, 140), st2)
    steps = [(1000, 12, 9000, 95), (500, 8, 4500, 45)]
    assert r.e_value == pytest.approx(e_fail(steps), rel=1e-9)
    assert r.e_value_pass == pytest.approx(e_pass(steps, 0.1), rel=1e-9)
    assert st3.resets == 1 and st3.seen_canary == (1500, 20) and st3.seen_baseline == (13500, 140)
    # a reset of the canary's error counter alone is also a reset
    _, st4 = sequential.evaluate(spec, counts(1600, 3, 6000, 150), st3)
    assert st4.resets == 2 and st4.seen_canary == st3.seen_canary


def test_a_final_pass_is_sticky_like_a_failure() -> None:
    spec = SEQ.model_copy(update={"allowed_increase": 0.1})
    first, st = sequential.evaluate(spec, counts(5000, 60, 5000, 100))
    assert first.final and first.verdict is Verdict.PASS
    for later in (None, counts(6000, 500, 6000, 100)):  # no data, then a later regression
        r, same = sequential.evaluate(spec, later, st)
        assert (r.verdict, r.final, r.explanation) == (Verdict.PASS, True, first.explanation)
        assert same == st


def test_a_failure_keeps_its_explanation_while_sticky() -> None:
    first, st = sequential.evaluate(SEQ, counts(1000, 30, 9000, 90))
    r, same = sequential.evaluate(SEQ, counts(2000, 30, 18000, 900), st)
    assert (r.verdict, r.final, r.explanation, r.e_value) == (
        Verdict.FAIL, True, first.explanation, first.e_value)
    assert same == st


def test_changing_the_margin_or_the_test_starts_the_evidence_afresh() -> None:
    spec = SEQ.model_copy(update={"min_requests": 10**6})
    _, st = run(spec, [(1000, 12, 9000, 95)])
    wider = spec.model_copy(update={"allowed_increase": 0.5})
    r, st2 = sequential.evaluate(wider, counts(2000, 25, 18000, 190), st)
    fresh = [(2000, 25, 18000, 190)]  # all of it is one check of a new test
    assert r.e_value == pytest.approx(e_fail(fresh), rel=1e-9)
    assert r.e_value_pass == pytest.approx(e_pass(fresh, 0.5), rel=1e-9)
    assert st2.checks == 1 and st2.allowed_increase == 0.5 and st2.seen_canary == (2000, 25)
    # the same metric now read from a histogram: a latency test of its own
    canary = {0.1: 400, 0.2: 900, 0.4: 950, INF: 1000}
    r, st3 = sequential.evaluate(wider, hist(canary, canary), st2)
    assert st3.test == "latency" and st3.checks == 1 and st3.seen_canary == (1000, 600, 100, 50)
    # other boundaries: afresh again
    moved = {0.1: 400, 0.3: 900, 0.4: 950, INF: 1000}
    _, st4 = sequential.evaluate(wider, hist(moved, moved), st3)
    assert st4.bounds == (0.1, 0.3, 0.4) and st4.checks == 1


def test_unusable_data_is_inconclusive_and_keeps_the_state() -> None:
    spec = SEQ.model_copy(update={"min_requests": 10**6, "weight": 3.0})
    _, st = run(spec, [(1000, 12, 9000, 95)])
    cases = [
        (hist({0.1: 1, INF: 2}, {0.2: 1, INF: 2}),
         "error rate: canary and baseline histograms have different buckets — inconclusive"),
        (hist({INF: 2}, {INF: 3}),
         "error rate: the histogram has no finite buckets — inconclusive"),
        (MetricSeries(name="errors", canary=(0.1,), baseline=(0.1,), canary_requests=5),
         "error rate: the sequential judge needs cumulative request/error counters or "
         "histograms — inconclusive"),
        (None, "error rate: no data from the metrics provider — inconclusive"),
    ]
    for series, text in cases:
        r, same = sequential.evaluate(spec, series, st)
        assert (r.verdict, r.explanation, r.final) == (Verdict.INCONCLUSIVE, text, False)
        assert same == st and r.e_value is None
        assert r.name == "errors" and r.judge == "sequential" and r.critical and r.weight == 3
        r, new = sequential.evaluate(spec, series)
        assert new == SequentialState() and r.explanation == text


def test_a_histogram_without_its_inf_bucket_counts_its_largest_bucket_as_the_total() -> None:
    canary = {0.1: 400, 0.2: 900, 0.4: 950, INF: 1000}
    baseline = {0.1: 5000, 0.2: 9000, 0.4: 9950, INF: 10000}
    _, with_inf = sequential.evaluate(LAT, hist(canary, baseline))
    no_inf = {k: v for k, v in canary.items() if k != INF} | {0.8: 1000}
    base_no_inf = {k: v for k, v in baseline.items() if k != INF} | {0.8: 10000}
    _, st = sequential.evaluate(LAT, hist(no_inf, base_no_inf))
    assert st.seen_canary == (*with_inf.seen_canary, 0)  # nobody slower than 800 ms
    assert st.seen_baseline == (*with_inf.seen_baseline, 0)


def test_a_histogram_is_preferred_to_counters() -> None:
    canary = {0.1: 400, 0.2: 900, 0.4: 950, INF: 1000}
    both = MetricSeries(name="latency", canary_histogram=canary, baseline_histogram=canary,
                        canary_requests=10, canary_errors=1, baseline_requests=10,
                        baseline_errors=1)
    _, st = sequential.evaluate(LAT, both)
    assert st.test == "latency"


# --- the vectorised kernels the engine and the benchmark share -------------------------------

def test_decide_applies_the_bars_inclusively() -> None:
    spec = SEQ.model_copy(update={"alpha": 0.01, "min_requests": 1000})
    bar = math.log(100)
    log_fail = [bar, bar - 1e-9, bar - 1e-9, -5.0, bar - 1e-9, bar + 9]
    log_pass = [bar + 9, bar, bar - 1e-9, -INF, bar, bar + 9]
    seen = [0, 1000, 1000, 1000, 999, 5000]
    codes = sequential.decide(log_fail, log_pass, seen, spec)
    # e_fail >= 1/alpha fails whatever else; e_pass >= 1/alpha with min_requests is final
    assert codes.tolist() == [3, 2, 1, 1, 0, 3]
    assert sequential.decide(bar, bar, 1000, spec.model_copy(update={"alpha": 0.05})) == 3


def test_active_boundaries_are_those_with_1_to_99_percent_pooled_exceedance() -> None:
    # pooled (canary + baseline) share of requests slower than each boundary
    seen_c = [600, 3, 4, 300, 294, 295, 0]
    seen_b = [400, 6, 6, 690, 696, 696, 0]
    active = sequential.active_bounds(seen_c, seen_b)  # 0.9 %, 1 %, 99 %, 99 %, 99.1 %, 0
    assert active.tolist() == [False, True, True, True, False, False]
    none = sequential.active_bounds([[0, 0, 0]], [[0, 0, 0]])  # no requests: none active
    assert none.tolist() == [[False, False]]


def test_log_evalues_mix_boundaries_for_fail_and_take_the_weakest_for_pass() -> None:
    fail = np.log([[[1.0, 3.0], [2.0, 6.0]]])  # one canary, 2 boundaries, 2 alternatives
    ok = np.log([[[1.0, 5.0], [40.0, 60.0]]])
    lf, lp = sequential.log_evalues(fail, ok, np.array([[True, True]]))
    assert np.exp(lf).tolist() == pytest.approx([3.0])  # (1 + 3 + 2 + 6) / 4
    assert np.exp(lp).tolist() == pytest.approx([3.0])  # min((1 + 5) / 2, (40 + 60) / 2)
    _, lp = sequential.log_evalues(fail, ok, np.array([[False, True]]))
    assert np.exp(lp).tolist() == pytest.approx([50.0])
    _, lp = sequential.log_evalues(fail, ok, np.array([[False, False]]))
    assert lp.tolist() == [-INF]


def test_log_mean_exp_is_the_log_of_the_mean_even_for_zeros_and_huge_values() -> None:
    assert sequential.log_mean_exp(np.log([1.0, 3.0])) == pytest.approx(math.log(2.0))
    assert sequential.log_mean_exp(np.array([1000.0, 1000.0])) == pytest.approx(1000.0)
    with np.errstate(divide="ignore"):  # log 0
        assert sequential.log_mean_exp(np.array([-INF, -INF])) == -INF  # mean of zeros
    by_row = sequential.log_mean_exp(np.log([[1.0, 3.0], [4.0, 8.0]]), axis=0)
    assert np.exp(by_row).tolist() == pytest.approx([2.5, 5.5])


def test_split_llr_is_the_binomial_likelihood_ratio_and_zero_without_information() -> None:
    alt = np.array([0.5, 1.0])
    got = sequential.split_llr(alt, 0.2, [0.25, 0.0, 1.0, 0.25], [7, 0, 3, 0], [13, 4, 0, 0])
    for j, a in enumerate(alt):
        assert got[0, j] == pytest.approx(stats.binom.logpmf(7, 20, _q(0.25, a))
                                          - stats.binom.logpmf(7, 20, _q(0.25, 0.2)))
    # no canary requests, no baseline requests, no events: nothing learnt
    assert got[1:].tolist() == [[0.0, 0.0]] * 3


def test_errors_counted_without_requests_add_no_evidence() -> None:
    """Counters scraped a moment apart: errors may move while requests do not."""
    spec = SEQ.model_copy(update={"min_requests": 10**6})
    _, st = run(spec, [(1000, 12, 9000, 95)])
    r, st2 = sequential.evaluate(spec, counts(1000, 14, 9000, 95), st)  # canary errors only
    assert r.e_value == pytest.approx(e_fail([(1000, 12, 9000, 95)]), rel=1e-9)
    r, st3 = sequential.evaluate(spec, counts(2000, 14, 9000, 96), st2)  # baseline: 0 requests
    assert r.e_value == pytest.approx(e_fail([(1000, 12, 9000, 95)]), rel=1e-9)
    assert st3.seen_canary == (2000, 14) and st3.seen_baseline == (9000, 96)


def test_a_failure_at_exactly_the_bar_says_the_bar_was_reached() -> None:
    """The verdict is FAIL when e >= 1/alpha; the explanation must agree even when the
    evidence sits exactly at the bar (log e = log 20 for alpha = 0.05: exp rounds it to
    19.999999999999996, which must not print as "e=20 < 20" beside a failure)."""
    spec = SEQ.model_copy(update={"alpha": 0.05})
    at_bar = ((math.log(20),) * len(GRID),)
    state = SequentialState(test="counts", allowed_increase=0.1, checks=3,
                            last_canary=(3000, 40), last_baseline=(27000, 300),
                            seen_canary=(3000, 40), seen_baseline=(27000, 300),
                            fail_llr=at_bar, pass_llr=((0.0,) * len(GRID),),
                            decided=Verdict.FAIL)
    r, _ = sequential.evaluate(spec, None, state)
    assert r.verdict is Verdict.FAIL
    assert "; e=20 ≥ 20, anytime-valid at α=0.05)" in r.explanation
    # and the kernel agrees that this evidence is a failure
    assert sequential.decide(math.log(20), -INF, 3000, spec) == 3


def test_the_state_keeps_twenty_log_ratios_per_boundary() -> None:
    _, st = sequential.evaluate(SEQ, counts(1000, 12, 9000, 95))
    assert [len(row) for row in st.fail_llr] == [20] and [len(row) for row in st.pass_llr] == [20]
    canary = {0.1: 400, 0.2: 900, 0.4: 950, INF: 1000}
    _, st = sequential.evaluate(LAT, hist(canary, canary))
    assert [len(row) for row in st.fail_llr] == [20] * 3
    assert [len(row) for row in st.pass_llr] == [20] * 3


def test_a_baseline_without_traffic_yet_gives_no_evidence() -> None:
    r, st = sequential.evaluate(SEQ, counts(1000, 5, 0, 0))
    assert st.seen_canary == (1000, 5) and st.seen_baseline == (0, 0)
    assert r.e_value == 1 and r.verdict is Verdict.PASS and not r.final
    assert r.baseline_value is None
    assert r.explanation == (
        "error rate 0.5% vs n/a — passes: no regression detected so far (5 errors in 1,000 "
        "canary requests vs 0 in 0 baseline; e=1 < 100); promote when the analysis window ends")


def test_a_single_error_is_evidence() -> None:
    # one error, on the canary, which serves 10 % of the requests: the likelihood ratio of
    # a one-event split is q(θ) / 0.1
    r, _ = sequential.evaluate(SEQ, counts(100, 1, 900, 0))
    expected = float(np.mean([_q(0.1, g) / 0.1 for g in GRID]))
    assert r.e_value == pytest.approx(expected, rel=1e-9)
    assert r.e_value == pytest.approx(e_fail([(100, 1, 900, 0)]), rel=1e-9)
    assert r.e_value > 1.5


def test_latency_without_canary_traffic_has_no_canary_quantile() -> None:
    canary = {0.1: 0, 0.2: 0, INF: 0}
    baseline = {0.1: 500, 0.2: 900, INF: 1000}
    r, _ = sequential.evaluate(LAT, hist(canary, baseline))
    assert r.explanation == "latency: no canary traffic yet — inconclusive"
    assert r.canary_value is None
    assert r.baseline_value == pytest.approx(0.2)  # p99 in +Inf: reported as the last bound
    r, _ = sequential.evaluate(LAT, hist(baseline, canary))
    assert r.baseline_value is None and r.canary_value == pytest.approx(0.2)


def test_latency_slower_than_every_boundary_is_reported_at_the_last_one() -> None:
    canary = {0.1: 0, 0.2: 0, INF: 50}  # every canary request slower than 200 ms
    baseline = {0.1: 500, 0.2: 900, INF: 1000}
    log_fail, _, per_bound = lat_log_e(canary, baseline, 0.1, [True, True])
    assert max(per_bound) == per_bound[1]
    r, _ = sequential.evaluate(LAT, hist(canary, baseline))
    assert r.verdict is Verdict.FAIL
    assert r.explanation == (
        f"latency p50 200 ms vs 100 ms, p99 200 ms vs 200 ms — fails: canary latency is "
        f"stochastically larger (100% of canary requests slower than 200 ms vs 10% of "
        f"baseline; 10× baseline; e={math.exp(log_fail):.1e} ≥ 100, anytime-valid at α=0.01) "
        "— safe to roll back now")


def test_overwhelming_evidence_is_reported_at_the_cap_of_e_to_the_700() -> None:
    """e-values beyond e^700 (floats overflow past about e^709.8) are reported as e^700: a
    finite number, so the result still formats and serialises."""
    big_regression = [(100_000, 20_000, 100_000, 100)]
    assert log_mix([_llr(big_regression, 0.0, g) for g in GRID]) > 710
    r, _ = sequential.evaluate(SEQ, counts(*big_regression[0]))
    assert r.e_value == math.exp(700) and f"e={math.exp(700):.1e} ≥ 100" in r.explanation
    big_improvement = [(1_000_000, 1000, 1_000_000, 100_000)]
    m = math.log(1.5)
    assert log_mix([_llr(big_improvement, m, m - g) for g in GRID]) > 710
    spec = SEQ.model_copy(update={"allowed_increase": 0.5})
    r, _ = sequential.evaluate(spec, counts(*big_improvement[0]))
    assert r.final and r.e_value_pass == math.exp(700)
    assert f"e_pass={math.exp(700):.1e} ≥ 100" in r.explanation
    assert r.model_validate_json(r.model_dump_json()) == r


def test_the_kernels_judge_many_canaries_at_once_each_on_its_own() -> None:
    fail = np.log([[[1.0, 3.0], [2.0, 6.0]], [[8.0, 8.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]])
    ok = np.log([[[1.0, 5.0], [40.0, 60.0]], [[10.0, 30.0], [1.0, 1.0]],
                 [[500.0, 500.0], [500.0, 500.0]]])
    active = np.array([[True, True], [True, False], [False, False]])
    lf, lp = sequential.log_evalues(fail, ok, active)
    assert np.exp(lf).tolist() == pytest.approx([3.0, 4.5, 1.0])
    assert np.exp(lp).tolist() == pytest.approx([3.0, 20.0, 0.0])
    for i in range(3):  # the same as one at a time
        one_f, one_p = sequential.log_evalues(fail[i], ok[i], active[i])
        assert (float(one_f), float(one_p)) == (pytest.approx(lf[i]), pytest.approx(lp[i]))
    wide = sequential.log_mean_exp(np.log([[[1.0, 3.0]], [[4.0, 8.0]]]), axis=-1)
    assert wide.shape == (2, 1) and np.exp(wide[:, 0]).tolist() == pytest.approx([2.0, 6.0])
    apart = sequential.log_mean_exp(np.array([[0.0, 0.0], [1000.0, 1000.0]]), axis=-1)
    assert apart.tolist() == pytest.approx([0.0, 1000.0])  # no shared shift across rows
