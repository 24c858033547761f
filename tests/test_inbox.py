"""Acknowledged means recorded: a replayed command acts once and gets the first reply;
a click answered with 200 survives the process dying right after the ack.

Over real signed HTTP against the fake Slack, on SQLite and on a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlmodel import col, func, select

from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.engine.inbox import LEASE
from bot.store.models import Approval, AuditEvent, Freeze, Lock
from commands.actions import ActionId
from tests.conftest import FakeClock, eventually
from tests.test_approvals import approval_message, staged
from tests.test_buttons_and_queries import buttons, ephemerals_to, slow_build_bot
from tests.test_deploy_flow import deployments, finished
from tests.test_strategies import config as strategy_config

pytest_plugins = ["tests.postgres_fixture"]
FORM = "application/x-www-form-urlencoded"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shipbot.db"
    return str(request.getfixturevalue("migrated_postgres_url"))


async def audits_by(bot: LocalBot, user: str) -> list[tuple[str, str | None]]:
    async with bot.bot.sessions() as session:
        rows = (await session.exec(select(AuditEvent).where(AuditEvent.actor == user)
                                   .order_by(col(AuditEvent.id)))).all()
    return [(e.action, e.to_state) for e in rows]


async def count(bot: LocalBot, model: type) -> int:
    async with bot.bot.sessions() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


async def acts_once(bot: LocalBot, text: str, user: str = "U0ALICE",
                    command: str = "/deploy", audited: bool = True) -> str:
    """Send ``text``, then replay the same signed request (same trigger id): the replay
    gets the same answer and changes nothing (no audit row of its own). The reply.
    ``audited``: the first is audited under the user's name (abort is, by the runner)."""
    trigger = f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex}"
    before = await audits_by(bot, user)
    first = await bot.driver.command(text, user=user, trigger_id=trigger, command=command)
    after_first = await audits_by(bot, user)
    replay = await bot.driver.command(text, user=user, trigger_id=trigger, command=command)
    assert first.status_code == replay.status_code == 200
    assert replay.json()["text"] == first.json()["text"], text
    assert len(after_first) > len(before) or not audited, (text, first.json()["text"])
    assert await audits_by(bot, user) == after_first, text  # the replay did not act
    return str(first.json()["text"])


async def test_replayed_lock_unlock_freeze_unfreeze_act_once(database_url, make_bot) -> None:
    bot = await make_bot(database_url=database_url)
    locked = await acts_once(bot, "lock staging --reason x")
    assert locked.startswith(":lock: Locked staging.")
    assert await acts_once(bot, "unlock staging") == ":unlock: Unlocked staging."
    assert await count(bot, Lock) == 1
    frozen = await acts_once(bot, 'freeze staging --until "2099-01-15 18:00" --reason y')
    assert frozen.startswith(":snowflake: staging is frozen until 2099-01-15 18:00 UTC")
    assert await count(bot, Freeze) == 1
    assert await acts_once(bot, "unfreeze staging") == "Lifted 1 freeze on staging."


async def test_replayed_cancel_acts_once(database_url, make_bot, tmp_path) -> None:
    bot = await slow_build_bot(
        lambda config: make_bot(config, database_url=database_url), tmp_path)
    await bot.driver.command("api staging v5.0.0", user="U0BOB")
    await eventually(lambda: asyncio.sleep(0, (tmp_path / "ci-started").exists()))
    assert await acts_once(bot, "cancel api staging") == \
        "Cancelled deployment #1 of api to staging."


async def test_replayed_deploy_and_rollback_act_once(database_url, make_bot) -> None:
    bot = await make_bot(database_url=database_url)
    assert "Deployment #1" in await acts_once(bot, "api dev v1.0.0")
    await finished(bot, 1)
    await bot.driver.command("api dev v2.0.0")
    await finished(bot, 2)
    reply = await acts_once(bot, "api dev", command="/rollback")
    assert "#3" in reply and "v1.0.0" in reply, reply
    assert len(await deployments(bot)) == 3


async def verifying(bot: LocalBot) -> bool:
    """Baking at a step: the traffic shift done, waiting for a decision."""
    deps = await deployments(bot)
    return bool(deps) and deps[-1].state == "verifying" and deps[-1].stage >= 1


async def test_replayed_rollout_controls_act_once(launch, tmp_path, database_url) -> None:
    """Pause, resume, abort and promote, each replayed: one decision each."""
    cfg = strategy_config(tmp_path, {"kind": "canary", "steps": [50, 100], "interval": 600,
                                     "pause_timeout": "1h"}, traffic=True)
    bot = await launch(cfg, database_url=database_url)
    await bot.driver.command("api dev v2.0.0", user="U0BOB")
    await eventually(lambda: verifying(bot))
    assert await acts_once(bot, "pause api dev", "U0BOB") == "Paused deployment #1."
    assert (await acts_once(bot, "resume api dev", "U0BOB")).startswith(
        "Resumed deployment #1")
    await eventually(lambda: verifying(bot))
    aborted = await acts_once(bot, "abort api dev", "U0BOB", audited=False)
    assert aborted == "Rolling back deployment #1."
    assert (await finished(bot, 1))[0].state == "rolled_back"

    await bot.driver.command("api dev v3.0.0", user="U0BOB")
    await eventually(lambda: verifying(bot))
    assert await acts_once(bot, "promote api dev", "U0BOB") == \
        "Promoted deployment #2 to the next step."
    assert (await finished(bot, 2))[1].state == "succeeded"


