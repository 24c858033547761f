"""Slash commands answer from connections of their own: on PostgreSQL, the engine's work
(hundreds of steps under way, the notifier, mirrors) may hold every connection of its
pool, and an ack that waited for one of them would miss Slack's 3 seconds.

On a real PostgreSQL, over real signed HTTP against the fake Slack.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import select

from bot.engine.alerts import CONCURRENT_CHUNKS
from bot.store.models import AlertThread, Deployment
from tests.alert_helpers import alert_config, am_alert, am_payload, post
from tests.conftest import eventually

pytest_plugins = ["tests.postgres_fixture"]


async def test_an_ack_is_answered_while_the_engine_holds_every_connection(
        migrated_postgres_url, make_bot) -> None:
    bot = await make_bot(database_url=migrated_postgres_url)
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


async def test_an_ack_is_answered_while_a_storm_of_alert_deliveries_holds_the_database(
        migrated_postgres_url, make_bot, tmp_path) -> None:
    """Alertmanager sends each group on its own, so a storm arrives as many deliveries at
    once. However slow the database is for them, they hold at most ``CONCURRENT_CHUNKS`` of
    the edge pool's connections; a slash command answers from the others."""
    bot = await make_bot(alert_config(tmp_path), database_url=migrated_postgres_url)
    alerts = bot.bot.alerts
    arrived, inside, release = [], [], asyncio.Event()
    receive, record = alerts.receive, alerts._record

    async def counted(delivery: Any) -> Any:
        arrived.append(delivery)
        return await receive(delivery)

    async def slow(chunk: Any) -> Any:  # holds a connection as long as the database is slow
        inside.append(chunk)
        async with bot.bot.edge_sessions() as session:
            await session.exec(select(1))
            await release.wait()
        return await record(chunk)

    alerts.receive, alerts._record = counted, slow
    storm = [asyncio.create_task(post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": f"Storm{i}", "service": "api", "env": "staging"}, fingerprint=f"s{i}"),
        group_key=f"storm{i}"))) for i in range(20)]
    await eventually(lambda: asyncio.sleep(0, len(arrived) == 20))
    reply = await bot.driver.command("api staging v1.0.0")
    assert "is on its way" in reply.json()["text"], reply.json()
    assert len(inside) == CONCURRENT_CHUNKS
    release.set()
    assert [r.status_code for r in await asyncio.gather(*storm)] == [200] * 20
    async with bot.bot.sessions() as session:
        threads = (await session.exec(select(AlertThread))).all()
    assert sorted(t.name for t in threads) == sorted(f"Storm{i}" for i in range(20))
