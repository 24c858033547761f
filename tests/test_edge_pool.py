"""Slash commands answer from connections of their own: on PostgreSQL, the engine's work
(hundreds of steps under way, the notifier, mirrors) may hold every connection of its
pool, and an ack that waited for one of them would miss Slack's 3 seconds.

On a real PostgreSQL, over real signed HTTP against the fake Slack.
"""

from __future__ import annotations

import contextlib

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from bot.store.models import Deployment

pytest_plugins = ["tests.postgres_fixture"]


async def test_an_ack_is_answered_while_the_engine_holds_every_connection(
        postgres_url, make_bot) -> None:
    bot = await make_bot(database_url=postgres_url)
    engine = bot.bot.db
    capacity = engine.pool.size() + engine.pool._max_overflow  # type: ignore[attr-defined]
    async with contextlib.AsyncExitStack() as held:
        connections: list[AsyncConnection] = []
        while engine.pool.checkedout() < capacity:  # type: ignore[attr-defined]
            connections.append(await held.enter_async_context(engine.connect()))
        reply = await bot.driver.command("api staging v1.0.0")
        assert reply.status_code == 200, reply.text
        assert "is on its way" in reply.json()["text"], reply.json()
        status = await bot.driver.command("status api")
        assert "What runs where" in status.json()["text"]
    async with bot.bot.sessions() as session:
        [dep] = (await session.exec(select(Deployment))).all()
    assert (dep.service, dep.env, dep.version) == ("api", "staging", "v1.0.0")
