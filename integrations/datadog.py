"""The ``datadog`` metrics provider: Datadog metric queries for canary analysis.

Uses the v1 "Query timeseries points" endpoint, ``GET /api/v1/query?from=&to=&query=``
(docs.datadoghq.com/api/latest/metrics/#query-timeseries-points) rather than v2's
``POST /api/v2/query/timeseries``: v1 takes the query exactly as written in a Datadog
graph or monitor (``sum:metric{tags}.as_count()``, functions included), with no formula
and query-name wrapping to build, and answers one object per series with its ``scope``,
which is what an error naming the extra series needs. Both need the same keys.

What the judges need, in Datadog terms:

- ``query_range``: the one series' ``pointlist`` (``[ms, value]``); ``null`` points are
  skipped and counted (``Samples.skipped``). Datadog picks the interval itself (the
  ``step`` cannot be passed to v1); add ``.rollup(avg, 10)`` to choose it.
- ``query``: the last non-null point of the last ``instant_lookback_seconds``.
- ``increase`` (the sequential judge's requests/errors): ``.as_count()`` answers
  counts *per interval*, not a cumulative counter like Prometheus's. The judge reads
  counters at each check and works on their increase, so this returns the sum of the
  interval counts from the step's start (a fixed origin, kept in the database) to the
  check: the difference between two checks is then exactly the requests in between,
  and data that arrives late is counted at the next check instead of being lost.
  Datadog picks the interval (it grows with the range) and aligns it to its own
  multiples, so the first point's interval may begin before the step's start: a point
  timestamped before ``start`` is dropped, never counted, so no request from before the
  step is; the price is up to one interval just after ``start`` left out (its size may
  change between checks as the range grows, so two checks' difference can be off by
  that much: the requests of the step's first seconds, never of another version).
- ``query_buckets``: Datadog distributions have no ``le`` buckets; refused (the config
  check refuses ``histogram_query`` with Datadog already).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from integrations import ddquery
from integrations.datadog_config import DatadogConfig
from integrations.datadog_http import DatadogHTTP
from integrations.http import HttpOptions, snippet
from integrations.metrics import MetricsError, Sample, Samples

log = logging.getLogger(__name__)

__all__ = ["DatadogConfig", "DatadogProvider"]

NO_BUCKETS = ("Datadog has no histogram buckets by le: use query with a percentile "
              "(e.g. p95:trace.http.request{service:{service},track:{track}}) and the "
              "threshold or mann-whitney judge")


def _seconds(name: str, value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.timestamp()


def _scope(series: Any) -> str:
    scope = series.get("scope") if isinstance(series, dict) else None
    return "{" + str(scope) + "}" if scope else "{*}"


class DatadogProvider(DatadogHTTP):
    """Implements ``MetricsProvider`` against Datadog's API."""

    def __init__(self, config: DatadogConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        super().__init__(config, options=options or HttpOptions(), environ=environ,
                         sleep=sleep)

    def render_query(self, template: str, **values: Any) -> str:
        """Datadog's own template rules (``integrations.ddquery``), not PromQL's."""
        return ddquery.render_query(template, **values)

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> Samples:
        """The one series ``query`` yields between ``start`` and ``end``."""
        start_s, end_s = _seconds("start", start), _seconds("end", end)
        if end_s < start_s:
            raise ValueError("end must not be before start")
        if not (math.isfinite(step) and step > 0):
            raise ValueError("step must be a positive number of seconds")
        series = self._one_series(await self._query(query, start_s, end_s))
        return Samples() if series is None else self._points(series)

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        """The last non-null point of the last ``instant_lookback_seconds`` before ``at``."""
        end = _seconds("at", at) if at is not None else datetime.now(UTC).timestamp()
        start = end - self._config.instant_lookback_seconds
        series = self._one_series(await self._query(query, start, end))
        points = self._points(series) if series is not None else Samples()
        return points[-1].value if points else None

    async def increase(self, query: str, start: datetime, end: datetime) -> float | None:
        """Requests (or errors) from ``start`` to ``end``: the sum of the ``.as_count()``
        interval counts. None when Datadog has no data at all (inconclusive, not 0)."""
        start_s, end_s = _seconds("start", start), _seconds("end", end)
        series = self._one_series(await self._query(query, start_s, max(start_s, end_s)))
        if series is None:
            return None
        # A point's interval may begin before start (Datadog aligns intervals to its
        # rollup, which grows with the range): it would count requests from before it.
        points = [p for p in self._points(series) if p.timestamp.timestamp() >= start_s]
        return math.fsum(p.value for p in points) if points else None

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        raise MetricsError(NO_BUCKETS)

    # --- parsing -----------------------------------------------------------------------

    def _one_series(self, body: dict[str, Any]) -> dict[str, Any] | None:
        series = body.get("series")
        if not isinstance(series, list):
            raise self._unexpected("no series list")
        if not series:
            return None
        if len(series) > 1:
            shown = ", ".join(_scope(s) for s in series[:3])
            more = f" and {len(series) - 3} more" if len(series) > 3 else ""
            raise MetricsError(
                f"the Datadog query returned {len(series)} series ({snippet(shown, 300)}"
                f"{more}); it must aggregate to one: start it with sum: (or avg:) and drop "
                "any `by {...}`, e.g. sum:trace.http.request.hits{service:{service},"
                "track:{track}}.as_count()"
            )
        if not isinstance(series[0], dict):
            raise self._unexpected("a series is not an object")
        return series[0]

    def _points(self, series: dict[str, Any]) -> Samples:
        """The series' points; null (no data in that interval) and NaN are counted apart."""
        pointlist = series.get("pointlist")
        if not isinstance(pointlist, list):
            raise self._unexpected("a series without a pointlist")
        samples, skipped = [], 0
        for point in pointlist:
            try:
                millis, value = point
                when = datetime.fromtimestamp(float(millis) / 1000, tz=UTC)
                number = None if value is None else float(value)
            except (TypeError, ValueError, OverflowError) as exc:
                raise self._unexpected(f"a point is not [ms, value]: {point!r:.80}") from exc
            if number is None or not math.isfinite(number):
                skipped += 1
            else:
                samples.append(Sample(when, number))
        return Samples(samples, skipped=skipped)
