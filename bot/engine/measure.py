"""Fetch canary and baseline series for the judges from the metrics provider.

A provider error or a missing series becomes ``None`` for that metric (or for its
counters / histograms): the judges turn it into an explicit inconclusive result, never a
pass. Counters and histogram buckets are cumulative: they are read at ``start`` and at
``end`` and the judge gets the increase between the two, so both tracks cover the same
interval. Read at ``end`` alone, a baseline whose pods have served for days would be
judged on its whole life against the canary's first minutes. A series with no data at
``start`` (the canary's pods did not exist yet) counts from zero; the sequential judge
works on the increase between its checks.

During the canary's warm-up (``Warmup``) metrics that warm up (latency by default) are
not asked for in its quiet part; after that a sequential latency metric gets its buckets
since the step started and at the interval's midpoint, so the judge can tell a cold
start (getting faster) from a regression (not). After the warm-up their interval starts
where it ended, so a cold start's slow requests never enter the evidence.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import datetime

from bot.config_analysis import JudgeKind
from bot.config_delivery import AnalysisConfig, AnalysisMetric
from bot.engine.analysis.model import MetricSeries
from bot.store.models import Deployment
from integrations.metrics import MetricsError, MetricsProvider

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Warmup:
    """The canary's warm-up from ``since``: nothing asked until ``quiet_until``; until
    ``until`` latency fails only if it is not getting faster."""

    since: datetime
    quiet_until: datetime
    until: datetime


async def measure(
    provider: MetricsProvider, analysis: AnalysisConfig, dep: Deployment, start: datetime,
    end: datetime, *, warmup: Warmup | None = None,
) -> dict[str, MetricSeries | None]:
    """Every metric of ``analysis`` for the canary and baseline tracks between start and end."""
    results = await asyncio.gather(*(
        _one(provider, analysis, metric, dep, start, end, warmup)
        for metric in analysis.metrics))
    return {m.name: r for m, r in zip(analysis.metrics, results, strict=True)}


async def _one(
    provider: MetricsProvider, analysis: AnalysisConfig, metric: AnalysisMetric,
    dep: Deployment, start: datetime, end: datetime, warmup: Warmup | None = None,
) -> MetricSeries | None:
    if warmup is not None and metric.warms_up:
        if end >= warmup.until:
            start = max(start, warmup.until)
        elif end <= warmup.quiet_until or metric.histogram_query is None:
            return MetricSeries(name=metric.name, warming_up=True)
        else:  # since the canary started, across steps: the trend of its whole warm-up
            return await _warming(provider, metric.histogram_query, metric.name, dep,
                                  warmup.since, end)
    try:
        fields: dict[str, object] = {}
        if metric.query:
            since = start
            if metric.judge is JudgeKind.THRESHOLD:  # the last interval, not the whole step
                since = max(start, end - (analysis.measurement_window or analysis.check_every))
            canary, baseline = await asyncio.gather(
                _range(provider, analysis, metric.query, dep, "canary", since, end),
                _range(provider, analysis, metric.query, dep, "baseline", since, end))
            fields.update(canary=canary, baseline=baseline)
        if metric.requests_query and metric.errors_query:
            counts = await asyncio.gather(*(
                _count(provider, q, dep, track, start, end)
                for track in ("canary", "baseline")
                for q in (metric.requests_query, metric.errors_query)))
            if all(c is not None for c in counts):
                fields.update(canary_requests=counts[0], canary_errors=counts[1],
                              baseline_requests=counts[2], baseline_errors=counts[3])
        if metric.histogram_query:
            canary_h, baseline_h = await asyncio.gather(*(
                _buckets(provider, metric.histogram_query, dep, track, start, end)
                for track in ("canary", "baseline")))
            fields.update(canary_histogram=canary_h, baseline_histogram=baseline_h)
        return MetricSeries(name=metric.name, **fields)  # type: ignore[arg-type]
    except MetricsError as exc:
        log.warning("metric %s for deployment %s: %s", metric.name, dep.id, exc)
        return None


async def _warming(provider: MetricsProvider, template: str, name: str, dep: Deployment,
                   start: datetime, end: datetime) -> MetricSeries | None:
    """Buckets since ``start`` and over the interval's first half, for the warm-up test."""
    mid = start + (end - start) / 2
    try:
        canary, baseline, early = await asyncio.gather(
            _buckets(provider, template, dep, "canary", start, end),
            _buckets(provider, template, dep, "baseline", start, end),
            _buckets(provider, template, dep, "canary", start, mid))
    except MetricsError as exc:
        log.warning("metric %s for deployment %s: %s", name, dep.id, exc)
        return None
    return MetricSeries(name=name, canary_histogram=canary, baseline_histogram=baseline,
                        early_canary_histogram=early, warming_up=True)


def _render(provider: MetricsProvider, template: str, dep: Deployment, track: str,
            window: object) -> str:
    version = dep.version if track == "canary" else (dep.previous_version or dep.version)
    return provider.render_query(template, service=dep.service, env=dep.env, track=track,
                                 version=version, window=window)


async def _range(provider: MetricsProvider, analysis: AnalysisConfig, template: str,
                 dep: Deployment, track: str, start: datetime,
                 end: datetime) -> tuple[float | None, ...]:
    query = _render(provider, template, dep, track, analysis.window)
    samples = await provider.query_range(query, start, end,
                                         analysis.resolution.total_seconds())
    return tuple(s.value for s in samples)


async def _count(provider: MetricsProvider, template: str, dep: Deployment, track: str,
                 start: datetime, end: datetime) -> int | None:
    """The counter's increase from ``start`` to ``end``; None without data at ``end``. A
    counter that went down (its pods restarted) comes out negative: the judge re-anchors.
    Per-interval counts (Datadog's ``.as_count()``) are summed from ``start``."""
    grew = await provider.increase(_render(provider, template, dep, track, "1m"), start, end)
    return None if grew is None or not math.isfinite(grew) else round(grew)


async def _buckets(provider: MetricsProvider, template: str, dep: Deployment, track: str,
                   start: datetime, end: datetime) -> dict[float, int] | None:
    """Each ``le``'s increase from ``start`` to ``end``; None without data at ``end``, so
    the judge says inconclusive."""
    query = _render(provider, template, dep, track, "1m")
    before, after = await asyncio.gather(provider.query_buckets(query, start),
                                         provider.query_buckets(query, end))
    return increase_of(before, after)


def increase_of(before: dict[float, float], after: dict[float, float]) -> dict[float, int] | None:
    """Each ``le``'s increase, in whole requests; None without data at ``end``. Counters
    can be fractional: the total and the number slower than each bound are rounded, not
    each bucket, so a count that did not change between two checks reads the same (one
    slow request read 1, then 0, as the total grew: "counters went backwards")."""
    grew = {le: value - before.get(le, 0.0) for le, value in after.items()}
    if not grew:
        return None
    total = grew.get(math.inf, max(grew.values()))
    whole = round(total)
    return {le: whole - round(total - value) for le, value in grew.items()}
