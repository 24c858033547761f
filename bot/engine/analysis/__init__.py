"""Canary analysis judges: pure, I/O-free verdicts on canary-vs-baseline metrics.

``judge(specs, series_by_metric, states)`` is the engine's entry point; it dispatches each
metric to the threshold (Argo Rollouts / Flagger), Mann-Whitney (Kayenta) or sequential
(anytime-valid, Netflix) judge and aggregates Kayenta-style. State between checks is an
``AnalysisState`` the engine persists as JSON and hands back on the next check.
"""

from bot.engine.analysis.judge import aggregate, carry_over, judge, judge_metric
from bot.engine.analysis.model import (
    AnalysisState,
    Direction,
    JudgeKind,
    Judgement,
    MetricResult,
    MetricSeries,
    MetricSpec,
    SequentialState,
    ThresholdState,
    Unit,
    Verdict,
)

__all__ = [
    "AnalysisState",
    "Direction",
    "JudgeKind",
    "Judgement",
    "MetricResult",
    "MetricSeries",
    "MetricSpec",
    "SequentialState",
    "ThresholdState",
    "Unit",
    "Verdict",
    "aggregate",
    "carry_over",
    "judge",
    "judge_metric",
]
