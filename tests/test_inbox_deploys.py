"""`/deploy` through the inbox in one write: the deployment and the record of the request
commit together, and every guarantee of the separate record holds (dedupe by trigger id,
the first reply to a replay, the refusal decided before the answer, a failure retried).

Over real signed HTTP against the fake Slack, on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.engine import inbox as inbox_module
from bot.engine.inbox import DEFERRED, LEASE
from bot.store.models import Deployment, InboundRequest
from tests import test_inbox
from tests.conftest import FakeClock
from tests.test_buttons_and_queries import ephemerals_to

pytest_plugins = ["tests.postgres_fixture"]
TRIGGER = "4242.4242.same"
database_url = test_inbox.database_url  # the fixture: SQLite and a real PostgreSQL


async def rows(bot: LocalBot, model: type[Any]) -> list[Any]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(model))).all())


@contextlib.contextmanager
def write_transactions(engine: AsyncEngine,
                       writes: set[tuple[str, str]]) -> Iterator[set[int]]:
    """The transactions (numbered as they begin) that made one of ``writes`` (verb,
    table): one element means they all committed together."""
    numbers = itertools.count()
    seen: set[int] = set()

    def began(conn: Any) -> None:
        conn.info["transaction"] = next(numbers)  # one transaction at a time per connection

    def wrote(conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        verb, _, rest = statement.lstrip().upper().partition(" ")
        words = rest.split()
        target = words[1 if verb in ("INSERT", "DELETE") else 0] if len(words) > 1 else ""
        if (verb, target.strip('"').lower()) in writes:
            seen.add(conn.info["transaction"])

    sync = engine.sync_engine
    hooks = [("begin", began), ("before_cursor_execute", wrote)]
    for name, hook in hooks:
        event.listen(sync, name, hook)
    try:
        yield seen
    finally:
        for name, hook in hooks:
            event.remove(sync, name, hook)


async def test_a_deploy_and_its_record_commit_in_one_transaction(make_bot,
                                                                 database_url) -> None:
    bot = await make_bot(database_url=database_url)
    # The runner claims the new deployment meanwhile (an update): only the ack's writes,
    # on the edge's own pool (the same engine on SQLite).
    ack_writes = {("INSERT", "deployment"), ("INSERT", "inboundrequest"),
                  ("UPDATE", "inboundrequest")}
    with write_transactions(bot.bot.edge_db, ack_writes) as seen:
        reply = await bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER)
        assert "Deployment #1" in reply.json()["text"]
    assert len(seen) == 1, seen  # no deployment without its record, nor the reverse
    [row] = await rows(bot, InboundRequest)
    assert (row.key, row.reply) == (f"slash:{TRIGGER}", reply.json()["text"])
    assert row.done_at is not None and row.told_at is not None  # the drain leaves it


async def test_twins_of_one_deploy_get_one_deployment_and_the_same_reply(
        database_url, make_bot) -> None:
    bot = await make_bot(database_url=database_url)
    replies = await asyncio.gather(*(
        bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER) for _ in range(5)))
    texts = {r.json()["text"] for r in replies}
    [dep] = await rows(bot, Deployment)
    # (its number: PostgreSQL's sequence may have given a twin's rolled-back insert #1)
    assert len(texts) == 1 and f"Deployment #{dep.id} " in texts.pop()
    assert len(await rows(bot, InboundRequest)) == 1


async def test_a_refused_deploy_replayed_after_the_unlock_is_still_refused(
        database_url, make_bot) -> None:
    """The refusal was the answer to that request: a replay gets it again and starts
    nothing, even once the lock is gone."""
    bot = await make_bot(database_url=database_url)
    await bot.driver.command("lock staging --reason incident")
    refused = await bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER)
    assert refused.json()["text"].startswith(":lock: staging is locked by <@U0ALICE>")
    await bot.driver.command("unlock staging")
    replay = await bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER)
    assert replay.json()["text"] == refused.json()["text"]
    assert await rows(bot, Deployment) == []
    fresh = await bot.driver.command("api staging v1.0.0")  # a new request goes ahead
    assert "Deployment #1" in fresh.json()["text"]


async def test_a_deploy_whose_write_failed_is_deferred_then_done_once_and_told(
        make_bot, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write of deployment and record failed together: the request is recorded for
    the drain, which starts the deployment after the lease and tells the requester."""
    failures = []
    add = inbox_module.Receipt.add

    def failing_add(self: inbox_module.Receipt, session: Any, reply: str) -> None:
        if not failures:
            failures.append(reply)
            raise RuntimeError("the database went away mid-transaction")
        add(self, session, reply)

    monkeypatch.setattr(inbox_module.Receipt, "add", failing_add)
    clock = FakeClock()
    bot = await make_bot(clock=clock)
    first = await bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER)
    assert first.json()["text"] == DEFERRED
    assert await rows(bot, Deployment) == []  # rolled back with the record
    clock.advance(seconds=LEASE.total_seconds() + 1)  # as a replica's drain finds it
    [told] = await ephemerals_to(bot, "U0ALICE")
    assert told.startswith(":rocket: Deployment #") and "api `v1.0.0` to staging" in told
    replay = await bot.driver.command("api staging v1.0.0", trigger_id=TRIGGER)
    assert replay.json()["text"] == told
    assert len(await rows(bot, Deployment)) == 1
