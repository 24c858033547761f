"""Threshold judge: absolute and baseline-relative limits per measurement (Argo Rollouts, Flagger).

Why: it is what people already configure and understand ("error rate at most baseline +
0.5 pp"). Each check is one measurement, classified success, failure or error (no data).
As in an Argo AnalysisRun the counts persist across checks in a ``ThresholdState``: the
metric fails, for good, once failed measurements exceed ``failure_limit``; it is
inconclusive while missing data in a row exceeds ``consecutive_error_limit``; a tolerated
failure or gap leaves it passing. The measurement value is the mean of the window's
samples (a provider returning one number per query gives a one-element window).

The kernels (``measure``, ``step``) are vectorised so the benchmark can run thousands of
canaries through exactly the rules the engine uses.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from bot.engine.analysis.model import (
    CODE_FAIL,
    CODE_INCONCLUSIVE,
    CODE_PASS,
    Direction,
    JudgeKind,
    MetricResult,
    MetricSeries,
    MetricSpec,
    ThresholdState,
    Verdict,
    finite,
    fmt_delta,
    fmt_value,
    verdict_of,
)

SUCCESS, FAILURE, ERROR = 0, 1, 2


def _conditions(c: NDArray[np.float64], b: NDArray[np.float64],
                spec: MetricSpec) -> list[tuple[str, NDArray[np.float64]]]:
    """Each configured condition as 1.0 (holds), 0.0 (broken) or NaN (cannot tell)."""
    lower = spec.direction is Direction.LOWER
    out: list[tuple[str, NDArray[np.float64]]] = []

    def holds(ok: NDArray[np.bool_], *inputs: NDArray[np.float64]) -> NDArray[np.float64]:
        res = ok.astype(np.float64)
        for x in inputs:
            res = np.where(np.isnan(x), np.nan, res)
        return res

    with np.errstate(invalid="ignore"):
        if spec.max is not None:
            out.append(("max", holds(c <= spec.max, c)))
        if spec.min is not None:
            out.append(("min", holds(c >= spec.min, c)))
        if spec.max_relative is not None:
            k = spec.max_relative
            ok = c <= b * k if lower else c >= b / k
            out.append(("max_relative", holds(ok, c, b)))
        if spec.max_increase is not None:
            d = spec.max_increase
            ok = c <= b + d if lower else c >= b - d
            out.append(("max_increase", holds(ok, c, b)))
    return out


def measure(canary: ArrayLike, baseline: ArrayLike, spec: MetricSpec) -> NDArray[np.int8]:
    """Classify measurements (any shape): SUCCESS, FAILURE or ERROR (no canary value, or
    no baseline for a condition that needs one and nothing else decides)."""
    c = np.asarray(canary, dtype=np.float64)
    b = np.broadcast_to(np.asarray(baseline, dtype=np.float64), c.shape)
    c = np.where(np.isfinite(c), c, np.nan)
    b = np.where(np.isfinite(b), b, np.nan)
    conds = np.stack([v for _, v in _conditions(c, b, spec)])
    unknown = np.isnan(conds).any(axis=0)
    if spec.combine == "all":
        broken = (conds == 0).any(axis=0)
        code = np.where(broken, FAILURE, np.where(unknown, ERROR, SUCCESS))
    else:
        held = (conds == 1).any(axis=0)
        code = np.where(held, SUCCESS, np.where(unknown, ERROR, FAILURE))
    return np.where(np.isnan(c), ERROR, code).astype(np.int8)


def step(failures: ArrayLike, successes: ArrayLike, consecutive_errors: ArrayLike,
         outcome: ArrayLike, spec: MetricSpec
         ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64], NDArray[np.int8]]:
    """Fold one measurement into the counts; return them and the verdict code."""
    o = np.asarray(outcome)
    f = np.asarray(failures) + (o == FAILURE)
    s = np.asarray(successes) + (o == SUCCESS)
    ce = np.where(o == ERROR, np.asarray(consecutive_errors) + 1, 0)
    code = np.where(
        f > spec.failure_limit, CODE_FAIL,
        np.where((ce > spec.consecutive_error_limit) | (s + f == 0),
                 CODE_INCONCLUSIVE, CODE_PASS))
    return f, s, ce, code.astype(np.int8)


def _mean(values: tuple[float | None, ...]) -> float | None:
    xs = finite(values)
    return sum(xs) / len(xs) if xs else None


def _describe(c: float, b: float | None, spec: MetricSpec, name: str, held: bool) -> str:
    u, lower = spec.unit, spec.direction is Direction.LOWER
    if name == "max":
        return (f"≤ max {fmt_value(spec.max, u)}" if held
                else f"{fmt_value(c, u)} > max {fmt_value(spec.max, u)}")
    if name == "min":
        return (f"≥ min {fmt_value(spec.min, u)}" if held
                else f"{fmt_value(c, u)} < min {fmt_value(spec.min, u)}")
    assert b is not None
    if name == "max_relative":
        k = spec.max_relative or 1.0
        ratio = f"{c / b:.2f}×" if b else "∞×" if c else "1×"
        limit = f"{k:g}×" if lower else f"1/{k:g}×"
        return (f"within {limit} baseline ({ratio})" if held
                else f"{ratio} baseline, beyond allowed {limit}")
    d = spec.max_increase or 0.0
    delta, allowed = c - b, fmt_delta(d if lower else -d, u)
    word = "within" if held else (">" if lower else "<")
    return f"{fmt_delta(delta, u)} {word} allowed {allowed}"


def evaluate(spec: MetricSpec, series: MetricSeries | None,
             state: ThresholdState | None = None) -> tuple[MetricResult, ThresholdState]:
    """One check of one metric: classify the measurement, update the counts, explain."""
    state = state or ThresholdState()
    c = _mean(series.canary) if series is not None else None
    b = _mean(series.baseline) if series is not None else None
    outcome = int(measure(np.nan if c is None else c, np.nan if b is None else b, spec))
    f, s, ce, code = step(state.failures, state.successes, state.consecutive_errors,
                          outcome, spec)
    new = ThresholdState(measurements=state.measurements + 1, successes=int(s),
                         failures=int(f), errors=state.errors + (outcome == ERROR),
                         consecutive_errors=int(ce), failed=int(code) == CODE_FAIL)
    verdict, final = verdict_of(int(code))
    u, t = spec.unit, spec.title
    head = f"{t} {fmt_value(c, u)} vs {fmt_value(b, u)}" if c is not None else t

    if outcome == ERROR:
        what = ("no data for the canary" if series is None or c is None
                else "no baseline data to compare with")
        detail = (f"{what} ({new.consecutive_errors} in a row, "
                  f"{spec.consecutive_error_limit} tolerated)")
    else:
        arr_c, arr_b = np.array([c], float), np.array([np.nan if b is None else b], float)
        conds = _conditions(arr_c, arr_b, spec)
        held = [(n, v[0] == 1) for n, v in conds if not np.isnan(v[0])]
        show = [(n, h) for n, h in held if h == (outcome == SUCCESS)] or held
        detail = "; ".join(_describe(c or 0.0, b, spec, n, h) for n, h in show)
    tally = ""
    if new.failures:
        plural = "s" if new.failures > 1 else ""
        tally = f" ({new.failures} failed measurement{plural}, {spec.failure_limit} tolerated)"

    if verdict is Verdict.FAIL and outcome != FAILURE:
        sentence = f"{head} — fails: earlier failures exceeded the limit{tally}; now {detail}"
    elif verdict is Verdict.FAIL:
        sentence = f"{head} — fails: {detail}{tally}"
    elif verdict is Verdict.INCONCLUSIVE:
        sentence = f"{head} — inconclusive: {detail}"
    elif outcome == FAILURE:
        sentence = f"{head} — passes for now: this measurement failed, {detail}{tally}"
    elif outcome == ERROR:
        sentence = f"{head} — passes for now: earlier measurements passed; {detail}"
    else:
        sentence = f"{head} — passes: {detail}{tally}"
    result = MetricResult(
        name=spec.name, judge=JudgeKind.THRESHOLD, verdict=verdict, explanation=sentence,
        canary_value=c, baseline_value=b, critical=spec.is_critical, weight=spec.weight,
        final=final)
    return result, new

