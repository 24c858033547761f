"""The runner's turn counter: what LocalBot.next_tick waits on before "nothing happened"."""

from __future__ import annotations

import asyncio

from bot.engine.turns import Turns


async def _tick(turns: Turns, name: str, release: asyncio.Event, order: list[str]) -> None:
    with turns.turn():
        order.append(f"{name} starts")
        await release.wait()
        order.append(f"{name} ends")


async def test_a_tick_already_running_when_asked_does_not_count() -> None:
    turns, order, release = Turns(), [], asyncio.Event()
    first = asyncio.create_task(_tick(turns, "a", release, order))
    await asyncio.sleep(0)  # a is under way (it may have read the rows before the change)
    waiter = asyncio.create_task(_after(turns.next(), "waiter", order))
    await asyncio.sleep(0)
    release.set()
    await first
    release.clear()
    second = asyncio.create_task(_tick(turns, "b", release, order))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(second, waiter), 5)
    assert order == ["a starts", "a ends", "b starts", "b ends", "waiter"]


async def test_a_tick_that_fails_still_ends_its_turn() -> None:
    turns = Turns()
    waiter = asyncio.create_task(turns.next())
    await asyncio.sleep(0)
    try:
        with turns.turn():
            raise RuntimeError("the database went away")
    except RuntimeError:
        pass
    await asyncio.wait_for(waiter, 5)


async def _after(awaitable, name: str, order: list[str]) -> None:
    await awaitable
    order.append(name)
