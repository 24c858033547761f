"""How one replica's engine copes with many deployments at once (run by hand; not a test).

    PYTHONPATH=. .venv/bin/python bench/engine_load.py [--services 200] [--slow 10]
        [--flaky 10] [--bad-every 7] [--db sqlite|postgres]

Starts the whole bot (LocalBot: the runner, the notifier posting to the fake Slack, the
scheduler) on ``--services`` services, a third each rolling, canary (50 % → 100 %, a 4 s
step judged every 2 s) and blue-green (3 s rollback window), and gives every service one
deployment at once. Every deployment first passes an HTTP check (``checks``, 2 s timeout,
3 retries 1 s apart); the canaries are judged against a real Prometheus (the sequential
test on request and error counters, and a threshold on the error rate) that scrapes
``bench/load_traffic.py``: 1 % errors on both tracks, 8 % on the canary of every
``--bad-every``-th canary, which must be rolled back (and nothing else). Their deploy
target is in memory: a deploy takes 3 s, a traffic change 0.3 s, so the engine's own
work is what is measured. ``--slow`` services have a target whose every answer takes 30 s
(a provider that hangs) and ``--flaky`` services a health check whose first two attempts
time out (a slow check with retries, ~6 s): neither may hold up the others.

Prints the runner's lag (a step's due time → the step starting) as percentiles, steps
per second, each deployment's time beyond its own waits (request → done, minus the 3 s
deploy, the strategy's waits and a flaky check's), the outcomes, and the process's peak
RSS. The baseline in the same run is one good canary alone (nothing competing).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import col, select

from bench.load_traffic import World, running_world
from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from bot.engine.machine import IN_FLIGHT, State
from bot.store.models import Deployment
from integrations.base import JobSpec, RunState, RunStatus

DEPLOY_SECONDS, TRAFFIC_SECONDS, SLOW_ANSWER_SECONDS = 3.0, 0.3, 30.0
FLAKY_CHECK_SECONDS = 6.0  # two 2 s timeouts, two 1 s pauses, then a pass
STRATEGY_SECONDS = {"rolling": 0.0, "canary": 4.0, "blue-green": 3.0}  # waits by design
KINDS = ("rolling", "canary", "blue-green")
DEADLINE = 600.0  # seconds; what is still under way then is reported as such
SELECTOR = 'service="{service}",track="{track}"'


@dataclass(frozen=True)
class Spec:
    """One service of the load: its strategy and how it misbehaves, if it does."""

    name: str
    kind: str
    slow: bool = False  # a target whose every answer takes 30 s
    flaky: bool = False  # a health check that times out twice
    bad: bool = False  # a canary with 8 % errors

    @property
    def own_waits(self) -> float:
        return DEPLOY_SECONDS + STRATEGY_SECONDS[self.kind] + FLAKY_CHECK_SECONDS * self.flaky


def load_specs(services: int, slow: int, flaky: int, bad_every: int) -> list[Spec]:
    """Slow targets last; flaky checks spread over the rest; every ``bad_every``-th
    canary (of the others) bad."""
    specs, canaries = [], 0
    flaky_every = max(1, (services - slow) // max(flaky, 1))
    for i in range(services):
        kind, is_slow = KINDS[i % 3], i >= services - slow
        is_flaky = not is_slow and flaky > 0 and i % flaky_every == flaky_every // 2 \
            and i // flaky_every < flaky
        plain = kind == "canary" and not is_slow and not is_flaky
        canaries += plain
        specs.append(Spec(f"svc{i}", kind, is_slow, is_flaky,
                          bad=plain and bad_every > 0 and canaries % bad_every == 0))
    return specs


class TimedTarget:
    """Every run ends after a fixed time; ``answer_seconds`` delays every answer."""

    def __init__(self, answer_seconds: float = 0.0) -> None:
        self.answer_seconds = answer_seconds
        self.runs: dict[str, tuple[float, float]] = {}  # run id -> (started, seconds)

    async def _start(self, job: JobSpec, what: str, seconds: float) -> str:
        await asyncio.sleep(self.answer_seconds)
        run_id = f"{what}-{job.key}"
        self.runs.setdefault(run_id, (time.monotonic(), seconds))
        return run_id

    async def start(self, job: JobSpec) -> str:
        return await self._start(job, "deploy", DEPLOY_SECONDS)

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        return await self._start(job, f"weight{weight}", TRAFFIC_SECONDS)

    async def promote(self, job: JobSpec) -> str:
        return await self._start(job, "promote", TRAFFIC_SECONDS)

    async def abort(self, job: JobSpec) -> str:
        return await self._start(job, "abort", TRAFFIC_SECONDS)

    async def poll(self, run_id: str) -> RunStatus:
        await asyncio.sleep(self.answer_seconds)
        started, seconds = self.runs[run_id]
        done = time.monotonic() - started >= seconds
        return RunStatus(state=RunState.SUCCEEDED if done else RunState.RUNNING)

    async def cancel(self, run_id: str) -> None:
        return None


def strategy(kind: str, world: World) -> dict[str, Any]:
    check = {"name": "health", "url": f"{world.traffic_url}/healthz/{{service}}",
             "body_contains": "ok", "timeout_seconds": 2, "retries": 3,
             "retry_interval_seconds": 1}
    errors = {"name": "errors", "label": "error rate", "unit": "ratio", "judge": "sequential",
              "requests_query": f"sum(http_requests_total{{{SELECTOR}}})",
              "errors_query": f'sum(http_requests_total{{{SELECTOR},code=~"5.."}})',
              "min_requests": 150}
    rate = {"name": "error_rate", "label": "error rate (rate)", "unit": "ratio",
            "judge": "threshold", "max_increase": 0.02,
            "query": f'sum(rate(http_requests_total{{{SELECTOR},code=~"5.."}}[{{window}}])) / '
                     f"sum(rate(http_requests_total{{{SELECTOR}}}[{{window}}]))"}
    return {
        "rolling": {"kind": "rolling", "checks": [check]},
        "canary": {"kind": "canary", "steps": [50, 100], "interval": "4s", "checks": [check],
                   "analysis": {"window": "5s", "resolution": "1s", "check_every": "2s",
                                "warmup": "0s", "metrics": [errors, rate]}},
        "blue-green": {"kind": "blue-green", "rollback_window": "3s", "checks": [check]},
    }[kind]


def service(name: str, strategy: dict[str, Any]) -> dict[str, Any]:
    """A service's config: its own channel, a target that can shift traffic."""
    argv = [sys.executable, "-c", "pass"]  # replaced by TimedTarget after start
    deploy: dict[str, Any] = {"provider": "command", "argv": argv, "set_weight_argv": argv,
                              "promote_argv": argv, "abort_argv": argv}
    return {"channel": f"#deploys-{name}", "deploy": deploy, "strategy": strategy}


