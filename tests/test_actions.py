"""Every button is a declared action with a handler; an unknown one is refused, never
guessed (it used to fall back to cancel)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bot.engine.machine import State
from bot.slack.blocks import approval_request, card_buttons
from bot.store.models import Deployment
from commands.actions import ACTIONS, STALE, ActionId
from tests.test_buttons_and_queries import ephemerals_to
from tests.test_deploy_flow import deployments, finished

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _deployment(state: State, **fields: Any) -> Deployment:
    return Deployment(id=7, request_key="k", service="api", env="production", version="v2",
                      requester="U0ALICE", state=state, channel="C0DEPLOYS", created_at=NOW,
                      updated_at=NOW, **fields)


def _action_ids(blocks: list[dict[str, Any]]) -> set[str]:
    return {e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]}


@pytest.mark.parametrize("state", list(State))
def test_every_card_button_is_a_declared_action(state: State) -> None:
    for strategy in ("rolling", "canary", "blue-green"):
        buttons = card_buttons(_deployment(state, strategy=strategy))
        assert {b["action_id"] for b in buttons} <= set(ACTIONS), (state, strategy)


def test_approval_buttons_are_declared() -> None:
    _, blocks = approval_request(_deployment(State.AWAITING_APPROVAL), [], "@sre", NOW)
    assert _action_ids(blocks) == {ActionId.APPROVE, ActionId.REJECT}


async def test_every_declared_button_reaches_its_handler(make_bot, tmp_path: Path) -> None:
    """Clicked on something that does not exist, each answers for itself (no "not valid
    any more" from the dispatcher: that is only for buttons nobody handles)."""
    bot = await make_bot()
    for action_id in ACTIONS:
        resp = await bot.driver.click(action_id, "424242", user="U0CAROL")
        assert resp.status_code == 200, action_id
    answers = await ephemerals_to(bot, "U0CAROL", count=len(ACTIONS))
    assert len(answers) == len(ACTIONS)
    assert not [a for a in answers if STALE in a], answers


async def test_an_unknown_button_is_refused_and_changes_nothing(
        make_bot, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bot = await make_bot()
    await bot.driver.command("api staging v1")
    [before] = await finished(bot, 1)

    resp = await bot.driver.click("deploy_frobnicate", str(before.id), user="U0BOB")

    assert resp.status_code == 200
    assert await ephemerals_to(bot, "U0BOB") == [STALE]
    [after] = await deployments(bot)
    assert (after.state, after.updated_at) == (before.state, before.updated_at)
    assert any(r.levelno == logging.ERROR and "deploy_frobnicate" in r.getMessage()
               for r in caplog.records)


def test_the_approval_request_names_the_change() -> None:
    """From what runs now to what comes; a first deploy says so instead of `nothing yet`."""
    _, blocks = approval_request(_deployment(State.AWAITING_APPROVAL, previous_version="v1"),
                                 [], "@sre", NOW)
    assert "wants to deploy *api* `v1` → `v2` to *production*" in blocks[0]["text"]["text"]
    _, blocks = approval_request(_deployment(State.AWAITING_APPROVAL), [], "@sre", NOW)
    assert "*api* `v2` (its first deploy there) to *production*" in blocks[0]["text"]["text"]
