"""Canary traffic simulator for ``bench/canary_judges.py``.

Every 10-second interval of a canary analysis, per seed, vectorised over seeds: Poisson
request counts on a traffic split (canary weight 5-25 %), binomial error counts, and
Prometheus-style latency histograms drawn from lognormal latencies (multinomial over the
buckets). Scenarios change the canary (error rate, latency shape, warm-up) or the
baseline (a slow pod, noise) as functions of time; ``harm`` is the expected number of
canary requests hurt by the regression, to count bad requests served before a decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import stats

INTERVAL = 10.0  # seconds between checks
DURATION = 600.0  # fixed analysis window
BOUNDS = np.array([0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                   1.0, 2.5, 5.0, 10.0])  # histogram ``le`` buckets in seconds (+Inf implied)
WARMUP = 60.0  # latency data of the first minute is ignored by every judge

Array = NDArray[np.float64]
TimeFn = Callable[[Array], Array]


def at(x: TimeFn | float, t: Array) -> Array:
    """A scenario parameter at times t: constant or a function of time."""
    return np.asarray(x(t), dtype=np.float64) if callable(x) else np.full_like(t, x)


@dataclass(frozen=True)
class Scenario:
    name: str
    healthy: bool
    rps: float = 200.0  # total requests per second, baseline + canary
    base_error: float = 0.001
    canary_error: TimeFn | float = 0.001  # canary error probability at time t
    median: float = 0.05  # seconds
    sigma: float = 0.5  # lognormal shape
    canary_latency: TimeFn | float = 1.0  # multiplier of the canary's latency at time t
    tail_fraction: float = 0.0  # canary requests that get ``tail_extra`` seconds more
    tail_extra: float = 0.4
    slow_pod: float = 0.0  # share of baseline traffic on a slow pod
    slow_pod_latency: float = 2.0
    slow_pod_error: float = 3.0
    noise: float = 0.0  # lognormal sigma of per-interval traffic/error multipliers (shared)
    fast_errors: bool = False  # canary errors return in < 5 ms
    harm: str = "errors"  # errors | latency | tail | none


@dataclass(frozen=True)
class Traffic:
    """Per seed (S) and interval (T); histograms are per bucket (K = bounds + 1, +Inf last),
    not cumulative."""

    weight: Array  # (S,)
    canary_requests: NDArray[np.int64]  # (S, T)
    canary_errors: NDArray[np.int64]
    baseline_requests: NDArray[np.int64]
    baseline_errors: NDArray[np.int64]
    canary_buckets: NDArray[np.int64]  # (S, T, K)
    baseline_buckets: NDArray[np.int64]
    harm: Array  # (S, T) expected canary requests hurt by the regression


def ramp(start: float, end: float, lo: float, hi: float) -> TimeFn:
    return lambda t: lo + (hi - lo) * np.clip((t - start) / (end - start), 0, 1)


def step_until(until: float, during: float, after: float) -> TimeFn:
    return lambda t: np.where(t <= until, during, after)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("steady", True),
    Scenario("very low traffic (2 rps)", True, rps=2.0),
    Scenario("1% errors, 20 rps", True, rps=20.0, base_error=0.01, canary_error=0.01),
    Scenario("noisy baseline + slow pod", True, noise=0.5, slow_pod=0.2),
    Scenario("warm-up: canary 1.6x slower 1st min", True,
             canary_latency=step_until(WARMUP, 1.6, 1.0)),
    Scenario("improvement", True, canary_error=0.0005, canary_latency=0.8),
    Scenario("errors 0.1% -> 5%", False, canary_error=0.05),
    Scenario("errors 0.1% -> 0.3%", False, canary_error=0.003),
    Scenario("errors 1% -> 1.25%, 20 rps", False, rps=20.0, base_error=0.01,
             canary_error=0.0125),
    Scenario("median latency x1.2", False, canary_latency=1.2, harm="latency"),
    Scenario("2% of requests +400 ms", False, tail_fraction=0.02, harm="tail"),
    Scenario("errors ramp 0.1% -> 2% after 5 min", False,
             canary_error=ramp(300.0, DURATION, 0.001, 0.02)),
    Scenario("fast-failing errors 2%", False, canary_error=0.02, fast_errors=True),
)


def _lognormal_cdf(bounds: Array, median: Array | float, sigma: float) -> Array:
    with np.errstate(divide="ignore"):
        return stats.norm.cdf((np.log(bounds) - np.log(median)) / sigma)


def _bucket_probs(cdf: Array) -> Array:
    """CDF at the bounds (..., B) -> probability per bucket (..., B + 1)."""
    full = np.concatenate([cdf, np.ones((*cdf.shape[:-1], 1))], axis=-1)
    return np.diff(full, prepend=0.0, axis=-1).clip(0, 1)


def latency_probs(sc: Scenario, t: Array) -> tuple[Array, Array]:
    """Bucket probabilities: canary (T, K) over time, baseline (K,)."""
    base = (1 - sc.slow_pod) * _lognormal_cdf(BOUNDS, sc.median, sc.sigma)
    if sc.slow_pod:
        base += sc.slow_pod * _lognormal_cdf(BOUNDS, sc.median * sc.slow_pod_latency, sc.sigma)
    med = sc.median * at(sc.canary_latency, t)[:, None]
    can = _lognormal_cdf(BOUNDS[None, :], med, sc.sigma)
    if sc.tail_fraction:
        shifted = np.clip(BOUNDS - sc.tail_extra, 1e-12, None)
        tail = np.where(BOUNDS > sc.tail_extra, _lognormal_cdf(shifted, med, sc.sigma), 0.0)
        can = (1 - sc.tail_fraction) * can + sc.tail_fraction * tail
    return _bucket_probs(can), _bucket_probs(base)


def simulate(sc: Scenario, seeds: int, seed: int = 0) -> Traffic:
    rng = np.random.default_rng(seed)
    t = INTERVAL * np.arange(1, int(DURATION / INTERVAL) + 1)  # end of each interval
    n_t = t.size
    weight = rng.uniform(0.05, 0.25, seeds)
    if sc.noise:
        s = sc.noise
        traffic_noise = rng.lognormal(-s * s / 2, s, (seeds, n_t))
        error_noise = rng.lognormal(-s * s / 2, s, (seeds, n_t))
    else:
        traffic_noise = error_noise = np.ones((seeds, n_t))
    lam = sc.rps * INTERVAL * traffic_noise
    cr = rng.poisson(lam * weight[:, None])
    br = rng.poisson(lam * (1 - weight[:, None]))
    base_p = sc.base_error * ((1 - sc.slow_pod) + sc.slow_pod * sc.slow_pod_error)
    can_p = at(sc.canary_error, t)[None, :]
    ce = rng.binomial(cr, np.clip(can_p * error_noise, 0, 1))
    be = rng.binomial(br, np.clip(base_p * error_noise, 0, 1))
    pc, pb = latency_probs(sc, t)
    k = BOUNDS.size + 1
    if sc.fast_errors:
        ch = rng.multinomial(cr - ce, np.broadcast_to(pc, (seeds, n_t, k)))
        ch[..., 0] += ce
    else:
        ch = rng.multinomial(cr, np.broadcast_to(pc, (seeds, n_t, k)))
    bh = rng.multinomial(br, np.broadcast_to(pb, (seeds, n_t, k)))
    if sc.harm == "errors":
        harm = cr * np.clip(can_p - sc.base_error, 0, None)
    elif sc.harm == "latency":
        harm = cr * (at(sc.canary_latency, t)[None, :] > 1)
    elif sc.harm == "tail":
        harm = cr * sc.tail_fraction
    else:
        harm = np.zeros_like(cr, dtype=np.float64)
    return Traffic(weight, cr, ce, br, be, ch, bh, harm.astype(np.float64))
