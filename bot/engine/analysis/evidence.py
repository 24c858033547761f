"""What the sequential evidence can support: its size with a confidence interval, how
much traffic a clear regression needs to show, and what a new step carries over.

Why: on a busy service a small shift is only visible over the whole rollout, and the
on-call needs its size, not just an e-value; on a sparse one the question is how long
the data will take, so the engine can wait for it instead of pausing for a human.
"""

from __future__ import annotations

import math

from bot.engine.analysis.model import SequentialState

Z95 = 1.959964
DETECT_RATIO = 5.0  # the rise "how long would it take" is about
EFFECTS_COUNT = 20  # alternatives in the sequential mixture (sequential.EFFECTS)


def pp(x: float) -> str:
    """A difference of rates in percentage points: ``+0.24``, ``-0.05`` (a minus sign)."""
    return f"{'+' if x >= 0 else '−'}{abs(100 * x):.2f}"


def wilson(events: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (sound for 0 events, unlike Wald)."""
    if total <= 0:
        return 0.0, 1.0
    p = events / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    return max(0.0, centre - half), centre + half  # never above 1 (the score bound)


def rate_difference(canary: tuple[int, int], baseline: tuple[int, int]
                    ) -> tuple[float, float, float] | None:
    """(canary - baseline rate, 95 % CI low, high) from (events, requests) of each track,
    Newcombe's hybrid score interval; None without requests on a side."""
    (ec, nc), (eb, nb) = canary, baseline
    if nc <= 0 or nb <= 0:
        return None
    pc, pb = ec / nc, eb / nb
    lc, uc = wilson(ec, nc)
    lb, ub = wilson(eb, nb)
    d = pc - pb
    return d, d - math.hypot(pc - lc, ub - pb), d + math.hypot(uc - pc, pb - lb)


def detect_requests(rate: float, share: float, alpha: float,
                    ratio: float = DETECT_RATIO) -> int | None:
    """Canary requests, in all, for a ``ratio``-fold rise of a per-request rate ``rate``
    (errors, or requests slower than a boundary) to reach the fail bar in expectation,
    with the canary taking ``share`` of the requests. None when nothing can tell."""
    if not 0 < share < 1 or rate <= 0:
        return None
    q0 = share
    q1 = share * ratio / (share * ratio + 1 - share)
    kl = q1 * math.log(q1 / q0) + (1 - q1) * math.log((1 - q1) / (1 - q0))
    events_per_request = min(rate * ratio, 1.0) + rate * (1 - share) / share
    need = (math.log(1 / alpha) + math.log(EFFECTS_COUNT)) / (kl * events_per_request)
    return math.ceil(need)


def carried(st: SequentialState) -> SequentialState:
    """The evidence against "not worse" and the requests judged go on; the counters are
    anchored afresh at the new step's start and the early-pass evidence restarts."""
    zeros = tuple(tuple(0.0 for _ in row) for row in st.pass_llr)
    decided = st.decided if st.decided is not None and st.decided.value == "fail" else None
    return st.model_copy(update={"last_canary": (), "last_baseline": (), "pass_llr": zeros,
                                 "decided": decided})


def size_and_pace(st: SequentialState, alpha: float, min_requests: int
                  ) -> tuple[tuple[float, float, float] | None, int | None, int | None]:
    """(error-rate difference with its CI, canary requests still needed before a pass,
    canary requests in all for a 5x rise to show) from the evidence so far. The rise is
    of the error rate (counts) or of the share of requests slower than the boundary
    nearest the baseline's p99 (latency)."""
    sc, sb = st.seen_canary, st.seen_baseline
    if not sc:  # set together with seen_baseline by the first check with evidence
        return None, None, None
    size = rate_difference((sc[1], sc[0]), (sb[1], sb[0])) if st.test == "counts" else None
    needed = max(min_requests - sc[0], 0) or None
    if sb[0] <= 0:
        return size, needed, None
    rates = [(e + 0.5) / (sb[0] + 1) for e in sb[1:]]
    rate = min(rates, key=lambda r: abs(r - 0.01))  # counts: the one error rate
    return size, needed, detect_requests(rate, sc[0] / (sc[0] + sb[0]), alpha)


def _per_bucket(cumulative: dict[float, int]) -> list[int]:
    counts, below = [], 0
    for le in sorted(cumulative):
        counts.append(max(cumulative[le] - below, 0))
        below = max(cumulative[le], below)
    return counts


def slowdown_z(early: dict[float, int], total: dict[float, int]) -> float | None:
    """How much slower the first half of the interval (``early``) was than the second
    (``total - early``): the z of a one-sided Mann-Whitney test on the binned latencies of
    the two halves (ties by bucket, no continuity correction). None without data."""
    if sorted(early) != sorted(total):
        return None
    first = _per_bucket(early)
    second = [max(t - e, 0) for t, e in zip(_per_bucket(total), first, strict=True)]
    n1, n2 = sum(first), sum(second)
    n = n1 + n2
    if n1 <= 0 or n2 <= 0:
        return None
    u, below = 0.0, 0
    for a, b in zip(first, second, strict=True):  # first-half requests slower than second
        u += a * (below + b / 2)
        below += b
    ties = sum((a + b) ** 3 - (a + b) for a, b in zip(first, second, strict=True))
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    return (u - n1 * n2 / 2) / math.sqrt(var) if var > 0 else None


def improving(early: dict[float, int], total: dict[float, int], z: float = 1.0) -> bool:
    """Whether the canary got faster from the first half of the interval to the second: a
    cold start, not a regression. One-sided at z >= 1: a hint is enough, as holding a
    latency verdict in the warm-up costs a check and a false rollback costs a rollout."""
    found = slowdown_z(early, total)
    return found is not None and found >= z
