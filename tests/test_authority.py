"""Every button and every state-changing command, clicked or typed by someone without the
role: nothing changes, and they are told which role they need and who has it.

The deployments, lock, freeze and alert threads are written straight into the database
in the states each action applies to (held by another runner's lease, so nothing moves
on its own); the actions themselves go over signed HTTP, as Slack sends them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import SQLModel, select

from bot.config import parse_config
from bot.devtools.local import LocalBot
from bot.engine.machine import slot
from bot.slack.blocks import REJECT_CALLBACK
from bot.slack.blocks_alerts import (
    ALERT_ACK_ACTION,
    ALERT_DISMISS_ACTION,
    ALERT_REDEPLOY_ACTION,
    ALERT_ROLLBACK_ACTION,
)
from bot.store.models import (
    AlertInstance,
    AlertThread,
    Approval,
    AuditEvent,
    Deployment,
    Freeze,
    Lock,
    Outbox,
)
from commands.actions import ActionId
from tests.alert_helpers import alert_config
from tests.conftest import eventually

EVE = "U0EVE"  # an active workspace member with no role at all in production
ROLES = {"deploy": ["U0ALICE"], "rollback": ["U0ROLLER"], "lock": ["U0LOCKER"],
         "hotfix": ["U0ALICE"]}
WHO = {"deploy": "<@U0ALICE>", "rollback": "<@U0ROLLER>", "lock": "<@U0LOCKER>",
       "approve": "<@U0CAROL>", "hotfix": "<@U0ALICE>"}
TABLES: tuple[type[SQLModel], ...] = (Deployment, Lock, Freeze, Approval, AlertThread,
                                      AlertInstance, AuditEvent, Outbox)
# The seeded rows: 1 api awaiting approval, 2 web paused, 3 worker verifying, 4 the api
# deployment an alert suspects, 5 batch promoting; alert thread 1 offers a rollback, 2 a
# redeploy (after an automatic rollback).
AWAITING, PAUSED, VERIFYING, PROMOTING = "1", "2", "3", "5"
ROLLBACK_THREAD, REDEPLOY_THREAD = "1", "2"

BUTTONS = [  # (action_id, value, role needed)
    (ActionId.APPROVE, AWAITING, "approve"),
    (ActionId.REJECT, AWAITING, "approve"),
    (ActionId.CANCEL, AWAITING, "deploy"),
    (ActionId.PROMOTE, PAUSED, "deploy"),
    (ActionId.RESUME, PAUSED, "deploy"),
    (ActionId.ABORT, PAUSED, "rollback"),
    (ActionId.PAUSE, VERIFYING, "deploy"),
    (ActionId.ABORT, VERIFYING, "rollback"),
    (ActionId.PROMOTE, PROMOTING, "deploy"),
    (ActionId.ABORT, PROMOTING, "rollback"),  # the card's "Roll back" there
    (ALERT_ROLLBACK_ACTION, ROLLBACK_THREAD, "rollback"),
    (ALERT_DISMISS_ACTION, ROLLBACK_THREAD, "rollback"),
    (ALERT_ACK_ACTION, ROLLBACK_THREAD, "rollback"),
    (ALERT_REDEPLOY_ACTION, REDEPLOY_THREAD, "deploy"),
]

COMMANDS = [  # (command, text, role needed)
    ("/deploy", "api production v9.9.9", "deploy"),
    ("/deploy", "api production v9.9.9 --hotfix --reason INC-1", "hotfix"),
    ("/deploy", "rollback api production", "rollback"),
    ("/rollback", "api production v0.9.0", "rollback"),
    ("/deploy", "cancel api production", "deploy"),
    ("/deploy", 'lock production --reason "mine now"', "lock"),
    ("/deploy", "unlock production", "lock"),
    ("/deploy", 'freeze production --until "2030-01-01 09:00" --reason "no"', "lock"),
    ("/deploy", "unfreeze production", "lock"),
    ("/deploy", "promote web production", "deploy"),
    ("/deploy", "resume web production", "deploy"),
    ("/deploy", "abort web production", "rollback"),
    ("/deploy", "pause worker production", "deploy"),
    ("/deploy", "abort batch production", "rollback"),
]


def config(tmp_path: Path) -> Any:
    data = alert_config(tmp_path, environments={
        "dev": {}, "staging": {},
        "production": {"approval": {"approvers": ["U0CAROL"]}, "roles": ROLES},
    }).model_dump(mode="json")
    data["services"]["batch"] = {**data["services"]["web"], "channel": "#deploys-batch"}
    return parse_config(data)


def _deployment(bot: LocalBot, service: str, state: str, **fields: Any) -> Deployment:
    now = bot.bot.clock()
    in_flight = fields.pop("in_flight", True)
    return Deployment(
        request_key=f"seed:{service}:{state}", service=service, env="production",
        version="v1.0.0", previous_version="v0.9.0", requester="U0ALICE", state=state,
        active_slot=slot(service, "production") if in_flight else None,
        channel=f"#deploys-{service}", created_at=now, updated_at=now,
        lease_owner="elsewhere", lease_until=now + timedelta(hours=1), **fields)


async def seed(bot: LocalBot) -> None:
    now = bot.bot.clock()
    async with bot.bot.sessions() as session:
        session.add(_deployment(bot, "api", "awaiting_approval", approvals_required=1))
        session.add(_deployment(bot, "web", "paused", strategy="canary", stage=1,
                                paused_reason="paused by <@U0ALICE>"))
        session.add(_deployment(bot, "worker", "verifying", strategy="canary"))
        session.add(_deployment(bot, "api", "succeeded", in_flight=False, finished_at=now))
        session.add(_deployment(bot, "batch", "promoting", strategy="canary", stage=2))
        await session.flush()
        for n, extra in ((1, {}), (2, {"rollback_deployment_id": 4, "auto_rollback": True})):
            session.add(AlertThread(
                source="alertmanager", open_key=f"seed:{n}", fingerprint=f"f{n}",
                service="api", env="production", status="firing", name=f"HighErrors{n}",
                started_at=now, created_at=now, updated_at=now, channel="#deploys-api",
                suspect_deployment_id=4, rollback_to="v0.9.0", **extra))
        session.add(Lock(env="production", reason="release week", created_by="U0LOCKER",
                         created_at=now))
        session.add(Freeze(env="production", reason="holidays", created_by="U0LOCKER",
                           starts_at=now, ends_at=now + timedelta(days=1)))
        await session.commit()


async def snapshot(bot: LocalBot) -> dict[str, list[dict[str, Any]]]:
    async with bot.bot.sessions() as session:
        return {t.__name__: [row.model_dump() for row in
                             (await session.exec(select(t))).all()] for t in TABLES}


def told(bot: LocalBot, user: str) -> list[str]:
    """Everything the bot said privately to ``user``: ephemerals and DMs."""
    return [c.params.get("text", "") for c in bot.slack.calls if not c.failed and (
        (c.method == "chat.postEphemeral" and c.params.get("user") == user)
        or (c.method == "chat.postMessage" and c.params.get("channel") == user))]


def refusal(role: str) -> str:
    return f"You lack the *{role}* role for production. Who has it: {WHO[role]}"


@pytest.fixture
async def world(launch, tmp_path: Path) -> LocalBot:
    bot = await launch(config(tmp_path))
    await seed(bot)
    return bot


def assert_untouched(bot: LocalBot, tmp_path: Path) -> None:
    started = sorted(p.name for p in tmp_path.glob("*.log"))
    assert started == [], f"a provider ran: {started}"


@pytest.mark.parametrize(("action_id", "value", "role"), BUTTONS,
                         ids=[f"{a}-{v}" for a, v, _ in BUTTONS])
async def test_a_button_without_the_role_changes_nothing(world: LocalBot, tmp_path: Path,
                                                         action_id: str, value: str,
                                                         role: str) -> None:
    before = await snapshot(world)
    resp = await world.driver.click(action_id, value, user=EVE, channel="#deploys-api")
    assert resp.status_code == 200
    [text] = await eventually(lambda: _some(told(world, EVE)))
    assert refusal(role) in text and "Nothing was changed" in text
    assert await snapshot(world) == before
    assert_untouched(world, tmp_path)
    assert world.slack.calls_to("views.open") == []  # no Reject modal for a non-approver


async def test_a_reject_submitted_without_the_role_changes_nothing(world: LocalBot,
                                                                    tmp_path: Path) -> None:
    """A forged or stale modal submission is checked again, not trusted."""
    before = await snapshot(world)
    values = {"reason": {"reason": {"type": "plain_text_input", "value": "no"}}}
    resp = await world.driver.submit_view(REJECT_CALLBACK, AWAITING, values, user=EVE)
    assert resp.status_code == 200
    [text] = await eventually(lambda: _some(told(world, EVE)))
    assert refusal("approve") in text
    assert await snapshot(world) == before
    assert_untouched(world, tmp_path)


@pytest.mark.parametrize(("command", "text", "role"), COMMANDS,
                         ids=[t.split(" --")[0] for _, t, _ in COMMANDS])
async def test_a_command_without_the_role_changes_nothing(world: LocalBot, tmp_path: Path,
                                                          command: str, text: str,
                                                          role: str) -> None:
    before = await snapshot(world)
    resp = await world.driver.command(text, command=command, user=EVE)
    assert resp.status_code == 200
    reply = resp.json()
    assert reply["response_type"] == "ephemeral"
    assert refusal(role) in reply["text"] and "Nothing was changed" in reply["text"]
    assert await snapshot(world) == before
    assert_untouched(world, tmp_path)


async def test_someone_with_the_rollback_role_may_acknowledge_and_dismiss(
        world: LocalBot) -> None:
    """The same clicks by the role's holder do act (the refusals above are not blanket)."""
    await world.driver.click(ALERT_ACK_ACTION, ROLLBACK_THREAD, user="U0ROLLER")
    await world.driver.click(ALERT_DISMISS_ACTION, ROLLBACK_THREAD, user="U0ROLLER")
    texts = await eventually(lambda: _some(told(world, "U0ROLLER"), 2))
    assert texts == ["You acknowledged this alert.",
                     "You marked this alert as not caused by the deploy."]
    async with world.bot.sessions() as session:
        thread = await session.get(AlertThread, 1)
    assert thread is not None
    assert (thread.acknowledged_by, thread.dismissed_by) == ("U0ROLLER", "U0ROLLER")


async def _some(items: list[str], count: int = 1) -> list[str] | None:
    return items if len(items) >= count else None