def config(specs: list[Spec], world: World) -> ShipbotConfig:
    return parse_config({
        "poll_interval_seconds": 1,
        "environments": {"staging": {}},
        "metrics": {"provider": "prometheus", "url": world.prometheus_url},
        "services": {s.name: service(s.name, strategy(s.kind, world)) for s in specs},
    })


def install_targets(bot: LocalBot, slow: set[str]) -> None:
    """Every service's target and traffic router in memory (``slow`` ones answer late)."""
    for name, providers in bot.bot.providers.items():
        target = TimedTarget(SLOW_ANSWER_SECONDS if name in slow else 0.0)
        object.__setattr__(providers, "target", target)
        object.__setattr__(providers, "traffic", target)


async def queue(bot: LocalBot, specs: list[Spec], env: str = "staging") -> None:
    """One deployment of each of ``specs``, queued and due now, as if just approved."""
    now = bot.clock()
    async with bot.bot.sessions() as session:
        for i, spec in enumerate(specs):
            session.add(Deployment(
                request_key=f"load-{i}", service=spec.name, env=env,
                version="v2", previous_version="v1", requester="U0LOAD",
                state=State.QUEUED, strategy=spec.kind, channel=f"#deploys-{spec.name}",
                created_at=now, updated_at=now, active_slot=f"{spec.name}/{env}",
                next_action_at=now))
        await session.commit()
    bot.bot.wake()


