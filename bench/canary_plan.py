"""The canary judges on the engine's query path over the whole step plan (run by hand).

    .venv/bin/python bench/canary_judges.py --plan [--plan-seeds 200]

Each canary walks the default plan (5 / 25 / 50 / 100 %, a 2-minute step, a check every
30 s) the way ``progressive._bake`` does: the engine's own ``measure()`` sends its PromQL
to a simulated Prometheus that answers from per-second counters, ``judge()`` decides, and
the engine's step rules apply (warm-up, evidence carried across steps, sparse steps
extended or carried). The baseline's counters start a day old; the canary's at 0. A pause
counts apart: nobody answers it in the bench, so it would end in a rollback after the
pause timeout (1 h). Times are minutes from the first analysed step's start.

The module runs against older engines too (features are looked up, not assumed), so the
same command gives a before/after comparison of the engine itself.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from canary_sim import BOUNDS, _bucket_probs, _lognormal_cdf

import bot.engine.analysis as analysis_pkg
from bot.config_delivery import AnalysisConfig, StrategyConfig
from bot.engine.analysis import Verdict, judge
from bot.engine.measure import measure
from bot.engine.plan import plan
from bot.store.models import Deployment
from integrations.metrics import CumulativeCounters, Sample
from integrations.promql import render_query

try:  # absent before the warm-up / sparse rules existed
    from bot.engine import bake_rules
except ImportError:  # pragma: no cover - older engines
    bake_rules = None  # type: ignore[assignment]

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
AGE = 86_400.0  # the baseline's pods have served for a day
CHECK, STEP = 30, 120
HORIZON = 60 * 60
TimeFn = Callable[[float], float]
SEL = 'service="{service}",track="{track}"'
QUERIES = {
    "requests": f"sum(http_requests_total{{{SEL}}})",
    "errors": f'sum(http_requests_total{{{SEL},code=~"5.."}})',
    "buckets": f"sum by (le) (http_request_duration_seconds_bucket{{{SEL}}})",
    "ratio": f"error_ratio{{{SEL}}}[{{window}}]",
    "p99": f"p99{{{SEL}}}[{{window}}]",
}


@dataclass(frozen=True)
class PlanScenario:
    name: str
    healthy: bool
    rps: float = 200.0
    base_error: float = 0.001
    canary_error: TimeFn | float = 0.001  # of the time since the first step started
    canary_latency: TimeFn | float = 1.0
    tail_fraction: float = 0.0
    noise: float = 0.0
    median: float = 0.05
    sigma: float = 0.5


def _at(x: TimeFn | float, t: float) -> float:
    return float(x(t)) if callable(x) else float(x)


def decay(seconds: float, start: float) -> TimeFn:
    """A start-up transient: ``start`` times slower at first, linearly back to 1."""
    return lambda t: 1 + (start - 1) * max(0.0, 1 - t / seconds)


PLAN_SCENARIOS: tuple[PlanScenario, ...] = (
    PlanScenario("steady, day-old baseline", True),
    PlanScenario("noisy traffic", True, noise=0.5),
    PlanScenario("warm-up: 1.6x slower 1st min", True,
                 canary_latency=lambda t: 1.6 if t < 60 else 1.0),
    PlanScenario("warm-up: 2x -> 1x over 3 min", True, canary_latency=decay(180, 2.0)),
    PlanScenario("sparse: 2 rps, 1% errors", True, rps=2.0, base_error=0.01,
                 canary_error=0.01),
    PlanScenario("busy: 50 rps, 1% errors", True, rps=50.0, base_error=0.01,
                 canary_error=0.01),
    PlanScenario("errors 0.1% -> 5%", False, canary_error=0.05),
    PlanScenario("median latency x1.2", False, canary_latency=1.2),
    PlanScenario("2% of requests +400 ms", False, tail_fraction=0.02),
    PlanScenario("errors 1% -> 1.25%, 50 rps", False, rps=50.0, base_error=0.01,
                 canary_error=0.0125),
    PlanScenario("errors 1% -> 1.6%, 50 rps", False, rps=50.0, base_error=0.01,
                 canary_error=0.016),
    PlanScenario("sparse: 2 rps, errors 1% -> 5%", False, rps=2.0, base_error=0.01,
                 canary_error=0.05),
)


def _probs(sc: PlanScenario, multiplier: float, tail: float) -> np.ndarray:
    can = _lognormal_cdf(BOUNDS, sc.median * multiplier, sc.sigma)
    if tail:
        shifted = np.clip(BOUNDS - 0.4, 1e-12, None)
        late = np.where(BOUNDS > 0.4, _lognormal_cdf(shifted, sc.median * multiplier, sc.sigma),
                        0.0)
        can = (1 - tail) * can + tail * late
    return np.asarray(_bucket_probs(can[None, :])[0])


class SimPrometheus(CumulativeCounters):
    """Per-second counters of both tracks, grown as the rollout advances; answers the
    engine's instant, bucket and range queries like Prometheus would."""

    render_query = staticmethod(render_query)

    def __init__(self, sc: PlanScenario, seed: int) -> None:
        self.sc, self.rng = sc, np.random.default_rng(seed)
        k = BOUNDS.size + 1
        base = sc.rps * AGE
        self.cum = {"baseline": [np.concatenate([[base, base * sc.base_error],
                                                 base * _probs(sc, 1.0, 0.0)])],
                    "canary": [np.zeros(2 + k)]}
        self.weight = 0.0

    def advance(self, until: int) -> None:
        sc, rng = self.sc, self.rng
        while len(self.cum["canary"]) <= until:
            t = float(len(self.cum["canary"]) - 1)
            noise = rng.lognormal(-sc.noise ** 2 / 2, sc.noise) if sc.noise else 1.0
            for track, w in (("canary", self.weight), ("baseline", 1 - self.weight)):
                canary = track == "canary"
                n = rng.poisson(sc.rps * w * noise)
                p = _at(sc.canary_error, t) if canary else sc.base_error
                probs = _probs(sc, _at(sc.canary_latency, t), sc.tail_fraction) if canary \
                    else _probs(sc, 1.0, 0.0)
                row = np.concatenate([[n, rng.binomial(n, min(p, 1.0))],
                                      rng.multinomial(n, probs)])
                self.cum[track].append(self.cum[track][-1] + row)

    def _row(self, query: str, at: datetime) -> tuple[str, np.ndarray]:
        track = "canary" if 'track="canary"' in query else "baseline"
        i = int((at - T0).total_seconds())
        self.advance(i)
        return track, self.cum[track][i]

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        _, row = self._row(query, at or T0)
        return float(row[1] if 'code=~"5.."' in query else row[0])

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        _, row = self._row(query, at or T0)
        cum = np.cumsum(row[2:])
        return {**{float(b): float(c) for b, c in zip(BOUNDS, cum[:-1], strict=True)},
                math.inf: float(cum[-1])}

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> list[Any]:
        out = []
        t = start
        while t <= end:
            _, now = self._row(query, t)
            _, then = self._row(query, max(T0, t - timedelta(seconds=60)))
            d = now - then
            if query.startswith("error_ratio"):
                value = d[1] / d[0] if d[0] else math.nan
            else:
                cum = np.cumsum(d[2:])
                from bot.engine.analysis.model import histogram_quantile
                value = float(histogram_quantile(0.99, BOUNDS, cum)) if cum[-1] else math.nan
            out.append(Sample(t, value))
            t += timedelta(seconds=step)
        return out


