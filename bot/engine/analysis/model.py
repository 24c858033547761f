"""Types shared by the canary judges: what to judge, the data, the verdicts, the persisted state.

Everything here is a frozen pydantic model so the engine can log it, persist it as JSON
and hand it back on the next check; the judges never mutate their inputs.
"""

from __future__ import annotations

import math
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field

# The settings are configuration (bot.config_analysis); re-exported for the judges.
from bot.config_analysis import Direction as Direction
from bot.config_analysis import JudgeKind as JudgeKind
from bot.config_analysis import MetricSpec as MetricSpec
from bot.config_analysis import Unit as Unit

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Verdict(StrEnum):
    """What the engine does with a metric or a whole canary."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


class MetricSeries(BaseModel):
    """The data of one metric at one check, as the metrics provider returned it.

    ``canary``/``baseline`` are samples over the current window (per-interval error rates,
    latencies; None or NaN for a failed scrape). The counters and histograms are
    cumulative since the canary started (Prometheus ``_total`` and ``_bucket`` series,
    ``le`` -> cumulative count including ``+Inf``); the sequential judge needs those.
    """

    model_config = _FROZEN

    name: str
    canary: tuple[float | None, ...] = ()
    baseline: tuple[float | None, ...] = ()
    canary_requests: int | None = Field(default=None, ge=0)
    canary_errors: int | None = Field(default=None, ge=0)
    baseline_requests: int | None = Field(default=None, ge=0)
    baseline_errors: int | None = Field(default=None, ge=0)
    canary_histogram: dict[float, int] | None = None
    baseline_histogram: dict[float, int] | None = None
    # The canary's warm-up: nothing is judged, except a sequential latency test that
    # fails only if the canary is not getting faster (``early_canary_histogram``: the
    # interval's first half, to compare with the second).
    warming_up: bool = False
    early_canary_histogram: dict[float, int] | None = None

    @property
    def has_counts(self) -> bool:
        return None not in (self.canary_requests, self.canary_errors,
                            self.baseline_requests, self.baseline_errors)

    @property
    def has_histograms(self) -> bool:
        return bool(self.canary_histogram) and bool(self.baseline_histogram)


def finite(values: tuple[float | None, ...]) -> list[float]:
    """Samples that are real measurements: drops None, NaN and infinities."""
    return [float(v) for v in values if v is not None and math.isfinite(v)]


class MetricResult(BaseModel):
    """One metric's verdict with a sentence the on-call can act on at 3 a.m."""

    model_config = _FROZEN

    name: str
    judge: JudgeKind
    verdict: Verdict
    explanation: str
    canary_value: float | None = None  # point summaries in the metric's unit
    baseline_value: float | None = None
    critical: bool = False
    weight: float = 1.0
    # True when more data cannot change the verdict: act now instead of waiting for the
    # end of the analysis window (sequential decisions, exhausted failure limits).
    final: bool = False
    p_value: float | None = None
    # canary - baseline and its 95 % CI: Hodges-Lehmann (Mann-Whitney), the difference of
    # the error rates over every step so far (sequential counts)
    ci: tuple[float, float] | None = None
    shift: float | None = None
    e_value: float | None = None  # evidence against "canary not worse"
    e_value_pass: float | None = None  # evidence against "canary worse than tolerated"
    shadow: bool = False  # reported, never acted on
    warming_up: bool = False  # not judged yet: the canary's warm-up
    # sequential, undecided for lack of traffic: canary requests still needed before a
    # pass, and in all for a 5x rise of the slow/error rate to reach the fail bar
    requests_needed: int | None = None
    detect_requests: int | None = None


class Judgement(BaseModel):
    """The canary's verdict. ``marginal`` is Kayenta's middle score band: the verdict is
    inconclusive (pause for a human) but the summary says "marginal"."""

    model_config = _FROZEN

    verdict: Verdict
    score: float = Field(ge=0, le=100)
    marginal: bool = False
    final: bool = False
    results: tuple[MetricResult, ...] = ()
    shadow: tuple[MetricResult, ...] = ()  # metrics in shadow mode: what they would say
    summary: str


class ThresholdState(BaseModel):
    """Measurement counts carried across checks, like an Argo AnalysisRun's metric status."""

    model_config = _FROZEN

    kind: Literal["threshold"] = "threshold"
    measurements: int = 0
    successes: int = 0
    failures: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    failed: bool = False  # sticky: failures exceeded failure_limit


