"""How one replica's engine copes with many deployments at once (run by hand; not a test).

    PYTHONPATH=. .venv/bin/python bench/engine_load.py [--services 200] [--slow 10]
        [--db sqlite|postgres]

Starts the whole bot (LocalBot: the runner, the notifier posting to the fake Slack, the
scheduler) on ``--services`` services, a third each rolling, canary (50 % → 100 %, 3 s
per step) and blue-green (3 s rollback window), and gives every service one deployment at
once. Their deploy target is in memory: a deploy takes 3 s, a traffic change 0.3 s, so the
engine's own work is what is measured. ``--slow`` of the services have a target whose
every answer takes 30 s (an HTTP check with retries, a provider that hangs): they must
not hold up the others.

Prints the runner's lag (a step's due time → the step starting) as percentiles, steps
per second, each deployment's time beyond its own waits (request → done, minus the 3 s
deploy and the strategy's steps), and the process's peak RSS. The baseline in the same
run is the same load on ``--services 1`` (one deployment, nothing competing).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import col, select

from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from bot.engine.machine import IN_FLIGHT, State
from bot.store.models import Deployment
from integrations.base import JobSpec, RunState, RunStatus

DEPLOY_SECONDS, TRAFFIC_SECONDS, SLOW_ANSWER_SECONDS = 3.0, 0.3, 30.0
STRATEGY_SECONDS = {"rolling": 0.0, "canary": 3.0, "blue-green": 3.0}  # waits by design
KINDS = ("rolling", "canary", "blue-green")


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


def config(tmp: Path, services: int) -> ShipbotConfig:
    argv = [sys.executable, "-c", "pass"]  # replaced by TimedTarget after start
    deploy: dict[str, Any] = {"provider": "command", "argv": argv, "set_weight_argv": argv,
                              "promote_argv": argv, "abort_argv": argv}
    strategies: dict[str, dict[str, Any]] = {
        "rolling": {"kind": "rolling"},
        "canary": {"kind": "canary", "steps": [50, 100], "interval": "3s"},
        "blue-green": {"kind": "blue-green", "rollback_window": "3s"},
    }
    return parse_config({
        "poll_interval_seconds": 1,
        "environments": {"staging": {}},
        "services": {f"svc{i}": {"channel": f"#deploys-svc{i}", "deploy": deploy,
                                 "strategy": strategies[KINDS[i % 3]]}
                     for i in range(services)},
    })


async def run(services: int, slow: int, database_url: str, tmp: Path) -> dict[str, Any]:
    bot = LocalBot(config(tmp, services), database_url=database_url, state_dir=tmp / "state",
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
    slow_names = {f"svc{i}" for i in range(services - slow, services)}
    for name, providers in bot.bot.providers.items():
        target = TimedTarget(SLOW_ANSWER_SECONDS if name in slow_names else 0.0)
        object.__setattr__(providers, "target", target)
        object.__setattr__(providers, "traffic", target)
    try:
        started = time.monotonic()
        now = bot.clock()
        async with bot.bot.sessions() as session:
            for i in range(services):
                session.add(Deployment(
                    request_key=f"load-{i}", service=f"svc{i}", env="staging",
                    version="v2", previous_version="v1", requester="U0LOAD",
                    state=State.QUEUED, strategy=KINDS[i % 3], channel=f"#deploys-svc{i}",
                    created_at=now, updated_at=now, active_slot=f"svc{i}/staging",
                    next_action_at=now))
            await session.commit()
        bot.bot.wake()
        fast = services - slow
        while True:
            async with bot.bot.sessions() as session:
                rows = (await session.exec(select(Deployment).where(
                    col(Deployment.state).not_in([s.value for s in IN_FLIGHT])))).all()
            if sum(1 for r in rows if r.service not in slow_names) >= fast:
                break
            if time.monotonic() - started > 600:
                raise TimeoutError("the load did not finish within 10 minutes")
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        extra = [((r.finished_at or r.updated_at) - r.created_at).total_seconds()
                 - DEPLOY_SECONDS - STRATEGY_SECONDS[r.strategy]
                 for r in rows if r.service not in slow_names]
        failed = [r for r in rows if r.state != State.SUCCEEDED and r.service not in slow_names]
        return {"lags": lags, "steps": steps, "elapsed": elapsed, "extra": extra,
                "failed": len(failed)}
    finally:
        await bot.stop()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(label: str, result: dict[str, Any]) -> None:
    lags, extra = result["lags"], result["extra"]
    print(f"{label:<28} lag p50 {pct(lags, 50):6.2f} s  p99 {pct(lags, 99):6.2f} s  "
          f"max {max(lags, default=0):6.2f} s | {result['steps'] / result['elapsed']:6.1f} "
          f"steps/s | beyond own waits p50 {statistics.median(extra):5.1f} s  "
          f"p99 {pct(extra, 99):5.1f} s | failed {result['failed']}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.db == "postgres":
            from tests.postgres_fixture import create_database, running_postgres
            with running_postgres(tmp / "pg") as server:
                urls = [create_database(server, f"load{i}") for i in range(2)]
                base = await run(1, 0, urls[0], tmp / "a")
                load = await run(args.services, args.slow, urls[1], tmp / "b")
        else:
            base = await run(1, 0, f"sqlite:///{tmp}/base.db", tmp / "a")
            load = await run(args.services, args.slow, f"sqlite:///{tmp}/load.db", tmp / "b")
    print(f"machine: {sys.platform}, {len(__import__('os').sched_getaffinity(0))} cores; "
          f"db {args.db}; {args.services} services ({args.slow} with 30 s answers)")
    report("baseline (1 deployment)", base)
    report(f"load ({args.services} at once)", load)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
