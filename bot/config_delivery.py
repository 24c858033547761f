"""Config for progressive delivery: strategies, canary analysis metrics, HTTP checks.

Metrics reuse the judges' own settings (``MetricSpec``) and add the query that feeds them
(PromQL, or the metrics provider's own language), so one block in the YAML says both what
to measure and how to judge it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bot.config_analysis import JudgeKind, MetricSpec
from bot.config_policy import Duration
from integrations.http_check import HttpCheckConfig
from integrations.metrics_registry import check_query


def _query(template: str, info: ValidationInfo) -> str:
    """Checked in the language of the config's metrics provider (PromQL by default)."""
    provider = (info.context or {}).get("metrics_provider", "prometheus")
    return check_query(provider, template, info.field_name or "query")


QueryTemplate = Annotated[str, AfterValidator(_query)]
StrategyKind = Literal["rolling", "canary", "blue-green"]
STRATEGIES: tuple[StrategyKind, ...] = ("rolling", "canary", "blue-green")


def _zero_or_duration(value: object) -> object:
    """``0``/``0s``/``off`` turn a feature off; anything else is a duration (30s, 2m)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", "0m", "off"):
        return timedelta(0)
    return value


ZeroOrDuration = Annotated[Duration, BeforeValidator(_zero_or_duration)]


class AnalysisMetric(MetricSpec):
    """One metric: how to query it (per track) and how to judge it."""

    query: QueryTemplate | None = Field(
        default=None, description="A value per point in time, e.g. an error ratio; {track}")
    requests_query: QueryTemplate | None = Field(
        default=None, description="Cumulative request count (sequential judge)")
    errors_query: QueryTemplate | None = Field(
        default=None, description="Cumulative error count (sequential judge)")
    histogram_query: QueryTemplate | None = Field(
        default=None, description="Cumulative bucket counts by le, e.g. sum by (le) "
        "(..._bucket{track=\"{track}\"}) (sequential judge: latency test)")

    @model_validator(mode="after")
    def _queries(self) -> AnalysisMetric:
        # One test per metric: a sequential metric switching between counts and latency
        # would restart its evidence, so the two kinds of query never mix.
        counts = (self.requests_query, self.errors_query)
        if self.judge is JudgeKind.SEQUENTIAL:
            if self.histogram_query is not None and any(counts):
                raise ValueError(f"metric {self.name!r}: give either requests_query and "
                                 "errors_query (error rate) or histogram_query (latency), not "
                                 "both; use two metrics to judge both")
            if self.histogram_query is None and not all(counts):
                raise ValueError(f"metric {self.name!r}: the sequential judge needs "
                                 "requests_query and errors_query (error rate) or "
                                 "histogram_query (latency)")
        elif self.histogram_query is not None:
            raise ValueError(f"metric {self.name!r}: histogram_query is only for judge: "
                             f"sequential; the {self.judge.value} judge reads query (e.g. a "
                             "histogram_quantile(...) of the buckets)")
        elif self.query is None:
            raise ValueError(f"metric {self.name!r}: needs a query")
        return self


class AnalysisConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    metrics: list[AnalysisMetric] = Field(min_length=1)
    window: Duration = Field(default=timedelta(minutes=1), description="rate() window")
    resolution: Duration = Field(default=timedelta(seconds=10), description="query step")
    check_every: Duration = Field(default=timedelta(seconds=30))
    measurement_window: Duration | None = Field(
        default=None, description="threshold judge: each check's measurement is the mean over "
        "this much time before the check (default: check_every), as Argo Rollouts and Flagger "
        "measure the last interval; the other judges use everything since the step started")
    pass_score: float = Field(default=95, ge=0, le=100)
    marginal_score: float = Field(default=75, ge=0, le=100)
    warmup: ZeroOrDuration = Field(
        default=timedelta(minutes=3), description="the canary's warm-up, from the first "
        "analysed step's start: latency metrics are not asked for in its first third, and "
        "until its end fail only if the canary is not getting faster (cold caches, JIT); "
        "error rates are judged from the first check")
    max_extension: ZeroOrDuration = Field(
        default=timedelta(minutes=30), description="a step whose sequential metrics only "
        "lack traffic is extended up to this long, when the traffic seen says it is enough, "
        "instead of pausing")
    mode: Literal["enforce", "shadow"] = Field(
        default="enforce", description="shadow: judge and report what would have been "
        "decided, never roll back or pause (per metric: the metric's mode)")


Step = int | Literal["pause"]


class StrategyConfig(BaseModel):
    """How a service reaches an environment; see the README for each kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: StrategyKind = "rolling"
    steps: list[Step] = Field(default_factory=lambda: list[Step]([5, 25, 50, 100]))
    interval: Duration = Field(default=timedelta(minutes=2), description="time per step")
    analysis: AnalysisConfig | None = None
    checks: list[HttpCheckConfig] = Field(default_factory=list)
    rollback_window: Duration = Field(default=timedelta(minutes=10),
                                      description="blue-green: keep the old version this long")
    pause_timeout: Duration = Field(
        default=timedelta(hours=1),
        description="a paused rollout (gate, inconclusive analysis, Pause) with no decision "
                    "for this long is rolled back, so nothing waits forever")

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[Step]) -> list[Step]:
        weights = [s for s in steps if s != "pause"]
        if not weights or weights[-1] != 100:
            raise ValueError("canary steps must end at 100 (e.g. [5, 25, 50, 100])")
        if any(not 0 < w <= 100 for w in weights) or weights != sorted(weights):
            raise ValueError("canary weights must rise from above 0 to 100")
        return steps

    def with_kind(self, kind: StrategyKind) -> StrategyConfig:
        return self.model_copy(update={"kind": kind})
