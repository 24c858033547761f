"""One entry point for the engine: judge every metric, then the canary as a whole.

Aggregation follows Kayenta: score = 100 * weight of passing metrics / total weight;
>= ``pass_score`` passes, >= ``marginal_score`` is marginal (inconclusive: pause for a
human), below fails. A failing critical metric fails the canary whatever the score;
threshold and sequential metrics are critical unless the spec says otherwise, because their
verdicts are decisions already (failure limits, anytime-valid error control).

Missing data never passes: a metric without data (``series is None``, provider errors, no
traffic) is inconclusive and counts as not passing in the score. The canary still fails if
even a pass of every undecided metric could not lift the score to the marginal band, and is
otherwise inconclusive while anything is undecided.

``final`` tells the engine it may act now: every FAIL is final; a PASS is final only when
every metric's pass is (sequential early pass). A non-final PASS means "so far so good":
promote when the analysis window ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import bot.engine.analysis.evidence as evidence
import bot.engine.analysis.mann_whitney as mann_whitney
import bot.engine.analysis.sequential as sequential
import bot.engine.analysis.threshold as threshold
from bot.engine.analysis.model import (
    AnalysisState,
    JudgeKind,
    Judgement,
    MetricResult,
    MetricSeries,
    MetricSpec,
    MetricState,
    SequentialState,
    ThresholdState,
    Verdict,
)
from bot.mrkdwn import count

PASS_SCORE = 95.0
MARGINAL_SCORE = 75.0


def judge_metric(spec: MetricSpec, series: MetricSeries | None,
                 state: MetricState | None) -> tuple[MetricResult, MetricState | None]:
    """Dispatch one metric to its judge; returns the result and the state to persist."""
    if series is not None and series.warming_up:  # cold caches are not held against it
        return _warming(spec, series), state
    if spec.judge is JudgeKind.THRESHOLD:
        ts = state if isinstance(state, ThresholdState) else None
        return threshold.evaluate(spec, series, ts)
    if spec.judge is JudgeKind.SEQUENTIAL:
        ss = state if isinstance(state, SequentialState) else None
        return sequential.evaluate(spec, series, ss)
    return mann_whitney.evaluate(spec, series), None


def _warming(spec: MetricSpec, series: MetricSeries) -> MetricResult:
    """During the warm-up a latency regression fails only when the canary is not getting
    faster (a persistent shift, not a cold start); the evidence is not kept: the test
    after the warm-up starts afresh."""
    held = MetricResult(name=spec.name, judge=spec.judge, verdict=Verdict.INCONCLUSIVE,
                        explanation=f"{spec.title}: warming up, not judged yet",
                        critical=spec.is_critical, weight=spec.weight, warming_up=True)
    early_c = series.early_canary_histogram
    if spec.judge is not JudgeKind.SEQUENTIAL or not early_c:
        return held
    result, _ = sequential.evaluate(spec, series)  # a fail implies both histograms
    if result.verdict is not Verdict.FAIL:
        return held
    if evidence.improving(early_c, series.canary_histogram or {}):
        return held.model_copy(update={"explanation": (
            f"{spec.title}: warming up — slower than the baseline but getting faster, "
            "not judged yet")})
    return result.model_copy(update={"explanation": result.explanation.replace(
        " — fails: ", " — fails (warming up, and not getting faster): ")})


def aggregate(results: Sequence[MetricResult], *, pass_score: float = PASS_SCORE,
              marginal_score: float = MARGINAL_SCORE) -> Judgement:
    """Kayenta-style weighted score plus critical metrics and the never-pass-on-no-data rule."""
    if not results:
        return Judgement(verdict=Verdict.INCONCLUSIVE, score=0.0,
                         summary="INCONCLUSIVE: no metrics configured for the canary")
    total = sum(r.weight for r in results)
    passed = sum(r.weight for r in results if r.verdict is Verdict.PASS)
    unknown = sum(r.weight for r in results if r.verdict is Verdict.INCONCLUSIVE)
    score = round(100 * passed / total, 1)
    best_case = 100 * (passed + unknown) / total
    failed = [r for r in results if r.verdict is Verdict.FAIL]
    critical = [r for r in failed if r.critical]
    undecided = [r for r in results if r.verdict is Verdict.INCONCLUSIVE]
    marginal = False
    if critical:
        verdict = Verdict.FAIL
        head = f"FAIL: critical metric {', '.join(r.name for r in critical)} failed"
    elif best_case < marginal_score:
        verdict = Verdict.FAIL
        head = f"FAIL: score {score:g}/100 is below {marginal_score:g}"
    elif score >= pass_score and not undecided:
        verdict = Verdict.PASS
        head = f"PASS: score {score:g}/100"
    elif undecided:
        verdict = Verdict.INCONCLUSIVE
        head = (f"INCONCLUSIVE: {len(undecided)} of {count(len(results), 'metric')} undecided "
                f"({', '.join(r.name for r in undecided)}); score so far {score:g}/100")
    else:
        verdict, marginal = Verdict.INCONCLUSIVE, True
        head = (f"INCONCLUSIVE: marginal score {score:g}/100 (pass needs {pass_score:g}) "
                "— pausing for a human")
    final = verdict is Verdict.FAIL or (
        verdict is Verdict.PASS and all(r.final for r in results))
    if verdict is Verdict.PASS:
        head += " — safe to promote now" if final else " — promote when the window ends"
    elif verdict is Verdict.FAIL:
        head += " — roll back"
    shown = failed or undecided if verdict is not Verdict.PASS else []
    reasons = "; ".join(r.explanation for r in shown[:3])
    summary = f"{head}. {reasons}" if reasons else f"{head}."
    return Judgement(verdict=verdict, score=score, marginal=marginal, final=final,
                     results=tuple(results), summary=summary)


def judge(specs: Sequence[MetricSpec], series_by_metric: Mapping[str, MetricSeries | None],
          states: AnalysisState | None = None, *, pass_score: float = PASS_SCORE,
          marginal_score: float = MARGINAL_SCORE,
          mode: Literal["enforce", "shadow"] = "enforce") -> tuple[Judgement, AnalysisState]:
    """Judge one check of a canary; pure: returns the new state instead of storing it.

    Metrics in shadow mode (their own ``mode``, else ``mode``) are judged and returned in
    ``Judgement.shadow`` but never enter the verdict: with only shadow metrics the canary
    passes, as it would with no analysis."""
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate metric names in {names}")
    old = states.metrics if states is not None else {}
    new: dict[str, MetricState] = dict(old)  # metrics not judged this time keep their state
    results, shadow = [], []
    for spec in specs:
        result, st = judge_metric(spec, series_by_metric.get(spec.name), old.get(spec.name))
        if (spec.mode or mode) == "shadow":
            shadow.append(result.model_copy(update={"shadow": True}))
        else:
            results.append(result)
        if st is not None:
            new[spec.name] = st
    if results:
        judgement = aggregate(results, pass_score=pass_score, marginal_score=marginal_score)
    else:
        judgement = Judgement(verdict=Verdict.PASS, score=100.0,
                              summary="PASS: every metric is in shadow mode.")
    since = states.canary_since if states is not None else None
    return judgement.model_copy(update={"shadow": tuple(shadow)}), AnalysisState(
        metrics=new, canary_since=since)


def carry_over(state: AnalysisState) -> AnalysisState:
    """The state a new step starts from. Sequential evidence against "not worse" pools
    across steps (its e-process stays valid when the canary's share changes), so small
    shifts add up over the rollout; each step earns its own early pass, and its counters
    are read from the step's start. Threshold counts restart per step, as in Argo."""
    kept: dict[str, MetricState] = {}
    for name, st in state.metrics.items():
        if isinstance(st, SequentialState):
            kept[name] = evidence.carried(st)
    return AnalysisState(metrics=kept, canary_since=state.canary_since)
