"""Urgent work first: the notifier's hold, and the SQLite write gate."""

from __future__ import annotations

import asyncio
import time

from bot.engine.urgency import MAX_WAIT, Urgency
from bot.store.gate import WriteGate


async def test_quiet_returns_at_once_and_urgent_work_holds_back_at_most_briefly() -> None:
    urgency = Urgency()
    started = time.monotonic()
    await urgency.wait_quiet()
    assert time.monotonic() - started < 0.05

    async with urgency.urgent():
        started = time.monotonic()
        await urgency.wait_quiet()  # never starves: gives up after MAX_WAIT
        assert MAX_WAIT * 0.9 <= time.monotonic() - started < MAX_WAIT + 0.2

    done = asyncio.Event()
    task = asyncio.create_task(done.wait())
    urgency.until_done(task)
    waiter = asyncio.create_task(urgency.wait_quiet())
    await asyncio.sleep(0.02)
    assert not waiter.done()
    done.set()
    await asyncio.wait_for(waiter, 0.1)  # released as soon as the urgent task ends


async def test_write_gate_serialises_on_sqlite_only() -> None:
    order: list[str] = []

    async def writer(gate: WriteGate, name: str) -> None:
        async with gate():
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    sqlite = WriteGate("sqlite:///x.db")
    await asyncio.gather(writer(sqlite, "a"), writer(sqlite, "b"))
    assert order == ["a+", "a-", "b+", "b-"]
    order.clear()
    postgres = WriteGate("postgresql://u@h/db")
    await asyncio.gather(writer(postgres, "a"), writer(postgres, "b"))
    assert order == ["a+", "b+", "a-", "b-"]
