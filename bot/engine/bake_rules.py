"""What a canary step does besides the verdict: the warm-up, the metrics in shadow mode,
and steps whose sequential metrics only lack traffic.

Why here: ``progressive._bake`` drives the check; these rules read the judgement and the
plan and return facts or a decision, so the step logic stays short and each rule is
testable on its own.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from bot.config_delivery import AnalysisConfig
from bot.engine import facts
from bot.engine.analysis import MetricSeries, Verdict
from bot.engine.analysis.model import Judgement, MetricResult
from bot.engine.plan import Stage
from bot.store.models import Deployment


def warm_until(analysis: AnalysisConfig, stages: Sequence[Stage], index: int,
               started: datetime) -> datetime | None:
    """The end of the canary's warm-up: in the first analysed step only, at most half of
    it, so that step always judges its second half."""
    first = next((i for i, s in enumerate(stages) if s.kind == "bake"), None)
    if first != index or not analysis.warmup:
        return None
    return started + min(analysis.warmup, (stages[index].duration or timedelta()) / 2)


def shadow_fails(dep: Deployment, verdict: Judgement, weight: int) -> list[facts.ShadowVerdict]:
    """A fact for each shadow metric that would roll back now and had not before in this
    rollout (the analysis log keeps what each shadow metric said at each check)."""
    before = {name for h in json.loads(dep.analysis_log or "[]")
              for name, said in h.get("shadow", {}).items() if said == "fail"}
    return [facts.ShadowVerdict(weight=weight, metric=r.name, text=r.explanation)
            for r in verdict.shadow if r.verdict is Verdict.FAIL and r.name not in before]


@dataclass(frozen=True)
class Sparse:
    action: Literal["extend", "advance", "pause"]
    fact: facts.SparseTraffic


def _canary_requests(series: MetricSeries | None) -> int:
    if series is None:
        return 0
    if series.canary_histogram:
        return int(series.canary_histogram.get(math.inf, max(series.canary_histogram.values())))
    return series.canary_requests or 0


def sparse(analysis: AnalysisConfig, verdict: Judgement,
           series: Mapping[str, MetricSeries | None], stages: Sequence[Stage], index: int,
           *, now: datetime, since: datetime, ends: datetime) -> Sparse | None:
    """At a step's end: when every undecided metric is a sequential one that only lacks
    traffic (no regression shown, canary traffic flowing), extend the step if the traffic
    seen reaches the bar within ``max_extension``, else move on to the next analysed step
    carrying the evidence, else (the last one) pause. None: the usual rules apply."""
    undecided = [r for r in verdict.results if r.verdict is Verdict.INCONCLUSIVE]
    if verdict.verdict is not Verdict.INCONCLUSIVE or verdict.marginal or not undecided \
            or any(r.requests_needed is None for r in undecided):
        return None
    elapsed = max((now - since).total_seconds(), 1.0)
    per_second = min(_canary_requests(series.get(r.name)) for r in undecided) / elapsed
    if per_second <= 0:
        return None
    needed = max(r.requests_needed or 0 for r in undecided)
    wait = needed / per_second
    allowed = analysis.max_extension.total_seconds()
    if now.timestamp() + wait <= ends.timestamp() + allowed:
        action: Literal["extend", "advance", "pause"] = "extend"
    elif any(s.kind == "bake" for s in stages[index + 1:]):
        action = "advance"
    else:
        action = "pause"
    specs = {m.name: m for m in analysis.metrics}
    seen = min(specs[r.name].min_requests - (r.requests_needed or 0) for r in undecided)
    detect = _detect_seconds(undecided, seen, per_second)
    return Sparse(action, facts.SparseTraffic(
        action=action, weight=stages[index].weight or 0,
        metrics=tuple(specs[r.name].title for r in undecided), seen=max(seen, 0),
        needed=needed, per_second=per_second, wait_seconds=wait, detect_seconds=detect,
        extension_seconds=allowed))


def _detect_seconds(undecided: Sequence[MetricResult], seen: int,
                    per_second: float) -> float | None:
    counts = [r.detect_requests for r in undecided if r.detect_requests is not None]
    if not counts:
        return None
    return max(max(counts) - seen, 0) / per_second
