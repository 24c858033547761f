"""The inbox when processing fails: what the person is told, the retries, the give-up.

A standalone Inbox on SQLite with a clock the tests move past the claim's lease, as a
drain on another replica would find the row."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
from sqlmodel import select

from bot.engine import inbox as inbox_module
from bot.engine.inbox import DEFERRED, LEASE, MAX_ATTEMPTS, STILL_WORKING, Inbox, Request
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import InboundRequest
from tests.conftest import FakeClock


@pytest.fixture
async def sessions(tmp_path) -> AsyncIterator[Sessions]:
    db = create_engine(f"sqlite:///{tmp_path}/inbox.db")
    await create_schema(db)
    yield session_factory(db)
    await db.dispose()


async def row(sessions: Sessions, key: str) -> InboundRequest:
    async with sessions() as session:
        return (await session.exec(select(InboundRequest)
                                   .where(InboundRequest.key == key))).one()


def slash(key: str = "k1") -> Request:
    return Request(key=key, kind="slash", user="U0ALICE", payload={"text": "lock staging"})


async def test_a_failure_is_answered_deferred_then_retried_and_told(sessions) -> None:
    clock, told = FakeClock(), []
    inbox = Inbox(sessions, clock, owner="pod-a/1")
    attempts = []

    async def flaky(request: Request) -> str:
        attempts.append(request.key)
        if len(attempts) == 1:
            raise RuntimeError("database went away")
        return "Locked staging."

    async def tell(request: Request, reply: str) -> bool:
        told.append((request.user, reply))
        return True

    assert await inbox.once(slash(), flaky) == DEFERRED  # the ack: no need to resend
    assert await inbox.drain(flaky, tell) == 0  # its claim is still running
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await inbox.drain(flaky, tell) == 1
    assert told == [("U0ALICE", "Locked staging.")]
    done = await row(sessions, "k1")
    assert (done.reply, done.told_at is not None, done.attempts) == ("Locked staging.", True, 2)


async def test_a_request_that_always_fails_is_given_up_loudly(
        sessions, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    inbox = Inbox(sessions, clock, owner="pod-a/1")

    async def broken(request: Request) -> str:
        raise RuntimeError("bug")

    async def tell(request: Request, reply: str) -> bool:
        raise AssertionError("nothing to tell")

    assert await inbox.once(slash(), broken) == DEFERRED
    for _ in range(MAX_ATTEMPTS - 1):  # each drain after a lease: one more attempt
        clock.advance(seconds=LEASE.total_seconds() + 1)
        assert await inbox.drain(broken, tell) == 1
    clock.advance(seconds=LEASE.total_seconds() + 1)
    with caplog.at_level(logging.ERROR, logger="bot.engine.inbox"):
        assert await inbox.drain(broken, tell) == 0
    assert any("failed 5 times; giving up: it was never processed" in r.getMessage()
               for r in caplog.records)
    gone = await row(sessions, "k1")
    assert gone.told_at is not None and gone.done_at is not None  # never claimed again
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await inbox.drain(broken, tell) == 0


async def test_an_outcome_not_yet_told_is_told_by_a_later_drain(sessions) -> None:
    """Processed, but Slack was down when telling: the drain tells the same reply,
    without processing again."""
    clock = FakeClock()
    inbox = Inbox(sessions, clock, owner="pod-a/1")
    processed, attempts = [], []

    async def process(request: Request) -> str:
        processed.append(request.key)
        return "Approved."

    async def tell(request: Request, reply: str) -> bool:
        attempts.append(reply)
        return len(attempts) > 1  # Slack is down the first time

    mine = await inbox.record(slash("click"))
    assert mine is not None
    await inbox.complete(mine, process, tell)
    assert (await row(sessions, "click")).told_at is None
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await inbox.drain(process, tell) == 1
    assert processed == ["click"] and attempts == ["Approved.", "Approved."]
    assert (await row(sessions, "click")).told_at is not None


async def test_a_replay_while_the_first_is_still_working_says_so(
        sessions, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inbox_module, "REPLAY_WAIT_SECONDS", 0.1)
    inbox = Inbox(sessions, FakeClock(), owner="pod-a/1")
    assert await inbox.record(slash()) is not None  # the first copy, still processing

    async def never(request: Request) -> str:
        raise AssertionError("a replay must not process again")

    assert await inbox.once(slash(), never) == STILL_WORKING


async def test_a_replay_after_the_first_processor_died_is_processed_once(sessions) -> None:
    clock = FakeClock()
    first = Inbox(sessions, clock, owner="pod-a/1")
    assert await first.record(slash()) is not None  # acked, then the process died
    clock.advance(seconds=LEASE.total_seconds() + 1)
    second, seen = Inbox(sessions, clock, owner="pod-b/1"), []

    async def process(request: Request) -> str:
        seen.append(request.payload["text"])
        return "Locked staging."

    assert await second.once(slash(), process) == "Locked staging."
    assert await second.once(slash(), process) == "Locked staging."  # a later replay
    assert seen == ["lock staging"]