class SequentialState(BaseModel):
    """Evidence of one sequential test. E-values live as log-likelihood ratios per
    (boundary, alternative) so that they survive JSON and can only accumulate."""

    model_config = _FROZEN

    kind: Literal["sequential"] = "sequential"
    test: Literal["counts", "latency"] | None = None
    checks: int = 0
    allowed_increase: float = 0.0  # the pass-test margin the pass LLRs were built for
    bounds: tuple[float, ...] = ()  # latency: the ``le`` boundaries tested
    # Last-seen cumulative counters. counts: (requests, errors); latency: (requests, then
    # requests slower than each boundary).
    last_canary: tuple[int, ...] = ()
    last_baseline: tuple[int, ...] = ()
    # The same quantities summed over the checks that entered the evidence (after warm-up).
    seen_canary: tuple[int, ...] = ()
    seen_baseline: tuple[int, ...] = ()
    fail_llr: tuple[tuple[float, ...], ...] = ()  # [boundary][alternative]
    pass_llr: tuple[tuple[float, ...], ...] = ()
    decided: Verdict | None = None  # sticky: FAIL or a final PASS
    resets: int = 0  # counter resets seen (evidence of those checks skipped)


MetricState = Annotated[ThresholdState | SequentialState, Field(discriminator="kind")]


class AnalysisState(BaseModel):
    """Everything the judges carry between checks, keyed by metric name; one JSON blob."""

    model_config = _FROZEN

    metrics: dict[str, MetricState] = Field(default_factory=dict)
    canary_since: datetime | None = None  # the first analysed step's start (warm-up)


def _num(x: float) -> str:
    """Two to three significant digits, never scientific notation for everyday sizes."""
    ax = abs(x)
    if ax >= 100 or ax == 0:
        return f"{x:,.0f}"
    if ax >= 0.001:
        return f"{x:.3g}" if ax < 10 else f"{x:.1f}".removesuffix(".0")
    return f"{x:.2g}"


def fmt_value(x: float | None, unit: Unit) -> str:
    """``0.024`` -> ``2.4%`` (ratio), ``0.412`` -> ``412 ms`` (seconds)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if unit is Unit.RATIO:
        return f"{_num(100 * x)}%"
    if unit is Unit.SECONDS:
        return f"{_num(1000 * x)} ms" if abs(x) < 10 else f"{_num(x)} s"
    return _num(x)


def fmt_delta(x: float, unit: Unit) -> str:
    """A signed difference: ``+2.3 pp`` for ratios, ``+32 ms`` for seconds."""
    sign = "+" if x >= 0 else "−"
    if unit is Unit.RATIO:
        return f"{sign}{_num(100 * abs(x))} pp"
    return sign + fmt_value(abs(x), unit)


def fmt_evalue(e: float) -> str:
    return f"{e:.3g}" if e < 1e4 else f"{e:.1e}"


# Verdict codes for the vectorised kernels (the benchmark runs thousands of canaries at once).
CODE_INCONCLUSIVE, CODE_PASS, CODE_FINAL_PASS, CODE_FAIL = 0, 1, 2, 3


def verdict_of(code: int) -> tuple[Verdict, bool]:
    """A kernel code as (verdict, final)."""
    if code == CODE_FAIL:
        return Verdict.FAIL, True
    if code == CODE_FINAL_PASS:
        return Verdict.PASS, True
    if code == CODE_PASS:
        return Verdict.PASS, False
    return Verdict.INCONCLUSIVE, False


def histogram_quantile(q: float, bounds: ArrayLike, cumulative: ArrayLike) -> NDArray[np.float64]:
    """Prometheus ``histogram_quantile``: linear within the bucket; ``cumulative`` is
    (..., B + 1) with the +Inf bucket last. NaN without requests."""
    bnd = np.asarray(bounds, dtype=np.float64)
    cum = np.asarray(cumulative, dtype=np.float64)
    total = cum[..., -1:]
    rank = q * total
    k = np.minimum(np.argmax(cum >= rank, axis=-1), bnd.size)[..., None]
    upper = np.append(bnd, bnd[-1])[k]
    lower = np.where(k > 0, np.concatenate(([0.0], bnd))[k], 0.0)
    prev = np.where(k > 0, np.take_along_axis(cum, np.maximum(k - 1, 0), axis=-1), 0.0)
    here = np.take_along_axis(cum, k, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(here > prev, (rank - prev) / (here - prev), 1.0)
    value = np.where(k < bnd.size, lower + (upper - lower) * frac, bnd[-1])
    return np.where(total > 0, value, np.nan)[..., 0]
