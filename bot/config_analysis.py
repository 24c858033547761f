"""How a canary metric is judged: the settings each judge reads, as written in the
config. They belong to the configuration (the bottom layer), which the engine's
judges (``bot.engine.analysis``) read, never the reverse."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Direction(StrEnum):
    """Which way is better: errors and latency are ``lower``, throughput is ``higher``."""

    LOWER = "lower"
    HIGHER = "higher"


class JudgeKind(StrEnum):
    THRESHOLD = "threshold"
    MANN_WHITNEY = "mann-whitney"
    SEQUENTIAL = "sequential"


class Unit(StrEnum):
    """How numbers are shown to the on-call: ratios as %, seconds as ms."""

    RATIO = "ratio"
    SECONDS = "seconds"
    PLAIN = "plain"


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class MetricSpec(BaseModel):
    """How one metric is judged. Only the settings of the chosen ``judge`` are used."""

    model_config = _FROZEN

    name: str = Field(min_length=1)
    label: str | None = None  # human name for explanations, e.g. "p99 latency"
    unit: Unit = Unit.PLAIN
    direction: Direction = Direction.LOWER
    judge: JudgeKind = JudgeKind.THRESHOLD
    # A failing critical metric fails the whole canary whatever the score. None means the
    # judge's default: threshold and sequential verdicts are decisions already (limits,
    # error control), so they are critical; Mann-Whitney metrics feed the Kayenta score.
    critical: bool | None = None
    weight: float = Field(default=1.0, gt=0)
    # shadow: judged and reported ("would have rolled back") but never acts; None: the
    # analysis' mode. Lets a team try a rule on real rollouts before trusting it.
    mode: Literal["enforce", "shadow"] | None = None
    # Ignored during the canary's warm-up (cold caches, JIT). None: latency metrics
    # (unit seconds) warm up, error rates do not: no cold start explains an error burst.
    warmup: bool | None = None

    # threshold (Argo Rollouts / Flagger). max/min are absolute; max_relative and
    # max_increase compare with the baseline in the *bad* direction (for direction=higher,
    # canary >= baseline / max_relative and canary >= baseline - max_increase).
    max: float | None = None
    min: float | None = None
    max_relative: float | None = Field(default=None, gt=0)
    max_increase: float | None = Field(default=None, ge=0)
    combine: Literal["all", "any"] = "all"  # "any": e.g. <= baseline + 0.5 pp OR <= 1 %
    failure_limit: int = Field(default=0, ge=0)  # failed measurements tolerated (Argo)
    consecutive_error_limit: int = Field(default=4, ge=0)  # missing data tolerated in a row

    # mann-whitney (Kayenta NetflixACAJudge)
    confidence: float = Field(default=0.98, gt=0.5, lt=1)
    # tolerated relative change; also the sequential early-pass margin (ratio < 1 + this)
    allowed_increase: float = Field(default=0.1, ge=0)
    min_samples: int = Field(default=5, ge=3)

    # sequential (anytime-valid)
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    min_requests: int = Field(default=1000, ge=0)  # canary requests before any pass
    warmup_checks: int = Field(default=0, ge=0)  # first checks only anchor the counters

    @property
    def title(self) -> str:
        return self.label or self.name

    @property
    def warms_up(self) -> bool:
        return self.warmup if self.warmup is not None else self.unit is Unit.SECONDS

    @property
    def is_critical(self) -> bool:
        if self.critical is not None:
            return self.critical
        return self.judge is not JudgeKind.MANN_WHITNEY

    @model_validator(mode="after")
    def _has_conditions(self) -> MetricSpec:
        if self.judge is JudgeKind.THRESHOLD and all(
            v is None for v in (self.max, self.min, self.max_relative, self.max_increase)
        ):
            raise ValueError(f"threshold metric {self.name!r} needs max, min, max_relative "
                             "or max_increase")
        return self