JUDGES: dict[str, list[dict[str, Any]]] = {
    "sequential": [
        {"name": "errors", "label": "error rate", "unit": "ratio", "judge": "sequential",
         "requests_query": QUERIES["requests"], "errors_query": QUERIES["errors"]},
        {"name": "latency", "label": "latency", "unit": "seconds", "judge": "sequential",
         "histogram_query": QUERIES["buckets"]},
    ],
    "threshold": [  # the README's example, and a p99 limit beside it
        {"name": "errors", "label": "error rate", "unit": "ratio", "judge": "threshold",
         "query": QUERIES["ratio"], "max_increase": 0.005},
        {"name": "latency", "label": "p99", "unit": "seconds", "judge": "threshold",
         "query": QUERIES["p99"], "max_relative": 1.2, "failure_limit": 1},
    ],
}


def _analysis(metrics: list[dict[str, Any]]) -> AnalysisConfig:
    return AnalysisConfig.model_validate({"window": "1m", "resolution": "10s",
                                          "check_every": f"{CHECK}s", "metrics": metrics})


def _dep() -> Deployment:
    return Deployment(request_key="bench", service="api", env="production", version="2.0.0",
                      previous_version="1.0.0", requester="U1", state="verifying",
                      channel="#c", created_at=T0, updated_at=T0)


