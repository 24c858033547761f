"""Urgent work first: the notifier's hold, and the SQLite writer queue."""

from __future__ import annotations

import asyncio

import pytest

from bot.engine.machine import StepInProgress, retry_on_conflict
from bot.engine.urgency import MAX_WAIT, Urgency, stand_aside
from bot.store.writers import WriterQueue
from tests.conftest import eventually


async def test_quiet_returns_without_letting_anyone_else_go_first() -> None:
    urgency, order = Urgency(), []
    other = asyncio.create_task(_append(order, "other"))
    await urgency.wait_quiet()  # nothing urgent: no waiting, not even a turn of the loop
    order.append("waiter")
    await other
    assert order == ["waiter", "other"]


async def test_urgent_work_goes_before_a_waiter_and_releases_it_when_it_ends() -> None:
    urgency, order, done = Urgency(), [], asyncio.Event()

    async def urgent() -> None:
        await done.wait()
        order.append("urgent")

    urgency.until_done(asyncio.create_task(urgent()))
    waiter = asyncio.create_task(_after_quiet(urgency, order))
    await asyncio.sleep(0)  # both start: the urgent work waits, the waiter may not go on
    done.set()
    await asyncio.wait_for(waiter, 5)
    assert order == ["urgent", "waiter"]
    # The release comes from the urgent task's end, not from MAX_WAIT running out: the
    # waiter is through before a timer a fraction of MAX_WAIT long fires.
    order.clear()
    done.clear()
    urgency.until_done(asyncio.create_task(urgent()))
    waiter = asyncio.create_task(_after_quiet(urgency, order))
    timer = asyncio.create_task(_append(order, "timer", delay=MAX_WAIT / 2))
    await asyncio.sleep(0)
    done.set()
    await asyncio.wait_for(asyncio.gather(waiter, timer), 5)
    assert order == ["urgent", "waiter", "timer"]


async def test_urgent_work_that_never_ends_does_not_starve_the_waiter() -> None:
    urgency, order = Urgency(), []
    async with urgency.urgent():
        waiter = asyncio.create_task(_after_quiet(urgency, order))
        await asyncio.wait_for(waiter, MAX_WAIT + 5)  # gives up holding back (bench/urgency.py)
        order.append("urgent still running")
    assert order == ["waiter", "urgent still running"]


async def _append(order: list[str], name: str, delay: float = 0) -> None:
    await asyncio.sleep(delay)
    order.append(name)


async def _after_quiet(urgency: Urgency, order: list[str]) -> None:
    await urgency.wait_quiet()
    order.append("waiter")


async def test_write_gate_serialises_on_sqlite_only() -> None:
    order: list[str] = []

    async def writer(writers: WriterQueue, name: str) -> None:
        async with writers():
            order.append(f"{name}+")
            await asyncio.sleep(0.01)
            order.append(f"{name}-")

    sqlite = WriterQueue("sqlite:///x.db")
    await asyncio.gather(writer(sqlite, "a"), writer(sqlite, "b"))
    assert order == ["a+", "a-", "b+", "b-"]
    order.clear()
    postgres = WriterQueue("postgresql://u@h/db")
    await asyncio.gather(writer(postgres, "a"), writer(postgres, "b"))
    assert order == ["a+", "b+", "a-", "b-"]


@pytest.mark.parametrize("url", ["sqlite:///x.db", "postgresql://u@h/db"])
async def test_background_writes_wait_for_a_request_being_answered_not_its_own_writes(
        url: str) -> None:
    urgency = Urgency(max_wait=60)  # long: holding back is observed, not timed
    writers = WriterQueue(url, urgency.background_turn)
    order: list[str] = []
    answering, answered = asyncio.Event(), asyncio.Event()

    async def request() -> None:
        async with urgency.urgent():
            async with writers():  # its own write, not marked urgent: no waiting for itself
                order.append("the request's write")
            answering.set()
            await answered.wait()

    async def background() -> None:
        async with writers():
            order.append("background write")

    serving = asyncio.create_task(request())
    await answering.wait()
    later = asyncio.create_task(background())
    await eventually(lambda: asyncio.sleep(0, urgency.waiting == 1))  # it holds back
    assert order == ["the request's write"]
    async with writers(urgent=True):  # what the ack itself writes goes at once
        order.append("urgent write")
    answered.set()
    await asyncio.gather(serving, later)
    assert order == ["the request's write", "urgent write", "background write"]


async def test_a_request_retrying_a_conflict_lets_the_step_it_waits_for_end() -> None:
    """A cancel that meets the runner mid-step retries until the step lets go; the step's
    last writes are background turns, which must not wait for the cancel that waits for
    them (with a long MAX_WAIT: each turn would outlast all the retries)."""
    urgency = Urgency(max_wait=60)
    cancel_arrived, step_over = asyncio.Event(), asyncio.Event()

    async def step() -> None:  # the runner finishing its step: two background turns
        await cancel_arrived.wait()
        for _ in range(2):
            await urgency.background_turn()
            await asyncio.sleep(0)
        step_over.set()

    async def cancel() -> str:
        if not step_over.is_set():
            raise StepInProgress
        return "Cancelled."

    runner = asyncio.create_task(step())  # the runner's own task: not the request's
    async with urgency.urgent():
        cancel_arrived.set()
        answer = await asyncio.wait_for(
            retry_on_conflict(cancel, give_up="Try again in a few seconds."), 10)
    await runner
    assert answer == "Cancelled."


async def test_a_request_is_urgent_again_once_it_stood_aside() -> None:
    urgency, order, release = Urgency(max_wait=60), [], asyncio.Event()

    async def background() -> None:
        await release.wait()
        await urgency.background_turn()
        order.append("background")

    await stand_aside(0)  # outside a request: a plain sleep
    task = asyncio.create_task(background())
    async with urgency.urgent():
        await stand_aside(0)
        release.set()
        for _ in range(5):  # turns of the loop in which the background task could go
            await asyncio.sleep(0)
        order.append("request")
    await asyncio.wait_for(task, 5)
    assert order == ["request", "background"]
