"""The ``prometheus`` metrics provider: PromQL queries and what their answers mean.

Parses Prometheus's HTTP API answers (``/api/v1/query`` and ``/api/v1/query_range``)
into plain numbers, and every answer that cannot be one (several series, a range
vector, a native histogram) into a ``MetricsError`` that says how to fix the query.
The HTTP layer (auth, retries, error statuses) is in ``integrations.prometheus_http``;
the PromQL templates are in ``integrations.promql``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from integrations.http import snippet
from integrations.metrics import CumulativeCounters, MetricsError, Sample, Samples
from integrations.prometheus_http import PrometheusConfig, PrometheusHTTP
from integrations.promql import render_query

__all__ = ["PrometheusConfig", "PrometheusProvider"]

BY_LE_HINT = 'sum by (le) (http_request_duration_seconds_bucket{track="{track}"})'


def _aware(name: str, value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.timestamp()


def _labels(series: Any) -> str:
    metric = series.get("metric") if isinstance(series, dict) else None
    if not isinstance(metric, dict) or not metric:
        return "{}"
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


def _le_text(bound: float) -> str:
    return "+Inf" if bound == math.inf else f"{bound:g}"


class PrometheusProvider(CumulativeCounters, PrometheusHTTP):
    """Implements ``MetricsProvider`` against Prometheus's HTTP API (v1)."""

    def render_query(self, template: str, **values: Any) -> str:
        return render_query(template, **values)

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: float
    ) -> Samples:
        """The one series ``query`` yields between ``start`` and ``end``."""
        start_ts, end_ts = _aware("start", start), _aware("end", end)
        if end_ts < start_ts:
            raise ValueError("end must not be before start")
        if not (math.isfinite(step) and step > 0):
            raise ValueError("step must be a positive number of seconds")
        params = {
            "query": query, "start": f"{start_ts:.3f}", "end": f"{end_ts:.3f}",
            "step": str(float(step)),
        }
        data, warnings = await self._call("query_range", params)
        result = self._result(data, ("matrix",))
        series = self._one_series(result)
        if series is None:
            return Samples(warnings=warnings)
        values = series.get("values")
        if values is None and "histograms" in series:
            raise MetricsError(
                "the query returned native histograms; wrap it in histogram_quantile(...)"
            )
        if not isinstance(values, list):
            raise self._unexpected("a matrix series without values")
        samples, skipped = [], 0
        for pair in values:
            sample = self._sample(pair)
            if math.isfinite(sample.value):
                samples.append(sample)
            else:
                skipped += 1
        return Samples(samples, skipped=skipped, warnings=warnings)

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        """The single value of ``query``; None for no data or a NaN/Inf value."""
        params = {"query": query}
        if at is not None:
            params["time"] = f"{_aware('at', at):.3f}"
        data, _ = await self._call("query", params)
        result = self._result(data, ("vector", "scalar"))
        if data["resultType"] == "scalar":
            value = self._sample(result).value
        else:
            series = self._one_series(result)
            if series is None:
                return None
            if "value" not in series and "histogram" in series:
                raise MetricsError(
                    "the query returned a native histogram; wrap it in histogram_quantile(...)"
                )
            value = self._sample(series.get("value")).value
        return value if math.isfinite(value) else None

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        """Histogram buckets at ``at``: one series per ``le`` label, as {le: value}.

        Latency is judged per bucket boundary, so unlike ``query`` this takes several
        series; each must be told apart by ``le`` alone ("+Inf" becomes ``math.inf``).
        """
        params = {"query": query}
        if at is not None:
            params["time"] = f"{_aware('at', at):.3f}"
        data, _ = await self._call("query", params)
        result = self._result(data, ("vector",))
        if not isinstance(result, list):
            raise self._unexpected("data.result is not a list")
        buckets: dict[float, float] = {}
        for series in result:
            bound = self._le(series)
            if bound in buckets:
                raise MetricsError(
                    f"the query returned two series for le={_le_text(bound)} (e.g. "
                    f"{snippet(_labels(series), 200)}); aggregate the other labels away, "
                    f"e.g. {BY_LE_HINT}"
                )
            value = self._sample(series.get("value")).value
            if not math.isfinite(value):
                raise MetricsError(
                    f"the bucket le={_le_text(bound)} has the value {value}; query cumulative "
                    f"bucket counts (no division), e.g. {BY_LE_HINT}"
                )
            buckets[bound] = value
        return dict(sorted(buckets.items()))

    # --- parsing -----------------------------------------------------------------------

    def _result(self, data: Any, expected: tuple[str, ...]) -> Any:
        if not isinstance(data, dict) or "result" not in data:
            raise self._unexpected("no data.result")
        kind = data.get("resultType")
        if kind not in expected:
            if kind == "matrix":
                raise MetricsError(
                    "the query returned a range vector; an instant query must not end "
                    "in a [range] selector (use e.g. rate(...[5m]))"
                )
            raise MetricsError(
                f"the query returned a {kind}, but a {' or '.join(expected)} was expected"
            )
        return data["result"]

    def _le(self, series: Any) -> float:
        """The bucket's upper bound from the series' ``le`` label."""
        if not isinstance(series, dict):
            raise self._unexpected("a series is not an object")
        metric = series.get("metric")
        le = metric.get("le") if isinstance(metric, dict) else None
        if "value" not in series and "histogram" in series:
            raise MetricsError(
                "the query returned a native histogram; query the classic _bucket series, "
                f"e.g. {BY_LE_HINT}"
            )
        if le is None:
            raise MetricsError(
                f"the query returned a series without an le label ({snippet(_labels(series), 200)}"
                f"); a histogram query must keep le, e.g. {BY_LE_HINT}"
            )
        try:
            bound = float(le)
        except (TypeError, ValueError):
            bound = math.nan
        if math.isnan(bound):
            raise MetricsError(f"the le label {str(le)[:40]!r} is not a bucket bound (a number "
                               "or +Inf)")
        return bound

    def _one_series(self, result: Any) -> dict[str, Any] | None:
        if not isinstance(result, list):
            raise self._unexpected("data.result is not a list")
        if not result:
            return None
        if len(result) > 1:
            shown = ", ".join(_labels(s) for s in result[:3])
            more = f" and {len(result) - 3} more" if len(result) > 3 else ""
            raise MetricsError(
                f"the query returned {len(result)} series ({snippet(shown, 300)}{more}); "
                "it must aggregate to one series, e.g. wrap it in sum(...)"
            )
        series = result[0]
        if not isinstance(series, dict):
            raise self._unexpected("a series is not an object")
        return series

    def _sample(self, pair: Any) -> Sample:
        try:
            ts, raw = pair
            return Sample(datetime.fromtimestamp(float(ts), tz=UTC), float(raw))
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unexpected(f"a sample is not [time, value]: {pair!r:.80}") from exc
