"""A person's request goes before the engine's background work on the event loop they
share: while a slash command or a click is being acknowledged, the runner claims and
starts no new steps (bounded by ``Urgency.max_wait``), except a rollback's, which goes at
once. Hundreds of steps started together used to hold the loop past an ack's budget.

A whole Shipbot on loopback; the scheduler's tick far away, so each test drives the
runner itself. ``max_wait`` is raised so that holding back is observable, not timed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from bot.engine.machine import State
from commands.handlers import Invocation
from tests.conftest import eventually
from tests.test_runner_safety import QUIET, Launch, get, insert, no_ci


def held_in_handler(bot: Any) -> tuple[asyncio.Event, asyncio.Event]:
    """Slash commands stop inside their handler until ``gate`` is set; ``inside`` says
    one got there."""
    inside, gate = asyncio.Event(), asyncio.Event()
    original = bot.bot.handlers.on_text

    async def held(text: str, who: Invocation) -> Any:
        inside.set()
        await gate.wait()
        return await original(text, who)

    bot.bot.handlers.on_text = held
    return inside, gate


async def test_no_step_starts_while_a_slash_command_is_being_answered(
        make_bot: Launch, tmp_path: Path) -> None:
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    urgency = bot.bot.urgency
    urgency.max_wait = 60
    dep_id = await insert(bot, state=State.REQUESTED)
    inside, gate = held_in_handler(bot)
    answer = asyncio.create_task(bot.driver.command("status"))
    await inside.wait()
    assert not urgency.quiet
    tick = asyncio.create_task(bot.bot.runner.tick())
    await eventually(lambda: asyncio.sleep(0, urgency.waiting == 1))  # the runner holds back
    held = await get(bot, dep_id)
    assert (held.state, held.lease_owner) == (State.REQUESTED, None)
    gate.set()
    assert "What runs where" in (await answer).json()["text"]
    assert await tick == 1  # answered: the runner goes on
    assert (await get(bot, dep_id)).state != State.REQUESTED
    assert urgency.quiet


async def test_a_rollbacks_step_does_not_wait_for_the_acks_being_answered(
        make_bot: Launch, tmp_path: Path) -> None:
    """Time to recovery first: the tick a rollback click starts claims at once, and the
    rollback's step writes at once; an ordinary deployment it claimed on the way still
    lets the acks go first."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    bot.bot.urgency.max_wait = 60
    rollback = await insert(bot, state=State.REQUESTED, kind="rollback")
    ordinary = await insert(bot, state=State.REQUESTED, env="staging",
                            active_slot="api/staging")
    inside, gate = held_in_handler(bot)
    answer = asyncio.create_task(bot.driver.command("status"))
    await inside.wait()
    bot.bot.advance_first()  # what RollbackService calls once the rollback is recorded

    async def moved_on(dep_id: int) -> bool:
        return (await get(bot, dep_id)).state != State.REQUESTED

    await eventually(lambda: moved_on(rollback))
    assert not answer.done()  # while the slash command was still being answered
    assert not await moved_on(ordinary)
    gate.set()
    assert "What runs where" in (await answer).json()["text"]
    await eventually(lambda: moved_on(ordinary))


async def test_a_tick_an_ack_wakes_still_lets_the_next_acks_go_first(
        make_bot: Launch, tmp_path: Path) -> None:
    """A recorded deploy wakes the runner from inside its ack: that tick is the engine's
    work, not the ack's, so it holds back for acks like any other."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    urgency = bot.bot.urgency
    urgency.max_wait = 60
    dep_id = await insert(bot, state=State.REQUESTED)
    async with urgency.urgent():  # as in RedactingApp.async_dispatch
        bot.bot.runner.start_tick()  # as DeployService's on_change does
        await eventually(lambda: asyncio.sleep(0, urgency.waiting == 1))
        assert (await get(bot, dep_id)).lease_owner is None

    async def moved_on() -> bool:
        return (await get(bot, dep_id)).state != State.REQUESTED

    await eventually(moved_on)


async def test_ticks_arriving_while_claims_wait_never_keep_a_whole_tick_waiting(
        make_bot: Launch, tmp_path: Path) -> None:
    """The scheduler (and wake-ups) keep calling while the background claim loop waits
    for acks: each call used to leave that loop one batch more, so on a loaded machine it
    never ended and a whole tick waited behind it for ever (a CI run hung)."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    runner, urgency = bot.bot.runner, bot.bot.urgency
    urgency.max_wait = 0.1  # each claim batch waits this long for the request below
    release = asyncio.Event()
    claim_batch = runner._claim_batch

    async def slow_claim_batch() -> Any:  # a loaded machine: the claim outlasts a tick
        await asyncio.sleep(0.05)
        return await claim_batch()

    runner._claim_batch = slow_claim_batch

    async def answering() -> None:
        async with urgency.urgent():
            await release.wait()

    async def scheduler() -> None:
        while True:
            runner.start_tick()
            await asyncio.sleep(0.02)  # faster than a claim: one arrives during each

    request, ticking = asyncio.create_task(answering()), asyncio.create_task(scheduler())
    try:
        await asyncio.sleep(0.3)
        dep_id = await insert(bot, state=State.REQUESTED)
        assert await asyncio.wait_for(runner.tick(), 10) >= 1
        assert (await get(bot, dep_id)).state != State.REQUESTED
    finally:
        ticking.cancel()
        release.set()
        await request
