"""Metrics-provider selection by name: the top-level ``metrics.provider`` picks an entry.

Like ``integrations.registry`` for CI and deploy providers, but kept apart: a metrics
provider plays no ci/deploy role, and what differs between them is the query language,
so each entry also says how a query template is checked at config load (per field:
counters and histogram buckets do not exist everywhere). ``provider`` may be left out
and means ``prometheus``, so configs written before there was a choice keep working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import BaseModel, Discriminator, Tag

from integrations import ddquery, promql
from integrations.datadog import NO_BUCKETS, DatadogProvider
from integrations.datadog_config import DatadogConfig
from integrations.metrics import MetricsProvider
from integrations.prometheus import PrometheusConfig, PrometheusProvider
from integrations.registry import ProviderContext

DEFAULT = "prometheus"
# The AnalysisMetric fields that hold query templates.
QUERY_FIELDS = ("query", "requests_query", "errors_query", "histogram_query")


@dataclass(frozen=True)
class MetricsEntry:
    name: str
    config: type[BaseModel]
    build: Callable[[Any, ProviderContext], MetricsProvider]
    check: Callable[[str, str], str]  # (template, AnalysisMetric field) -> template


def _prometheus(config: PrometheusConfig, ctx: ProviderContext) -> MetricsProvider:
    return PrometheusProvider(config, environ=ctx.environ, options=ctx.http)


def _datadog(config: DatadogConfig, ctx: ProviderContext) -> MetricsProvider:
    return DatadogProvider(config, options=ctx.http, environ=ctx.environ)


def _check_promql(template: str, field: str) -> str:
    return promql.check_template(template)


def _check_datadog(template: str, field: str) -> str:
    if field == "histogram_query":
        raise ValueError(f"{NO_BUCKETS}; histogram_query is for Prometheus")
    if field in ddquery.COUNT_FIELDS:
        return ddquery.check_count_template(template)
    return ddquery.check_template(template)


_ENTRIES: tuple[MetricsEntry, ...] = (
    MetricsEntry("prometheus", PrometheusConfig, _prometheus, _check_promql),
    MetricsEntry("datadog", DatadogConfig, _datadog, _check_datadog),
)
METRICS_REGISTRY: dict[str, MetricsEntry] = {e.name: e for e in _ENTRIES}
METRICS_PROVIDERS = tuple(METRICS_REGISTRY)


def provider_of(data: Any) -> str:
    """The provider a ``metrics:`` mapping (or model) names; omitted means prometheus."""
    if isinstance(data, dict):
        return str(data.get("provider", DEFAULT))
    return str(getattr(data, "provider", DEFAULT))


def _union() -> Any:
    members = tuple(Annotated[e.config, Tag(e.name)] for e in _ENTRIES)
    return Annotated[Union[members], Discriminator(provider_of)]  # noqa: UP007


if TYPE_CHECKING:
    MetricsConfig = PrometheusConfig | DatadogConfig
else:
    MetricsConfig = _union()


def check_query(provider: str, template: str, field: str) -> str:
    """A template checked by the rules of ``provider``'s query language (unknown: PromQL;
    the unknown name itself is reported on ``metrics.provider``)."""
    entry = METRICS_REGISTRY.get(provider, METRICS_REGISTRY[DEFAULT])
    return entry.check(template, field)


def build_metrics(config: BaseModel, ctx: ProviderContext) -> MetricsProvider:
    entry = METRICS_REGISTRY.get(provider_of(config))
    if entry is None or not isinstance(config, entry.config):
        raise ValueError(f"no metrics provider named {provider_of(config)!r}")
    return entry.build(config, ctx)
