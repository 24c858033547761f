"""Locks, freeze windows, promotion order, roles, the hotfix path and the audit trail."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from bot.config import parse_config
from bot.devtools.local import LocalBot
from bot.store.models import AuditEvent
from tests.conftest import FakeClock, eventually, make_config
from tests.test_approvals import approval_message, prod_card, staged
from tests.test_buttons_and_queries import buttons
from tests.test_deploy_flow import deployments, finished

FRIDAY_EVENING = datetime(2026, 11, 27, 18, 30, tzinfo=UTC)  # inside Fri 18:00 UTC + 62h


def guarded_config(tmp_path: Path, **env_extra: object) -> object:
    """With a weekend freeze on production: run it on ``FakeClock`` (a Wednesday), or
    production is refused whenever the suite runs on a real weekend."""
    data = make_config(tmp_path).model_dump(mode="json")
    data["announce_channel"] = "#deploys"
    data["freeze_windows"] = [{
        "name": "weekend", "environments": ["production"], "cron": "0 18 * * fri",
        "duration": "62h", "timezone": "UTC", "reason": "Weekend change freeze"}]
    prod = data["environments"]["production"]
    prod["requires"] = "staging"
    prod["roles"] = {"hotfix": ["U0ONCALL"], "deploy": ["U0ALICE", "U0ONCALL", "@deployers"]}
    prod.update(env_extra)
    return parse_config(data)


async def say(bot: LocalBot, text: str, user: str = "U0ALICE") -> str:
    return (await bot.driver.command(text, user=user)).json()["text"]


async def test_lock_blocks_deploys_until_unlocked(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    locked = await say(bot, 'lock staging --reason "DB migration" --for 2h', user="U0BOB")
    assert locked.startswith(":lock: Locked staging until")
    refused = await say(bot, "api staging v1.0.0", user="U0CAROL")
    assert ":lock: staging is locked by <@U0BOB> since" in refused
    assert "DB migration" in refused and "`/deploy unlock staging`" in refused
    assert await deployments(bot) == []
    status = await say(bot, "status")
    assert ":lock: staging locked by <@U0BOB> until" in status

    again = await say(bot, 'lock staging --reason "other"', user="U0CAROL")
    assert "staging is already locked by <@U0BOB>: DB migration" in again
    assert "is not locked" in await say(bot, "unlock dev")
    assert await say(bot, "unlock staging", user="U0BOB") == ":unlock: Unlocked staging."
    assert "is on its way" in await say(bot, "api staging v1.0.0")

    await eventually(lambda: _count_posts(bot, "#deploys", 2))
    announced = [m["text"] for m in bot.slack.messages("#deploys")]
    assert any("<@U0BOB> locked staging" in t for t in announced)
    assert any("<@U0BOB> unlocked staging" in t for t in announced)


async def _count_posts(bot: LocalBot, channel: str, n: int) -> bool:
    return len(bot.slack.messages(channel)) >= n


async def test_service_lock_and_expiry(make_bot, tmp_path) -> None:
    clock = FakeClock()
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    await say(bot, 'lock staging web --reason "flaky" --for 30m')
    assert "web on staging is locked" in await say(bot, "web staging v1")
    assert "is on its way" in await say(bot, "api staging v1")  # other services unaffected
    clock.advance(minutes=31)
    assert "is on its way" in await say(bot, "web staging v1")  # the lock expired


async def test_lock_role_and_unknown_environment(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    refused = await say(bot, 'lock production --reason "x"', user="U0MALLORY")
    assert "You lack the *lock* role for production. Who has it: <@U0CAROL>, @sre-leads" \
        in refused
    bad = await say(bot, 'lock prod --reason "x"')
    assert "Unknown environment 'prod'. Did you mean 'production'?" in bad
    async with bot.bot.sessions() as session:
        assert (await session.exec(select(AuditEvent))).all() == []


async def test_recurring_freeze_window_refuses_with_end_time(make_bot, tmp_path) -> None:
    clock = FakeClock(FRIDAY_EVENING)
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    await staged(bot)
    refused = await say(bot, "api production v1.4.2")
    assert ":snowflake: production is frozen — weekend: Weekend change freeze" in refused
    assert "Deploy after 2026-11-30 08:00 UTC" in refused and "--hotfix" in refused
    assert len(await deployments(bot)) == 1
    assert "production frozen — weekend" in await say(bot, "status")

    assert await bot.bot.guards.announce_windows() == 1
    assert await bot.bot.guards.announce_windows() == 0  # exactly once
    clock.advance(hours=62)
    assert await bot.bot.guards.announce_windows() == 1
    bot.bot.notifier.kick()
    await eventually(lambda: _count_posts(bot, "#deploys", 2))
    texts = [m["text"] for m in bot.slack.messages("#deploys")]
    assert texts[0].startswith(":snowflake: Freeze started on production — weekend")
    assert texts[1].startswith(":sunny: Freeze over on production (weekend)")


async def test_one_off_freeze_and_unfreeze(make_bot, tmp_path) -> None:
    clock = FakeClock()
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    bad = await say(bot, 'freeze staging --until "next monday" --reason x')
    assert 'Use "YYYY-MM-DD HH:MM" in UTC' in bad
    ok = await say(bot, 'freeze staging --until "2026-11-25 18:00" --reason "release candidate"')
    assert ok.startswith(":snowflake: staging is frozen until 2026-11-25 18:00 UTC (freeze #1)")
    refused = await say(bot, "api staging v1")
    assert "staging is frozen — Freeze #1 by <@U0ALICE>: release candidate" in refused
    assert await say(bot, "unfreeze staging") == "Lifted 1 freeze on staging."
    for until in ("2026-11-25 18:00", "2026-11-25 19:00"):
        await say(bot, f'freeze staging --until "{until}" --reason rc')
    assert await say(bot, "unfreeze staging") == "Lifted 2 freezes on staging."
    assert "is on its way" in await say(bot, "api staging v1")


async def test_promotion_order_names_where_the_version_ran(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    refused = await say(bot, "api production v2.0.0")
    assert ("api `v2.0.0` must succeed on staging before production, but it has not been "
            "deployed anywhere yet. Run `/deploy api staging v2.0.0` first.") in refused
    await bot.driver.command("api dev v2.0.0")
    await finished(bot, 1)
    refused = await say(bot, "api production v2.0.0")
    assert "but it succeeded on dev only" in refused
    await staged(bot, "v2.0.0")
    assert "It needs 1 approval first" in await say(bot, "api production v2.0.0")


async def test_deploy_role_is_enforced(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    await staged(bot)
    refused = await say(bot, "api production v1.4.2", user="U0MALLORY")
    assert ("You lack the *deploy* role for production. Who has it: <@U0ALICE>, "
            "<@U0ONCALL>, @deployers. Nothing was changed.") in refused
    assert len(await deployments(bot)) == 1


async def test_hotfix_bypasses_freeze_lock_and_order_but_needs_approval(make_bot, tmp_path):
    clock = FakeClock(FRIDAY_EVENING)
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    await say(bot, 'lock production --reason "incident"', user="U0CAROL")
    not_allowed = await say(bot, 'api production v1.4.3 --hotfix --reason "INC-1"')
    assert "You lack the *hotfix* role for production" in not_allowed
    reply = await say(bot, 'api production v1.4.3 --hotfix --reason "INC-123"', user="U0ONCALL")
    assert reply.startswith(":rocket: HOTFIX deployment #1 of api `v1.4.3` to production")
    assert "It needs 1 approval first" in reply
    message = await approval_message(bot)
    assert "*HOTFIX*" in json.dumps(message)
    await bot.driver.click("deploy_approve", buttons(message)[0]["value"], user="U0CAROL")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded" and dep.hotfix
    assert "HOTFIX" in prod_card(bot)["blocks"][0]["text"]["text"]
    async with bot.bot.sessions() as session:
        first = (await session.exec(select(AuditEvent).where(
            AuditEvent.deployment_id == dep.id).order_by(AuditEvent.id))).first()
    assert first is not None and first.action == "hotfix_requested"
    assert "HOTFIX: bypasses locks, freezes and promotion order. INC-123" == first.detail


async def test_hotfix_without_approval_when_the_environment_allows(make_bot, tmp_path):
    config = guarded_config(tmp_path, approval={"approvers": ["U0CAROL"],
                                                "hotfix_approvals": 0})
    bot = await make_bot(config)
    reply = await say(bot, 'api production v9 --hotfix --reason "INC-9"', user="U0ONCALL")
    assert "approval" not in reply
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded"


async def test_freeze_that_starts_while_waiting_stops_the_deploy(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    await staged(bot)
    await say(bot, "api production v1.4.2")
    message = await approval_message(bot)
    await say(bot, 'lock production --reason "incident in progress"', user="U0CAROL")
    await bot.driver.click("deploy_approve", buttons(message)[0]["value"], user="U0CAROL")
    deps = await finished(bot, 2)
    assert deps[1].state == "cancelled"
    assert "production is locked by <@U0CAROL>" in deps[1].detail


async def test_audit_command_export_and_append_only(make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())
    await staged(bot)
    await say(bot, 'lock production --reason "drill"', user="U0CAROL")
    audit = await say(bot, "audit api")
    lines = audit.splitlines()
    assert lines[0] == "*Recent decisions for api*"
    assert "<@U0CAROL> *lock* production — drill" in lines[1]
    assert any("<@U0ALICE> *requested* #1 staging ∅→requested" in line for line in lines)

    async with bot.bot.sessions() as session:
        with pytest.raises(DBAPIError, match="append-only"):
            await session.exec(text("UPDATE auditevent SET actor = 'U0EVE'"))  # type: ignore
        await session.rollback()
        with pytest.raises(DBAPIError, match="append-only"):
            await session.exec(text("DELETE FROM auditevent"))  # type: ignore
        await session.rollback()

    out = await export(tmp_path, "2020-01-01")
    rows = [json.loads(line) for line in out.splitlines()]
    assert {r["action"] for r in rows} >= {"requested", "lock", "transition"}
    assert rows[0]["at"] <= rows[-1]["at"] and "actor" in rows[0] and "env" in rows[0]
    assert await export(tmp_path, "2999-01-01") == ""


async def export(tmp_path: Path, since: str) -> str:
    """Run the real CLI: `shipbot audit export --since ...`."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "audit", "export", "--since", since,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={"DATABASE_URL": f"sqlite:///{tmp_path}/shipbot.db", "PATH": "/usr/bin:/bin"})
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode()
