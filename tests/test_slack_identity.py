"""Acknowledgements never wait on Slack's Web API: a restart while `auth.test` answers 429
or 500 still acknowledges every command, and the bot's identity is learned once, later."""

from __future__ import annotations

import pytest

from bot.store.models import Deployment
from tests.conftest import eventually
from tests.test_slack_edge import count


@pytest.mark.parametrize(("status", "error"), [(500, "internal_error"), (429, "ratelimited")])
async def test_a_command_is_acknowledged_while_auth_test_fails(make_bot, status: int,
                                                               error: str) -> None:
    bot = await make_bot()
    bot.slack.fail_next("auth.test", status=status, error=error, times=10_000, retry_after=30)
    resp = await bot.driver.command("api staging v1.0.0")
    assert resp.status_code == 200
    body = resp.json()
    assert "Deployment #1" in body["text"] and "no longer available" not in body["text"]
    assert await count(bot, Deployment) == 1
    again = await bot.driver.command("status api")
    assert again.status_code == 200 and "api" in again.json()["text"]


async def test_the_bots_identity_is_learned_once_in_the_background(make_bot) -> None:
    """Slack fails auth.test twice; the identity is learned on a retry, then never asked
    for again, however many requests follow."""
    bot = await make_bot()
    bot.slack.fail_next("auth.test", status=500, error="internal_error", times=2)
    for slot in ("api dev", "web dev", "api staging"):
        resp = await bot.driver.command(f"{slot} v1.0.0")
        assert resp.status_code == 200 and "Deployment #" in resp.json()["text"]

    async def learned() -> bool:
        return any(not c.failed for c in bot.slack.calls_to("auth.test"))

    await eventually(learned, timeout=20)
    asked = len(bot.slack.calls_to("auth.test"))
    for _ in range(3):
        assert (await bot.driver.command("status web")).status_code == 200
    assert len(bot.slack.calls_to("auth.test")) == asked
