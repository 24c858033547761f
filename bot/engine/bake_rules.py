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
from bot.engine.measure import Warmup
from bot.engine.plan import Stage
from bot.store.models import Deployment


def warmup(analysis: AnalysisConfig, canary_since: datetime,
           stages: Sequence[Stage] = ()) -> Warmup | None:
    """The canary's warm-up, from the first analysed step's start, at most half of the
    analysed steps: its first third is quiet (latency not asked for), the rest judges
    latency only if it is not getting faster."""
    analysed = sum((s.duration or timedelta() for s in stages if s.kind == "bake"),
                   timedelta())
    length = min(analysis.warmup, analysed / 2) if analysed else analysis.warmup
    if not length:
        return None
    return Warmup(since=canary_since, quiet_until=canary_since + length / 3,
                  until=canary_since + length)


def shadow_fails(dep: Deployment, verdict: Judgement, weight: int) -> list[facts.ShadowVerdict]:
    """A fact for each shadow metric that would roll back now and had not before in this
    rollout (the analysis log keeps what each shadow metric said at each check)."""
    before = {name for h in json.loads(dep.analysis_log or "[]")
              for name, said in h.get("shadow", {}).items() if said == "fail"}
    return [facts.ShadowVerdict(weight=weight, metric=r.name,
                                text=r.explanation.removesuffix(" — safe to roll back now"))
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
           *, now: datetime, since: datetime, ends: datetime,
           warm: Warmup | None = None) -> Sparse | None:
    """At a step's end: when every undecided metric is a sequential one that only lacks
    traffic (no regression shown, canary traffic flowing) or one still warming up, extend
    the step if the traffic seen (and the warm-up) are done within ``max_extension``, else
    move on to the next analysed step carrying the evidence, else (the last one) pause.
    None: the usual rules apply."""
    undecided = [r for r in verdict.results if r.verdict is Verdict.INCONCLUSIVE]
    warming = [r for r in undecided if r.warming_up]
    lacking = [r for r in undecided if not r.warming_up and r.requests_needed is not None]
    if verdict.verdict is not Verdict.INCONCLUSIVE or verdict.marginal or not undecided \
            or len(warming) + len(lacking) < len(undecided):
        return None
    specs = {m.name: m for m in analysis.metrics}

    def rate(r: MetricResult) -> float:  # latency is read from the warm-up's end on
        start = max(since, min(warm.until, now)) if warm and specs[r.name].warms_up \
            else since
        return _canary_requests(series.get(r.name)) / max((now - start).total_seconds(), 1.0)

    per_second = max((rate(r) for r in lacking), default=0.0)  # the same canary traffic
    if lacking and per_second <= 0:
        return None
    needed = max((r.requests_needed or 0 for r in lacking), default=0)
    done = now.timestamp() + (needed / per_second if lacking else 0.0)
    if warming and warm is not None:
        done = max(done, warm.until.timestamp())
    allowed = analysis.max_extension.total_seconds()
    later = any(s.kind == "bake" for s in stages[index + 1:])
    if not lacking and later:  # warming up only: the next step judges it
        action: Literal["extend", "advance", "pause"] = "advance"
    elif done <= ends.timestamp() + allowed:
        action = "extend"
    elif later:
        action = "advance"
    else:
        action = "pause"
    seen = min((specs[r.name].min_requests - (r.requests_needed or 0) for r in lacking),
               default=0)
    return Sparse(action, facts.SparseTraffic(
        action=action, weight=stages[index].weight or 0,
        metrics=tuple(specs[r.name].title for r in lacking), seen=max(seen, 0),
        needed=needed, per_second=per_second,
        wait_seconds=needed / per_second if lacking else 0.0,
        detect_seconds=_detect_seconds(lacking, seen, per_second) if lacking else None,
        extension_seconds=allowed, warming=tuple(specs[r.name].title for r in warming),
        warm_until=warm.until if warming and warm is not None else None))


def _detect_seconds(undecided: Sequence[MetricResult], seen: int,
                    per_second: float) -> float | None:
    counts = [r.detect_requests for r in undecided if r.detect_requests is not None]
    if not counts:
        return None
    return max(max(counts) - seen, 0) / per_second
