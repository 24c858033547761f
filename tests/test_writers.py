"""The SQLite writer queue: one writer at a time, acks before background work, no leaks."""

from __future__ import annotations

import asyncio

import pytest

from bot.store.writers import WriterQueue


async def _writer(writers: WriterQueue, name: str, order: list[str], *, urgent: bool = False,
                  hold: asyncio.Event | None = None) -> None:
    async with writers(urgent=urgent):
        order.append(f"{name} in")
        if hold is not None:
            await hold.wait()
        await asyncio.sleep(0)
        order.append(f"{name} out")


async def _queued(writers: WriterQueue, urgent: int, background: int) -> None:
    """Wait until the writers are parked in the queue: the signal that they had
    their chance to get in, so "only the first is inside" is no accident of timing."""
    for _ in range(1000):  # turns of the event loop, not time: no I/O is involved
        if (writers.queued(urgent=True), writers.queued(urgent=False)) == (urgent, background):
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never {urgent} urgent and {background} background writers queued")


async def test_one_writer_at_a_time_and_urgent_writes_jump_the_queue() -> None:
    writers, order, hold = WriterQueue("sqlite+aiosqlite:///x.db"), [], asyncio.Event()
    first = asyncio.create_task(_writer(writers, "runner-1", order, hold=hold))
    await asyncio.sleep(0)
    queued = [asyncio.create_task(_writer(writers, name, order, urgent=name.startswith("ack")))
              for name in ("runner-2", "notifier", "ack-1", "ack-2")]
    await _queued(writers, urgent=2, background=2)
    assert order == ["runner-1 in"]  # everyone else waits
    hold.set()
    await asyncio.gather(first, *queued)
    entered = [e.removesuffix(" in") for e in order if e.endswith(" in")]
    assert entered == ["runner-1", "ack-1", "ack-2", "runner-2", "notifier"]
    assert all(order[i].endswith(" in") and order[i + 1].endswith(" out")
               for i in range(0, len(order), 2)), order  # never two inside at once


async def test_a_cancelled_waiter_does_not_keep_the_queue() -> None:
    writers, order, hold = WriterQueue("sqlite:///x.db"), [], asyncio.Event()
    first = asyncio.create_task(_writer(writers, "a", order, hold=hold))
    await asyncio.sleep(0)
    doomed = asyncio.create_task(_writer(writers, "b", order))
    later = asyncio.create_task(_writer(writers, "c", order))
    await _queued(writers, urgent=0, background=2)
    doomed.cancel()
    hold.set()
    await asyncio.wait_for(asyncio.gather(first, later), 1)
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert order == ["a in", "a out", "c in", "c out"]
    async with asyncio.timeout(1), writers():  # and it is free again
        pass


async def test_postgres_needs_no_writer_queue() -> None:
    writers, order, hold = WriterQueue("postgresql://db/shipbot"), [], asyncio.Event()
    first = asyncio.create_task(_writer(writers, "a", order, hold=hold))
    second = asyncio.create_task(_writer(writers, "b", order))
    await asyncio.wait_for(second, 5)  # b does not wait for a, which is still inside
    assert order == ["a in", "b in", "b out"]  # row locks do the job there
    hold.set()
    await asyncio.gather(first, second)