async def pending_approval(bot: LocalBot) -> str:
    """A production deployment (#2) awaiting U0CAROL; the Approve button's value."""
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    return str(buttons(await approval_message(bot))[0]["value"])


async def test_an_approve_acked_then_killed_is_applied_by_the_next_bot(
        make_bot, tmp_path, database_url, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first bot answers the click with 200 and dies before acting on it (its task
    stops dead where the approval would be written). The next bots on the same database
    approve it once and tell the approver, who was told nothing by the first."""
    # rate_limits=False: three bots share this fake, so all their posts to #deploys-api draw
    # on one per-channel bucket; this test is about the inbox's lease, not Slack's pacing.
    async with FakeSlack(rate_limits=False) as slack:
        first = await make_bot(fake_slack=slack, database_url=database_url)
        value = await pending_approval(first)
        reached, killed = asyncio.Event(), asyncio.get_running_loop().create_future()

        async def dies_here(dep_id: int, user: str) -> str:
            reached.set()
            task = asyncio.current_task()
            assert task is not None
            killed.set_result(task)
            await asyncio.Event().wait()  # never returns: cancelled below, as by SIGKILL
            raise AssertionError("unreachable")

        monkeypatch.setattr(first.bot.approvals, "approve", dies_here)
        resp = await first.driver.click(ActionId.APPROVE, value, user="U0CAROL")
        assert resp.status_code == 200
        await reached.wait()
        (await killed).cancel()
        await first.stop()
        assert (await deployments(first))[1].state == "awaiting_approval"
        assert not [c for c in slack.calls_to("chat.postEphemeral")
                    if c.params.get("user") == "U0CAROL"]

        # Two replicas start later than the dead bot's claim on the click (its lease)
        # lasts: one claims it, and the approver is told once.
        later = FakeClock(datetime.now(UTC) + LEASE + timedelta(seconds=5))
        second, third = await asyncio.gather(*(
            make_bot(fake_slack=slack, database_url=database_url, clock=later)
            for _ in range(2)))
        [told, *_] = await ephemerals_to(second, "U0CAROL")
        assert told == "Approved: deployment #2 of api to production proceeds."
        deps = await finished(second, 2)
        assert deps[1].state == "succeeded"
        assert len(await ephemerals_to(third, "U0CAROL")) == 1  # not processed twice
        async with second.bot.sessions() as session:
            approvals = (await session.exec(select(Approval))).all()
        assert [(a.user, a.decision) for a in approvals] == [("U0CAROL", "approve")]
        await asyncio.gather(second.stop(), third.stop())


async def test_a_retried_and_a_double_click_record_one_approval(
        database_url, make_bot) -> None:
    """Slack retries the same click payload (its 3 s passed); Carol also clicks twice.
    One approval, one decision; the retry is not answered twice."""
    bot = await make_bot(database_url=database_url)
    value = await pending_approval(bot)
    payload = bot.driver.action_payload(ActionId.APPROVE, value, user="U0CAROL")
    body = urlencode({"payload": json.dumps(payload)})
    retried = await asyncio.gather(*(
        bot.driver.post(body, FORM, {"X-Slack-Retry-Num": str(n)}) for n in range(3)))
    assert [r.status_code for r in retried] == [200, 200, 200]
    [carol, *_] = await ephemerals_to(bot, "U0CAROL")
    assert carol == "Approved: deployment #2 of api to production proceeds."
    again = await bot.driver.click(ActionId.APPROVE, value, user="U0CAROL")  # a second click
    assert again.status_code == 200
    assert (await finished(bot, 2))[1].state == "succeeded"  # long after any answer
    texts = await ephemerals_to(bot, "U0CAROL", count=2)
    assert texts[0] == carol and len(texts) == 2, texts  # the retries got no answer
    async with bot.bot.sessions() as session:
        approvals = (await session.exec(select(Approval))).all()
    events = [action for action, _ in await audits_by(bot, "U0CAROL")]
    assert len(approvals) == 1
    assert (events.count("approve"), events.count("approved")) == (1, 1)


async def test_requests_told_long_ago_are_pruned(tmp_path: Path) -> None:
    """The table does not grow for ever: a week after its outcome was told, a row goes."""
    from bot.engine.inbox import Inbox, Request
    from bot.store.db import create_engine, create_schema, session_factory
    from bot.store.models import InboundRequest

    db = create_engine(f"sqlite:///{tmp_path}/inbox.db")
    await create_schema(db)
    clock = FakeClock()
    inbox = Inbox(session_factory(db), clock, owner="test")

    async def process(request: Request) -> str:
        return f"done {request.key}"

    async def keys() -> list[str]:
        async with session_factory(db)() as session:
            return [r.key for r in (await session.exec(select(InboundRequest))).all()]

    assert await inbox.once(Request(key="old", kind="slash", user="U1"), process) == "done old"
    clock.advance(days=6)
    assert await inbox.once(Request(key="new", kind="slash", user="U1"), process) == "done new"
    clock.advance(days=1, seconds=1)
    await inbox.prune()
    assert await keys() == ["new"]
    await db.dispose()
