"""The judge rules behind warm-up, pooled evidence, sparse traffic and shadow mode, one at
a time (the whole path is in tests/test_judges_engine.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bot.config_delivery import AnalysisConfig
from bot.engine import bake_rules
from bot.engine.analysis import (
    AnalysisState,
    MetricSeries,
    MetricSpec,
    SequentialState,
    ThresholdState,
    Verdict,
    carry_over,
    evidence,
    judge,
    sequential,
)
from bot.engine.analysis.evidence import detect_requests, rate_difference, wilson
from bot.engine.analysis.model import Judgement, MetricResult
from bot.engine.plan import Stage
from bot.engine.shadow_report import ShadowRow, format_report

ERR = MetricSpec(name="e", label="error rate", unit="ratio", judge="sequential")
LAT = MetricSpec(name="lat", unit="seconds", judge="threshold", max=0.5)


def counts(cr: int, ce: int, br: int, be: int) -> dict[str, MetricSeries | None]:
    return {"e": MetricSeries(name="e", canary_requests=cr, canary_errors=ce,
                              baseline_requests=br, baseline_errors=be)}


# 1.6 % vs 1 % errors over a 25/50/75 % rollout: no single step shows it
STEPS = [(2500, 40, 7500, 75), (5000, 80, 5000, 50), (7500, 120, 2500, 25)]


def test_a_small_shift_no_step_shows_alone_is_caught_by_the_evidence_pooled_over_steps() -> None:
    alone = [judge([ERR], counts(*s))[0].verdict for s in STEPS]
    assert alone == [Verdict.PASS] * 3
    state, verdicts = None, []
    for s in STEPS:
        j, state = judge([ERR], counts(*s), state)
        verdicts.append(j.verdict)
        state = carry_over(state)
    assert verdicts == [Verdict.PASS, Verdict.PASS, Verdict.FAIL]
    assert j.results[0].explanation.startswith(
        "error rate 1.6% vs 1% (+0.60 pp, 95% CI [+0.34, +0.86]) — fails")
    assert j.results[0].shift == pytest.approx(0.006)
    lo, hi = j.results[0].ci or (0, 0)
    assert (round(lo, 4), round(hi, 4)) == (0.0034, 0.0086)


def test_a_new_step_keeps_the_fail_evidence_and_restarts_anchors_and_the_early_pass() -> None:
    improved = counts(50_000, 100, 50_000, 500)  # an early final pass at step 1
    j, st = judge([ERR], improved)
    assert j.final and j.verdict is Verdict.PASS
    st = AnalysisState(metrics={**st.metrics, "lat": ThresholdState(failures=1)})
    carried = carry_over(st).metrics
    assert set(carried) == {"e"}  # threshold counts restart per step, as in Argo
    old, new = st.metrics["e"], carried["e"]
    assert isinstance(old, SequentialState) and isinstance(new, SequentialState)
    assert new.fail_llr == old.fail_llr and new.seen_canary == old.seen_canary
    assert new.decided is None and new.last_canary == new.last_baseline == ()
    assert all(x == 0.0 for row in new.pass_llr for x in row)
    # the new step's counters start from 0 again: an increase, not a counter reset
    j, after = judge([ERR], counts(100, 0, 100, 1), carry_over(st))
    assert isinstance(after.metrics["e"], SequentialState)
    assert after.metrics["e"].resets == 0
    assert after.metrics["e"].seen_canary == (50_100, 100)
    assert not j.final  # the early pass is earned again in each step


def test_a_failed_metric_stays_failed_in_the_next_step() -> None:
    _, st = judge([ERR], counts(1000, 90, 9000, 9))
    assert carry_over(st).metrics["e"].decided is Verdict.FAIL  # type: ignore[union-attr]


@pytest.mark.parametrize("spec", [ERR, LAT, MetricSpec(name="mw", judge="mann-whitney")])
def test_a_metric_warming_up_is_inconclusive_and_its_state_untouched(spec: MetricSpec) -> None:
    state = AnalysisState(metrics={"lat": ThresholdState(failures=1, measurements=3)})
    j, after = judge([spec], {spec.name: MetricSeries(name=spec.name, warming_up=True)}, state)
    assert j.verdict is Verdict.INCONCLUSIVE and after == state
    assert j.results[0].explanation == f"{spec.title}: warming up, not judged yet"


def test_latency_warms_up_by_default_error_rates_never() -> None:
    assert LAT.warms_up and not ERR.warms_up
    assert ERR.model_copy(update={"warmup": True}).warms_up
    assert not LAT.model_copy(update={"warmup": False}).warms_up


def test_a_failing_shadow_metric_is_reported_and_the_canary_passes() -> None:
    bad = counts(1000, 90, 9000, 9)
    shadow = ERR.model_copy(update={"mode": "shadow"})
    j, st = judge([shadow], bad)
    assert j.verdict is Verdict.PASS and not j.final and j.results == ()
    assert [(r.verdict, r.shadow) for r in j.shadow] == [(Verdict.FAIL, True)]
    assert st.metrics["e"].decided is Verdict.FAIL  # type: ignore[union-attr]
    j, _ = judge([ERR], bad, mode="shadow")  # the whole analysis in shadow mode
    assert j.verdict is Verdict.PASS and j.shadow[0].verdict is Verdict.FAIL
    enforced = ERR.model_copy(update={"mode": "enforce"})
    j, _ = judge([enforced], bad, mode="shadow")  # the metric's own mode wins
    assert j.verdict is Verdict.FAIL and j.shadow == ()
    lat = MetricSeries(name="lat", canary=(0.1,), baseline=(0.1,))
    j, _ = judge([shadow, LAT], {**bad, "lat": lat})
    assert j.verdict is Verdict.PASS and [r.name for r in j.results] == ["lat"]


def test_newcombe_interval_matches_the_published_example() -> None:
    # Newcombe (1998), method 10: 56/70 vs 48/80 -> 0.2000 [0.0524, 0.3339]
    d, lo, hi = rate_difference((56, 70), (48, 80)) or (0, 0, 0)
    assert (round(d, 4), round(lo, 4), round(hi, 4)) == (0.2, 0.0524, 0.3339)
    assert wilson(0, 10) == (0.0, pytest.approx(0.2775, abs=1e-4))
    assert wilson(3, 0) == (0.0, 1.0) and rate_difference((0, 0), (1, 10)) is None
    z2 = 1.959964 ** 2
    assert wilson(1, 1) == (pytest.approx(1 / (1 + z2)), pytest.approx(1.0))


def expected_log_e(n: int, rate: float, share: float) -> float:
    canary = n * 5 * rate
    baseline = n * (1 - share) / share * rate
    effects = np.asarray(sequential.EFFECTS, dtype=np.float64)
    llr = sequential.split_llr(effects, 0.0, share, canary, baseline)
    return float(sequential.log_mean_exp(np.asarray(llr)))


@pytest.mark.parametrize(("rate", "share"), [(0.001, 0.05), (0.01, 0.5), (0.02, 0.25)])
def test_the_traffic_a_5x_rise_needs_is_what_the_judge_needs(rate: float, share: float) -> None:
    n = detect_requests(rate, share, 0.01)
    assert n is not None
    assert expected_log_e(round(1.2 * n), rate, share) >= math.log(100)
    assert expected_log_e(n // 2, rate, share) < math.log(100)
    assert detect_requests(0.0, share, 0.01) is None
    assert detect_requests(rate, 1.0, 0.01) is None


T0 = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
PLAN = [Stage("weight", 5), Stage("bake", 5, timedelta(minutes=2)), Stage("weight", 25),
        Stage("bake", 25, timedelta(minutes=2)), Stage("weight", 100), Stage("promote", 100)]


def analysis(**settings: object) -> AnalysisConfig:
    return AnalysisConfig.model_validate({"metrics": [{
        "name": "e", "label": "error rate", "judge": "sequential", "requests_query": "r",
        "errors_query": "e", "min_requests": 3000}], **settings})


def test_the_warm_up_runs_from_the_canarys_start_quiet_for_its_first_third() -> None:
    w = bake_rules.warmup(analysis(), T0)
    assert w is not None
    assert (w.since, w.quiet_until, w.until) == (T0, T0 + timedelta(minutes=1),
                                                 T0 + timedelta(minutes=3))
    assert bake_rules.warmup(analysis(warmup="0s"), T0) is None
    short = bake_rules.warmup(analysis(), T0, PLAN)  # two 2-minute steps: at most half
    assert short is not None and short.until == T0 + timedelta(minutes=2)
    assert short.quiet_until == T0 + timedelta(seconds=40)
    assert analysis().max_extension == timedelta(minutes=30)


BOUNDS = (0.05, 0.1, 0.2, math.inf)


def hist(*per_bucket: int) -> dict[float, int]:
    return dict(zip(BOUNDS, np.cumsum(per_bucket).tolist(), strict=True))


def test_a_canary_getting_faster_is_improving_a_steady_one_is_not() -> None:
    early = hist(100, 200, 150, 50)  # the first half: slow
    assert evidence.improving(early, hist(400, 350, 200, 50))  # second half 300/150/50/0
    assert not evidence.improving(early, hist(200, 400, 300, 100))  # the same again
    assert not evidence.improving(hist(300, 150, 50, 0), hist(400, 350, 200, 50))  # slower
    assert not evidence.improving(early, early)  # nothing in the second half
    assert not evidence.improving({0.1: 3, math.inf: 5}, hist(1, 1, 1, 1))


def warming(early: tuple[int, ...], total: tuple[int, ...]) -> MetricSeries:
    return MetricSeries(name="lat", warming_up=True, early_canary_histogram=hist(*early),
                        canary_histogram=hist(*total), baseline_histogram=hist(900, 80, 15, 5))


SEQ_LAT = MetricSpec(name="lat", label="latency", unit="seconds", judge="sequential")


def test_in_the_warm_up_a_slow_canary_fails_only_if_it_is_not_getting_faster() -> None:
    state = AnalysisState()
    j, after = judge([SEQ_LAT], {"lat": warming((10, 40, 40, 10), (20, 80, 80, 20))}, state)
    assert j.verdict is Verdict.FAIL and after == state  # the evidence is not kept
    assert "ms — fails (warming up, and not getting faster): canary latency is" in \
        j.results[0].explanation
    j, _ = judge([SEQ_LAT], {"lat": warming((10, 40, 40, 10), (100, 110, 60, 10))}, state)
    assert j.verdict is Verdict.INCONCLUSIVE and j.results[0].warming_up
    assert j.results[0].explanation == ("latency: warming up — slower than the baseline but "
                                        "getting faster, not judged yet")
    assert j.results[0].critical
    j, _ = judge([SEQ_LAT], {"lat": warming((45, 4, 1, 0), (90, 8, 2, 0))}, state)
    assert j.verdict is Verdict.INCONCLUSIVE  # as fast as the baseline: nothing to hold
    assert j.results[0].explanation == "latency: warming up, not judged yet"


@pytest.mark.parametrize("missing", ["early_canary_histogram", "canary_histogram",
                                     "baseline_histogram", "judge"])
def test_without_both_halves_and_a_baseline_the_warm_up_only_holds(missing: str) -> None:
    series = warming((10, 40, 40, 10), (20, 80, 80, 20))
    spec = SEQ_LAT
    if missing == "judge":
        spec = MetricSpec(name="lat", unit="seconds", judge="mann-whitney")
    else:
        series = series.model_copy(update={missing: None})
    j, _ = judge([spec], {"lat": series})
    assert j.verdict is Verdict.INCONCLUSIVE and j.results[0].warming_up
    assert j.results[0].critical is (missing != "judge")
    heavy = spec.model_copy(update={"weight": 3.0})
    assert judge([heavy], {"lat": series})[0].results[0].weight == 3.0


def test_the_canarys_start_is_kept_by_every_check_and_every_step() -> None:
    state = AnalysisState(canary_since=T0)
    _, after = judge([ERR], counts(10, 0, 10, 0), state)
    assert after.canary_since == T0 and carry_over(after).canary_since == T0
    j, _ = judge([ERR.model_copy(update={"mode": "shadow"})], counts(10, 0, 10, 0))
    assert j.summary == "PASS: every metric is in shadow mode."


def undecided(needed: int | None, detect: int | None = 4000) -> Judgement:
    r = MetricResult(name="e", judge="sequential", verdict=Verdict.INCONCLUSIVE,
                     explanation="x", requests_needed=needed, detect_requests=detect)
    return Judgement(verdict=Verdict.INCONCLUSIVE, score=0, results=(r,), summary="x")


def series(requests: int) -> dict[str, MetricSeries | None]:
    return {"e": MetricSeries(name="e", canary_requests=requests, canary_errors=0,
                              baseline_requests=10 * requests, baseline_errors=0)}


@pytest.mark.parametrize(("index", "needed", "action"), [
    (1, 600, "extend"),  # 1 req/s: 10 min, within the 30-minute extension
    (1, 1920, "advance"),  # 32 min: the next step brings more traffic, evidence carries
    (3, 1920, "pause"),  # and after the last analysed step a human decides
])
def test_a_step_lacking_only_traffic_is_extended_carried_or_paused(
        index: int, needed: int, action: str) -> None:
    ends = T0 + timedelta(minutes=2)
    got = bake_rules.sparse(analysis(), undecided(needed), series(120), PLAN, index,
                            now=ends, since=T0, ends=ends)
    assert got is not None and got.action == action
    assert got.fact.per_second == pytest.approx(1.0) and got.fact.needed == needed
    assert got.fact.seen == 3000 - needed
    assert got.fact.wait_seconds == pytest.approx(needed)
    assert got.fact.detect_seconds == pytest.approx(4000 - (3000 - needed))


def test_other_undecided_steps_follow_the_usual_rules() -> None:
    ends = T0 + timedelta(minutes=2)

    def decide(j: Judgement, requests: int = 120) -> object:
            return bake_rules.sparse(analysis(), j, series(requests), PLAN, 1, now=ends,
                                 since=T0, ends=ends)

    assert decide(undecided(None)) is None  # not for lack of traffic
    assert decide(undecided(600), requests=0) is None  # no canary traffic at all
    assert decide(undecided(600).model_copy(update={"marginal": True})) is None
    assert decide(undecided(600).model_copy(update={"verdict": Verdict.PASS})) is None


@pytest.mark.parametrize(("index", "warm_minutes", "action"), [
    (1, 5, "advance"),  # the next step judges it
    (3, 5, "extend"),  # the last step waits for it, within max_extension
    (3, 40, "pause"),
])
def test_a_step_whose_latency_still_warms_up_moves_on_or_waits(
        index: int, warm_minutes: int, action: str) -> None:
    ends = T0 + timedelta(minutes=2)
    lat = MetricResult(name="e", judge="sequential", verdict=Verdict.INCONCLUSIVE,
                       explanation="x", warming_up=True)
    j = Judgement(verdict=Verdict.INCONCLUSIVE, score=0, results=(lat,), summary="x")
    warm = bake_rules.warmup(analysis(warmup=f"{warm_minutes}m"), T0)
    got = bake_rules.sparse(analysis(), j, {}, PLAN, index, now=ends, since=T0, ends=ends,
                            warm=warm)
    assert got is not None and got.action == action
    assert got.fact.warming == ("error rate",) and got.fact.metrics == ()
    assert got.fact.warm_until == T0 + timedelta(minutes=warm_minutes)


def test_the_report_explains_how_to_start_when_nothing_is_in_shadow_mode() -> None:
    assert "Set `mode: shadow`" in format_report([], 30)
    text = format_report([ShadowRow("p99", rollouts=4, would_roll_back=1, rolled_back=1)], 7)
    assert "last 7 days" in text and "1 (25%)" in text


def expand(per_bucket: list[int]) -> list[int]:
    return [i for i, n in enumerate(per_bucket) for _ in range(n)]


@pytest.mark.parametrize(("early", "second"), [
    ((100, 200, 150, 50), (300, 150, 50, 0)),
    ((30, 5, 0, 1), (10, 20, 7, 3)),  # faster first: negative
    ((0, 7, 0, 2), (4, 0, 3, 0)),
])
def test_the_slowdown_z_is_mann_whitney_on_the_binned_halves(
        early: tuple[int, ...], second: tuple[int, ...]) -> None:
    from scipy import stats
    total = tuple(a + b for a, b in zip(early, second, strict=True))
    got = evidence.slowdown_z(hist(*early), hist(*total))
    assert got is not None
    res = stats.mannwhitneyu(expand(list(early)), expand(list(second)), alternative="greater",
                             use_continuity=False, method="asymptotic")
    assert got == pytest.approx(float(stats.norm.isf(res.pvalue)), rel=1e-9)
    assert evidence.improving(hist(*early), hist(*total)) is (got >= 1.0)
    assert evidence.improving(hist(*early), hist(*total), z=-10.0)
    assert evidence.improving(hist(*early), hist(*total), z=got)  # at the bar: improving


def test_the_slowdown_z_needs_both_halves_and_the_same_buckets() -> None:
    assert evidence.slowdown_z(hist(1, 1, 1, 1), hist(1, 1, 1, 1)) is None
    assert evidence.slowdown_z(hist(0, 0, 0, 0), hist(1, 1, 1, 1)) is None
    assert evidence.slowdown_z({0.1: 1, math.inf: 2}, hist(1, 1, 1, 1)) is None
    assert evidence.slowdown_z(hist(2, 0, 0, 0), hist(3, 0, 0, 0)) is None  # all tied
    assert evidence.slowdown_z(hist(1, 0, 0, 0), hist(1, 0, 0, 0)) is None  # one request
    assert evidence.slowdown_z(hist(0, 0, 0, 0), hist(1, 0, 0, 0)) is None  # only the second
    assert evidence.slowdown_z(hist(0, 1, 0, 0), hist(1, 1, 0, 0)) == 1.0  # var 1/4
    assert evidence.slowdown_z(hist(0, 1, 0, 0), hist(2, 1, 0, 0)) == pytest.approx(
        1.0 / math.sqrt(2 / 12 * (4 - 6 / 6)))
    assert evidence.slowdown_z(hist(0, 2, 0, 0), hist(1, 2, 0, 0)) == pytest.approx(
        1.0 / math.sqrt(2 / 12 * (4 - 6 / 6)))
    # five requests in the 3rd bucket, then five in the 1st: U = 25, var = 25/12 (11 - 240/90)
    early, total = hist(0, 0, 5, 0), hist(5, 0, 5, 0)
    assert evidence.slowdown_z(early, total) == pytest.approx(
        12.5 / math.sqrt(25 / 12 * (11 - 240 / 90)))


def test_a_difference_of_rates_is_signed_even_at_zero() -> None:
    assert evidence.pp(0.0) == "+0.00" and evidence.pp(-0.0024) == "−0.24"
    d, lo, hi = rate_difference((1, 1), (0, 4)) or (0, 0, 0)
    assert d == 1.0 and lo > 0 and hi == 1.0
    assert rate_difference((1, 2), (0, 0)) is None
    assert rate_difference((1, 2), (0, 1)) == (0.5, pytest.approx(0.5 - math.hypot(
        0.5 - wilson(1, 2)[0], wilson(0, 1)[1])), pytest.approx(0.5 + math.hypot(
            wilson(1, 2)[1] - 0.5, 0.0)))


def test_the_traffic_for_a_5x_rise_caps_the_canary_rate_at_every_request() -> None:
    q1 = 0.5 * 5 / (0.5 * 5 + 0.5)
    kl = q1 * math.log(q1 / 0.5) + (1 - q1) * math.log((1 - q1) / 0.5)
    assert detect_requests(0.5, 0.5, 0.01) == math.ceil(
        (math.log(100) + math.log(20)) / (kl * (1.0 + 0.5)))


def seq_state(test: str, seen_canary: tuple[int, ...], seen_baseline: tuple[int, ...]
              ) -> SequentialState:
    return SequentialState.model_validate({"test": test, "seen_canary": seen_canary,
                                           "seen_baseline": seen_baseline})


def test_size_and_pace_read_the_pooled_counts() -> None:
    size, needed, detect = evidence.size_and_pace(seq_state("counts", (100, 3), (10, 1)),
                                                  0.01, 1000)
    assert size == rate_difference((3, 100), (1, 10)) and needed == 900
    assert detect == detect_requests(1.5 / 11, 100 / 110, 0.01)
    _, needed, _ = evidence.size_and_pace(seq_state("counts", (1000, 3), (10, 1)), 0.01, 1000)
    assert needed is None
    assert evidence.size_and_pace(seq_state("counts", (), ()), 0.01, 1000) == (None, None, None)
    assert evidence.size_and_pace(seq_state("counts", (5, 0), (0, 0)), 0.01, 10)[2] is None
    assert evidence.size_and_pace(seq_state("counts", (5, 0), (1, 0)), 0.01, 10)[2] == \
        detect_requests(0.25, 5 / 6, 0.01)
    # latency: the rise is of the share slower than the boundary nearest 1 % of the baseline
    lat = seq_state("latency", (500, 250, 50, 6, 1), (1000, 500, 100, 12, 1))
    size, needed, detect = evidence.size_and_pace(lat, 0.01, 1000)
    assert size is None and needed == 500
    assert detect == detect_requests(12.5 / 1001, 500 / 1500, 0.01)


def test_the_pace_is_only_told_when_known_and_only_for_a_missing_pass() -> None:
    no_baseline = counts(500, 1, 0, 0)
    r, _ = sequential.evaluate(ERR, no_baseline["e"])
    assert r.verdict is Verdict.INCONCLUSIVE and r.detect_requests is None
    assert r.requests_needed == 500 and r.explanation.endswith("e=1 < 100)")
    r, _ = sequential.evaluate(ERR, counts(100, 30, 9000, 9)["e"])
    assert r.verdict is Verdict.FAIL and r.requests_needed is None