@dataclass
class Outcome:
    result: str  # rolled_back | promoted | paused
    minutes: float


def _judge(specs: Any, series: Any, state: Any, analysis: AnalysisConfig) -> Any:
    extra = {"mode": analysis.mode} if "mode" in inspect.signature(judge).parameters else {}
    return judge(specs, series, state, pass_score=analysis.pass_score,
                 marginal_score=analysis.marginal_score, **extra)


async def run_canary(sc: PlanScenario, name: str, seed: int) -> Outcome:
    """One canary through the plan, as ``progressive._bake`` walks it."""
    analysis = _analysis(JUDGES[name])
    stages = plan(StrategyConfig(kind="canary", steps=[5, 25, 50, 100],
                                 interval=timedelta(seconds=STEP), analysis=analysis))
    prom, dep, state = SimPrometheus(sc, seed), _dep(), None
    pooled = hasattr(analysis_pkg, "carry_over")
    warm_arg = "warmup" in inspect.signature(measure).parameters
    warm = bake_rules.warmup(analysis, T0, stages) if bake_rules else None
    now = T0
    for index, stage in enumerate(stages):
        if stage.kind == "weight":
            prom.weight = (stage.weight or 0) / 100
            continue
        if stage.kind != "bake":
            continue
        started, ends = now, now + timedelta(seconds=STEP)
        while True:
            now += timedelta(seconds=CHECK)
            kw = {"warmup": warm} if warm_arg else {}
            series = await measure(prom, analysis, dep, started, now, **kw)  # type: ignore[arg-type]
            verdict, state = _judge(analysis.metrics, series, state, analysis)
            minutes = (now - T0).total_seconds() / 60
            if verdict.verdict is Verdict.FAIL:
                return Outcome("rolled_back", minutes)
            sparse = bake_rules.sparse(analysis, verdict, series, stages, index, now=now,
                                       since=started, ends=ends, warm=warm) \
                if bake_rules and now >= ends else None
            if sparse is not None and sparse.action == "extend":
                continue
            if sparse is not None and sparse.action == "advance":
                break
            if now >= ends or verdict.final:
                if verdict.verdict is not Verdict.PASS:
                    return Outcome("paused", minutes)
                break
        state = analysis_pkg.carry_over(state) if pooled and state else None
        if (now - T0).total_seconds() > HORIZON:
            return Outcome("paused", (now - T0).total_seconds() / 60)
    return Outcome("promoted", (now - T0).total_seconds() / 60)


@dataclass
class PlanRow:
    scenario: PlanScenario
    judge: str
    rolled_back: float
    paused: float
    promoted: float
    median_rollback: float
    median_promote: float


def run_plan(seeds: int, only: str = "") -> list[PlanRow]:
    rows = []
    for k, sc in enumerate(PLAN_SCENARIOS):
        if only not in sc.name:
            continue
        for name in JUDGES:
            outs = [asyncio.run(run_canary(sc, name, 7000 + 1000 * k + s)) for s in range(seeds)]
            def share(r: str, outs: list[Outcome] = outs) -> float:
                return sum(o.result == r for o in outs) / len(outs)
            def med(r: str, outs: list[Outcome] = outs) -> float:
                xs = [o.minutes for o in outs if o.result == r]
                return float(np.median(xs)) if xs else math.nan
            rows.append(PlanRow(sc, name, share("rolled_back"), share("paused"),
                                share("promoted"), med("rolled_back"), med("promoted")))
    return rows


def print_plan(rows: list[PlanRow], seeds: int) -> None:
    def m(x: float) -> str:
        return "-" if not math.isfinite(x) else f"{x:.1f}"

    print(f"\nEngine path, whole plan 5/25/50/100 % (2-min steps, a check every 30 s), "
          f"{seeds} seeds; minutes from the first analysed step")
    print(f"{'scenario':34} {'judge':11} {'healthy':>7} {'rolled back':>11} {'paused':>7} "
          f"{'promoted':>8} {'min to roll back':>16} {'min to promote':>14}")
    for r in rows:
        print(f"{r.scenario.name:34} {r.judge:11} {'yes' if r.scenario.healthy else 'no':>7} "
              f"{r.rolled_back:>11.1%} {r.paused:>7.1%} {r.promoted:>8.1%} "
              f"{m(r.median_rollback):>16} {m(r.median_promote):>14}")
