"""Freeze windows as the announcements channel and a deployer see them: each occurrence is
announced at its start and its end, lifted freezes end when lifted, and times are UTC
whatever the server's zone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from tests.conftest import eventually, make_config
from tests.test_guards import guarded_config, say
from tests.test_rules import FRIDAY_18, MONDAY_08, StoppedClock

WEEK = timedelta(days=7)
LOOKBACK = timedelta(hours=1)  # how late the announcer may run and still announce an end


def staging_weekend(tmp_path: Path) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    data["announce_channel"] = "#deploys"
    data["freeze_windows"] = [{
        "name": "weekend", "environments": ["staging"], "cron": "0 18 * * fri",
        "duration": "62h", "timezone": "UTC", "reason": "Weekend change freeze"}]
    return parse_config(data)


async def announced(bot: LocalBot, count: int) -> list[str]:
    bot.bot.notifier.kick()

    async def posts() -> list[str] | None:
        texts = [m["text"] for m in bot.slack.messages("#deploys")]
        return texts if len(texts) >= count else None

    return await eventually(posts, timeout=5)


async def test_every_weekend_is_announced_when_it_starts_and_when_it_ends(
        make_bot, tmp_path) -> None:
    clock = StoppedClock(FRIDAY_18)
    bot = await make_bot(staging_weekend(tmp_path), clock=clock)
    announce = bot.bot.guards.announce_windows
    assert await announce() == 1  # the start, at its first instant
    assert await announce() == 0
    clock.at = MONDAY_08  # the end, at its last instant
    assert await announce() == 1
    clock.at = FRIDAY_18 + WEEK  # the next weekend is a new occurrence
    assert await announce() == 1
    clock.at = MONDAY_08 + WEEK + LOOKBACK  # the announcer ran an hour late: still told
    assert await announce() == 1
    clock.at = MONDAY_08 + WEEK + LOOKBACK + timedelta(seconds=1)
    assert await announce() == 0
    texts = await announced(bot, 4)
    assert [t.split(" — ")[0].split(" (")[0] for t in texts] == [
        ":snowflake: Freeze started on staging", ":sunny: Freeze over on staging",
        ":snowflake: Freeze started on staging", ":sunny: Freeze over on staging"]
    assert "(until 2026-11-30 08:00 UTC)" in texts[0]
    assert "(until 2026-12-07 08:00 UTC)" in texts[2]


async def test_each_one_off_freeze_is_announced_and_ends_when_lifted(make_bot, tmp_path):
    clock = StoppedClock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    await say(bot, 'freeze staging --until "2026-11-25 18:00" --reason "rc1"')
    clock.at += timedelta(hours=1)
    assert await say(bot, "unfreeze staging") == "Lifted 1 freeze on staging."
    clock.at += timedelta(minutes=1)
    await say(bot, 'freeze staging --until "2026-11-25 20:00" --reason "rc2"')
    assert await bot.bot.guards.announce_windows() == 0  # each edge was told once already
    texts = await announced(bot, 3)
    assert texts[0].startswith(":snowflake: Freeze started on staging — Freeze #1")
    assert texts[1].startswith(":sunny: Freeze over on staging (Freeze #1)")  # when lifted
    assert texts[2].startswith(":snowflake: Freeze started on staging — Freeze #2")
    assert "rc2 (until 2026-11-25 20:00 UTC)" in texts[2]


@pytest.fixture
def server_in_new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_freeze_times_are_utc_whatever_the_servers_zone(
        make_bot, tmp_path, server_in_new_york) -> None:
    clock = StoppedClock(FRIDAY_18 + timedelta(minutes=30))
    bot = await make_bot(staging_weekend(tmp_path), clock=clock)
    refused = await say(bot, "api staging v1")
    assert "staging is frozen — weekend" in refused
    assert "Deploy after 2026-11-30 08:00 UTC" in refused


async def test_a_window_that_never_occurs_freezes_nothing(make_bot, tmp_path) -> None:
    data = staging_weekend(tmp_path).model_dump(mode="json")
    data["freeze_windows"][0]["cron"] = "0 0 30 2 *"  # February 30th
    bot = await make_bot(parse_config(data), clock=StoppedClock(FRIDAY_18))
    assert "is on its way" in await say(bot, "api staging v1")
    assert await bot.bot.guards.announce_windows() == 0
