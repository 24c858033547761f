"""An ack's first query while the runner's steps hold PostgreSQL connections, next to the
same query on an idle pool (the baseline, measured in the same run and process).

Run by hand: ``PYTHONPATH=. .venv/bin/python bench/ack_pool.py [--rounds N]``. It starts a
throwaway PostgreSQL as the tests do (tests/postgres_fixture.py), inserts more due
deployments than the runner claims per tick, makes the deploy target's poll wait until
released, and times ``SELECT count(*)`` through the bot's session factory: with every
claimed step holding a connection, and with none. The test
(tests/test_runner_safety.py) asserts that the ack is served while the steps still hold
their connections; this prints how long it took. Milliseconds, median and worst.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlmodel import func, select

from bot.devtools.local import LocalBot
from bot.engine.machine import State
from bot.store.models import Deployment
from integrations.base import RunState, RunStatus
from tests.conftest import eventually
from tests.postgres_fixture import create_database, running_postgres
from tests.test_runner_safety import QUIET, insert, no_ci

STEPS = 20  # due deployments whose steps wait on the target at once


async def ack_query(bot: LocalBot) -> float:
    started = time.perf_counter()
    async with bot.bot.sessions() as session:
        await session.exec(select(func.count()).select_from(Deployment))
    return time.perf_counter() - started


async def measure(database_url: str, rounds: int, tmp: Path) -> tuple[list[float], list[float]]:
    bot = LocalBot(no_ci(tmp), database_url=database_url, state_dir=tmp / "state",
                   tick_seconds=QUIET)
    await bot.start()
    try:
        for i in range(2 * STEPS):
            await insert(bot, state=State.DEPLOYING, deploy_run_id=f"run-{i}",
                         active_slot=f"api/dev-{i}")
        for _ in range(20):  # warm up: the pool opens its first connections
            await ack_query(bot)
        idle = [await ack_query(bot) for _ in range(rounds)]
        release = asyncio.Event()

        async def slow_poll(run_id: str) -> RunStatus:
            await release.wait()
            return RunStatus(state=RunState.RUNNING)

        bot.bot.providers["api"].target.poll = slow_poll  # type: ignore[method-assign]
        pool: Any = bot.bot.db.pool
        tick = asyncio.create_task(bot.bot.runner.tick())
        await eventually(lambda: asyncio.sleep(0, pool.checkedout() >= STEPS))
        busy = [await ack_query(bot) for _ in range(rounds)]
        release.set()
        await tick
        return busy, idle
    finally:
        await bot.stop()


def line(name: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return f"{name:<34} median {statistics.median(ms):8.2f} ms  worst {max(ms):8.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds
    with running_postgres() as server, tempfile.TemporaryDirectory() as tmp:
        busy, idle = asyncio.run(measure(create_database(server), rounds, Path(tmp)))
    print(line(f"ack, {STEPS} steps holding connections", busy))
    print(line("ack, idle pool (baseline)", idle))


if __name__ == "__main__":
    main()
