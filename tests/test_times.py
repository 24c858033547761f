"""Instants are stored as UTC on both databases, whatever zone a person typed them in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from bot.store.models import Freeze
from tests.conftest import FakeClock
from tests.test_guards import guarded_config, say

pytest_plugins = ["tests.postgres_fixture"]

# 2026-11-25 10:00 UTC is 02:00 in Los Angeles (PST, UTC-8): 20:00 there is 04:00 UTC on
# the 26th, 18 hours away; 20:00 in Tokyo (UTC+9) is 11:00 UTC, one hour away.
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shipbot.db"
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.mark.parametrize(("zone", "ends"), [
    ("America/Los_Angeles", datetime(2026, 11, 26, 4, 0, tzinfo=UTC)),
    ("Asia/Tokyo", datetime(2026, 11, 25, 11, 0, tzinfo=UTC)),
])
async def test_a_freeze_until_a_time_in_another_zone_is_in_force_and_can_be_lifted(
        make_bot, tmp_path, database_url, zone, ends) -> None:
    clock = FakeClock(NOW)
    bot = await make_bot(guarded_config(tmp_path), clock=clock, database_url=database_url)
    ok = await say(bot, f'freeze staging --until "2026-11-25 20:00 {zone}" --reason "rc"')
    assert f"until {ends:%Y-%m-%d %H:%M} UTC" in ok
    async with bot.bot.sessions() as session:
        [row] = (await session.exec(select(Freeze))).all()
    stored = row.ends_at
    assert stored.tzinfo is not None and stored == ends  # the instant, not the wall time
    assert "staging is frozen" in await say(bot, "api staging v1")
    clock.advance(seconds=(ends - NOW).total_seconds() - 60)  # a minute before its end
    assert "staging is frozen" in await say(bot, "api staging v2")
    assert await say(bot, "unfreeze staging") == "Lifted 1 freeze on staging."
    assert "is on its way" in await say(bot, "api staging v3")


async def test_stored_instants_come_back_as_utc(database_url, make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock(NOW),
                         database_url=database_url)
    berlin = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Berlin"))
    async with bot.bot.sessions() as session:
        session.add(Freeze(env="staging", reason="x", created_by="U1", starts_at=berlin,
                           ends_at=berlin + timedelta(hours=1)))
        await session.commit()
    async with bot.bot.sessions() as session:
        [row] = (await session.exec(select(Freeze))).all()
    assert row.starts_at == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert row.starts_at.utcoffset() == timedelta(0)
