"""The canary's verdict as the thread shows it: the exact summary sentence, the score, and
whether the engine may act now, for each Kayenta band."""

from __future__ import annotations

from bot.engine.analysis import MetricResult, MetricSeries, Verdict, judge
from bot.engine.analysis.judge import aggregate
from bot.engine.analysis.model import JudgeKind
from tests.test_judges import P99, SEQ
from tests.test_rules import plain, same, worse

PASS, FAIL, UNSURE = Verdict.PASS, Verdict.FAIL, Verdict.INCONCLUSIVE


def result(name: str, verdict: Verdict, *, final: bool = False, critical: bool = False,
           weight: float = 1.0) -> MetricResult:
    return MetricResult(name=name, judge=JudgeKind.MANN_WHITNEY, verdict=verdict,
                        explanation=f"{name} is {verdict.value}", final=final,
                        critical=critical, weight=weight)


def test_no_metrics_is_inconclusive() -> None:
    j = aggregate([])
    assert (j.verdict, j.score, j.marginal, j.final, j.results) == (UNSURE, 0.0, False, False, ())
    assert j.summary == "INCONCLUSIVE: no metrics configured for the canary"


def test_a_pass_says_whether_to_promote_now_and_lists_no_reasons() -> None:
    results = [result(f"m{i}", PASS) for i in range(19)] + [result("slow", FAIL)]
    j = aggregate(results)
    assert (j.verdict, j.score, j.marginal, j.final) == (PASS, 95.0, False, False)
    assert j.summary == "PASS: score 95/100 — promote when the window ends."
    assert [r.name for r in j.results] == [r.name for r in results]
    j = aggregate([result("a", PASS, final=True), result("b", PASS, final=True)])
    assert (j.verdict, j.final, j.marginal) == (PASS, True, False)
    assert j.summary == "PASS: score 100/100 — safe to promote now."
    j = aggregate([result("a", PASS, final=True), result("b", PASS)])
    assert not j.final and j.summary.endswith("— promote when the window ends.")


def test_a_failure_names_the_critical_metrics_and_at_most_three_reasons() -> None:
    j = aggregate([result("errors", FAIL, critical=True), result("p99", FAIL, critical=True),
                   result("ok", PASS)])
    assert (j.verdict, j.final, j.marginal) == (FAIL, True, False)
    assert j.summary == ("FAIL: critical metric errors, p99 failed — roll back. "
                         "errors is fail; p99 is fail")
    j = aggregate([result(f"m{i}", FAIL) for i in range(4)])
    assert j.summary == ("FAIL: score 0/100 is below 75 — roll back. "
                         "m0 is fail; m1 is fail; m2 is fail")


def test_inconclusive_is_never_final_even_when_every_metric_is() -> None:
    j = aggregate([result("a", PASS, final=True), result("b", UNSURE, final=True)])
    assert (j.verdict, j.final) == (UNSURE, False)
    assert j.summary == ("INCONCLUSIVE: 1 of 2 metrics undecided (b); score so far "
                         "50/100. b is inconclusive")


def test_the_marginal_band_pauses_for_a_human() -> None:
    j = aggregate([result("a", PASS, final=True)] * 4 + [result("b", FAIL)])
    assert (j.verdict, j.marginal, j.final, j.score) == (UNSURE, True, False, 80.0)
    assert j.summary == ("INCONCLUSIVE: marginal score 80/100 (pass needs 95) — pausing for a "
                         "human. b is fail")


def test_the_score_has_one_decimal() -> None:
    j = aggregate([result("a", PASS), result("b", PASS), result("c", FAIL)])
    assert j.score == 66.7 and "score 66.7/100" in j.summary


def test_a_canary_may_set_its_own_pass_score() -> None:
    specs = [plain(f"m{i}") for i in range(10)] + [plain("bad")]
    data = {s.name: same(s.name, i) for i, s in enumerate(specs)}
    data["bad"] = worse("bad", 99)
    j, _ = judge(specs, data)
    assert j.verdict is UNSURE and j.marginal
    j, _ = judge(specs, data, pass_score=90)
    assert j.verdict is PASS and j.summary.startswith("PASS: score 90.9/100")
    j, _ = judge(specs[:2] + specs[-1:], data)
    assert j.verdict is FAIL and j.summary.startswith("FAIL: score 66.7/100 is below 75")
    j, _ = judge(specs[:2] + specs[-1:], data, marginal_score=60)
    assert j.verdict is UNSURE and j.marginal


def errors(canary: int, canary_errors: int) -> MetricSeries:
    return MetricSeries(name="errors", canary_requests=canary, canary_errors=canary_errors,
                        baseline_requests=9 * canary, baseline_errors=canary // 1000)


def test_a_sequential_failure_carries_over_to_the_next_checks() -> None:
    """Once the evidence says "roll back", a later check without data does not undo it."""
    j, state = judge([SEQ], {"errors": errors(200, 10)})
    assert j.verdict is FAIL and j.final
    j, state = judge([SEQ], {"errors": None}, state)
    assert j.verdict is FAIL and j.final
    j, _ = judge([SEQ], {"errors": None})  # without the saved evidence: no data, no verdict
    assert j.verdict is UNSURE


def test_a_metric_whose_judge_changed_starts_afresh() -> None:
    """A config change between checks: the old judge's state is not fed to the new one."""
    threshold = P99.model_copy(update={"name": "errors", "failure_limit": 5})
    _, from_threshold = judge([threshold], {"errors": MetricSeries(
        name="errors", canary=(0.3,), baseline=(0.3,))})
    j, _ = judge([SEQ], {"errors": errors(200, 0)}, from_threshold)
    assert j.verdict is UNSURE and "1,000 canary requests" in j.summary
    _, from_sequential = judge([SEQ], {"errors": errors(200, 10)})
    j, _ = judge([threshold], {"errors": MetricSeries(name="errors", canary=(0.3,),
                                                     baseline=(0.3,))}, from_sequential)
    assert j.verdict is PASS