async def run(specs: list[Spec], world: World, database_url: str, tmp: Path) -> dict[str, Any]:
    bot = LocalBot(config(specs, world), database_url=database_url, state_dir=tmp / "state",
                   tick_seconds=1.0)
    await bot.start()
    lags: list[float] = []
    steps = 0
    runner = bot.bot.runner
    original = runner._run_step

    async def timed_step(session: Any, dep: Deployment, now: Any) -> None:
        nonlocal steps
        steps += 1
        if dep.next_action_at is not None:
            lags.append((bot.clock() - dep.next_action_at.replace(tzinfo=now.tzinfo))
                        .total_seconds())
        await original(session, dep, now)

    runner._run_step = timed_step  # type: ignore[method-assign]
    by_name = {s.name: s for s in specs}
    install_targets(bot, {s.name for s in specs if s.slow})
    try:
        started = time.monotonic()
        await queue(bot, specs)
        rows = await finished(bot, [s.name for s in specs if not s.slow], started)
        elapsed = time.monotonic() - started
        return {"lags": lags, "steps": steps, "elapsed": elapsed,
                "rows": [(by_name[r.service], r) for r in rows]}
    finally:
        await bot.stop()


async def finished(bot: LocalBot, names: list[str], started: float) -> list[Deployment]:
    """Wait until every deployment of ``names`` has ended or paused (a paused one waits
    for a person), at most ``DEADLINE`` seconds; their rows, whatever their state."""
    settled = [s.value for s in IN_FLIGHT - {State.PAUSED}]
    while True:
        async with bot.bot.sessions() as session:
            rows = (await session.exec(select(Deployment).where(
                col(Deployment.service).in_(names)))).all()
        if all(r.state not in settled for r in rows) or time.monotonic() - started > DEADLINE:
            return list(rows)
        await asyncio.sleep(0.5)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(label: str, result: dict[str, Any]) -> None:
    lags, rows = result["lags"], result["rows"]
    extra = [((r.finished_at or r.updated_at) - r.created_at).total_seconds() - s.own_waits
             for s, r in rows if r.state == State.SUCCEEDED]
    print(f"{label:<26} lag p50 {pct(lags, 50):5.2f} s  p99 {pct(lags, 99):5.2f} s  "
          f"max {max(lags, default=0):5.2f} s | {result['steps'] / result['elapsed']:5.1f} "
          f"steps/s | beyond own waits p50 {statistics.median(extra or [0]):4.1f} s  "
          f"p99 {pct(extra, 99):4.1f} s")
    states: dict[str, int] = {}
    for _, row in rows:
        states[row.state] = states.get(row.state, 0) + 1
    rolled_back = {s.name for s, r in rows if r.state == State.ROLLED_BACK}
    bad = {s.name for s, _ in rows if s.bad}
    print(f"{'':<26} outcomes {dict(sorted(states.items()))}; rolled back = the bad "
          f"canaries: {rolled_back == bad} ({len(bad)} bad)"
          + ("" if rolled_back == bad else f"; unexpected {sorted(rolled_back ^ bad)}"))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--flaky", type=int, default=10)
    parser.add_argument("--bad-every", type=int, default=7)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    base_specs = [Spec("alone", "canary")]
    specs = load_specs(args.services, args.slow, args.flaky, args.bad_every)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        canaries = [s.name for s in [*base_specs, *specs] if s.kind == "canary"]
        with running_world(tmp, canaries=canaries, bad=[s.name for s in specs if s.bad],
                           flaky=[s.name for s in specs if s.flaky]) as world:
            if args.db == "postgres":
                from tests.postgres_fixture import create_database, running_postgres
                with running_postgres() as server:
                    base = await run(base_specs, world, create_database(server), tmp / "a")
                    load = await run(specs, world, create_database(server), tmp / "b")
            else:
                base = await run(base_specs, world, f"sqlite:///{tmp}/base.db", tmp / "a")
                load = await run(specs, world, f"sqlite:///{tmp}/load.db", tmp / "b")
    print(f"machine: {sys.platform}, {len(os.sched_getaffinity(0))} cores; db {args.db}; "
          f"{args.services} services ({args.slow} with 30 s answers, {args.flaky} with a "
          f"flaky check, {sum(s.bad for s in specs)} bad canaries); a real Prometheus")
    report("baseline (1 canary alone)", base)
    report(f"load ({args.services} at once)", load)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
