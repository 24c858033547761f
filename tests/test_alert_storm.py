"""An alert storm never holds the writer queue for long: a person's command gets in while a
large Alertmanager payload is being recorded, and the payload is still recorded once.

Deterministic, no timing: the test takes the writer queue itself to observe who goes when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import col, func, select

from bot.devtools.local import LocalBot
from bot.engine.alerts import CHUNK
from bot.store.models import AlertInstance, AlertThread, Deployment, Outbox
from tests.alert_helpers import alert_config, am_alert, am_payload, post
from tests.conftest import eventually

pytest_plugins = ["tests.postgres_fixture"]
ALERTS = CHUNK * 8


def storm(size: int = ALERTS) -> dict:
    """One Alertmanager group of ``size`` firing alerts for api on staging."""
    return am_payload(*(am_alert({"alertname": "HighErrorRate", "service": "api",
                                  "env": "staging", "pod": f"api-{n}"},
                                 fingerprint=f"{n:016x}") for n in range(size)))


async def rows(bot: LocalBot, model: type) -> int:
    async with bot.bot.sessions() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


async def until(check: Callable[[], bool]) -> None:
    await eventually(lambda: _now(check()))


async def _now(value: bool) -> bool:
    return value


async def test_a_command_gets_in_between_the_chunks_of_a_large_payload(launch,
                                                                        tmp_path) -> None:
    bot = await launch(alert_config(tmp_path), tick_seconds=3600)  # no runner ticks
    writers = bot.bot.writers
    delivery = asyncio.create_task(post(bot, "alertmanager", storm()))
    while True:  # take turns with the payload's writes until some of it is recorded
        async with writers():
            recorded = await rows(bot, AlertInstance)
            if recorded:
                assert recorded < ALERTS, "the whole payload was recorded in one transaction"
                command = asyncio.create_task(bot.driver.command("api staging v1.0.0"))
                await until(lambda: writers.queued(urgent=True) == 1)  # the command's write
                break
    ack = await command
    assert ack.status_code == 200 and "Deployment #1" in ack.json()["text"]
    done = await delivery
    assert done.status_code == 200 and done.json()["alerts"] == ALERTS

    async with bot.bot.sessions() as session:
        card = (await session.exec(select(func.min(Outbox.id)).where(
            Outbox.deployment_id == 1))).one()  # written with the deployment
        later_alert_rows = (await session.exec(select(func.count()).select_from(Outbox).where(
            col(Outbox.alert_thread_id).is_not(None), col(Outbox.id) > card))).one()
        [dep] = (await session.exec(select(Deployment))).all()
    assert later_alert_rows > 0  # the command was written before the rest of the payload
    assert dep.service == "api" and dep.version == "v1.0.0"
    assert await rows(bot, AlertInstance) == ALERTS and await rows(bot, AlertThread) == 1


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Asked for before ``launch``: the database outlives the bots on it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shipbot.db"
    return str(request.getfixturevalue("migrated_postgres_url"))


async def test_a_retried_storm_records_each_alert_once(database_url, launch, tmp_path) -> None:
    """Alertmanager retries a delivery it saw fail; HA pairs send it twice at once (on
    PostgreSQL, with no writer queue, their chunks really race on the unique keys)."""
    bot = await launch(alert_config(tmp_path), database_url=database_url)
    payload = storm()
    first, second = await asyncio.gather(post(bot, "alertmanager", payload),
                                         post(bot, "alertmanager", payload))
    again = await post(bot, "alertmanager", payload)
    assert [r.status_code for r in (first, second, again)] == [200, 200, 200]
    [thread] = {*first.json()["threads"], *second.json()["threads"], *again.json()["threads"]}
    assert first.json()["new_threads"] + second.json()["new_threads"] == [thread]
    assert again.json()["new_threads"] == []
    async with bot.bot.sessions() as session:
        keys = (await session.exec(select(AlertInstance.key))).all()
    assert len(keys) == len(set(keys)) == ALERTS
    assert await rows(bot, AlertThread) == 1
