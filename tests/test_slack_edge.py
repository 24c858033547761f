"""The Slack edge: signatures, timestamps, retries, the manifest, ack content."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import yaml
from sqlmodel import func, select

from bot.devtools.driver import sign
from bot.devtools.local import LocalBot
from bot.slack.app import SLASH_COMMANDS
from bot.store.models import AuditEvent, Deployment

ROOT = Path(__file__).parent.parent
FORM = "application/x-www-form-urlencoded"


async def count(bot: LocalBot, model: type) -> int:
    async with bot.bot.sessions() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


def test_manifest_commands_match_the_registered_ones() -> None:
    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    declared = {c["command"] for c in manifest["features"]["slash_commands"]}
    assert declared == set(SLASH_COMMANDS)
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"commands", "chat:write", "chat:write.public", "users:read", "usergroups:read",
            "files:write"} <= scopes
    assert manifest["settings"]["interactivity"]["is_enabled"] is True


async def test_registered_listeners_are_the_manifest_commands(make_bot) -> None:
    bot = await make_bot()
    for command in SLASH_COMMANDS:
        resp = await bot.driver.command("help", command=command)
        assert resp.status_code == 200 and "Usage" in resp.json()["text"]
    unknown = await bot.driver.command("help", command="/undeclared")
    assert unknown.status_code == 404  # Bolt: no listener matched


async def test_unsigned_request_is_refused_and_records_nothing(make_bot) -> None:
    bot = await make_bot()
    body = bot.driver.command_body("api staging v1")
    resp = await bot.driver.http.post(bot.driver.url, content=body,
                                      headers={"Content-Type": FORM})
    assert resp.status_code == 401
    assert await count(bot, Deployment) == 0


async def test_wrong_signature_is_refused(make_bot) -> None:
    bot = await make_bot()
    body = bot.driver.command_body("api staging v1")
    headers = {**sign("not-the-secret", body), "Content-Type": FORM}
    resp = await bot.driver.http.post(bot.driver.url, content=body, headers=headers)
    assert resp.status_code == 401
    tampered = {**sign(bot.signing_secret, body), "Content-Type": FORM}
    resp = await bot.driver.http.post(bot.driver.url, content=body.replace("v1", "v2"),
                                      headers=tampered)
    assert resp.status_code == 401
    assert await count(bot, Deployment) == 0


async def test_stale_timestamp_is_refused(make_bot) -> None:
    bot = await make_bot()
    body = bot.driver.command_body("api staging v1")
    headers = {**sign(bot.signing_secret, body, timestamp=int(time.time()) - 301),
               "Content-Type": FORM}
    resp = await bot.driver.http.post(bot.driver.url, content=body, headers=headers)
    assert resp.status_code == 401
    assert await count(bot, Deployment) == 0 and await count(bot, AuditEvent) == 0


async def test_slack_retry_of_a_handled_command_starts_nothing_new(make_bot) -> None:
    bot = await make_bot()
    first = await bot.driver.command("api staging v1.0.0", trigger_id="1234.5678.abcd")
    retry = await bot.driver.command(
        "api staging v1.0.0", trigger_id="1234.5678.abcd",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    assert "Deployment #1" in first.json()["text"]
    assert retry.status_code == 200
    assert retry.json()["text"] == first.json()["text"]  # the first reply, like an idempotency key
    assert await count(bot, Deployment) == 1


async def test_concurrent_identical_retries_create_one_deployment(make_bot) -> None:
    bot = await make_bot()
    replies = await asyncio.gather(*(
        bot.driver.command("api staging v1.0.0", trigger_id="99.99.same") for _ in range(5)))
    assert all(r.status_code == 200 for r in replies)
    assert await count(bot, Deployment) == 1


async def test_second_deploy_to_same_slot_is_refused_naming_the_first(make_bot) -> None:
    bot = await make_bot()
    await bot.driver.command("api staging v1.0.0", user="U0ALICE")
    second = await bot.driver.command("api staging v2.0.0", user="U0BOB")
    text = second.json()["text"]
    assert "api staging is busy: <@U0ALICE> is deploying `v1.0.0` (#1" in text
    assert "Nothing was started" in text
    assert await count(bot, Deployment) == 1
    other_env = await bot.driver.command("api dev v2.0.0", user="U0BOB")
    assert "Deployment #2" in other_env.json()["text"]


async def test_racing_deploys_to_one_slot_start_exactly_one(make_bot) -> None:
    bot = await make_bot()
    replies = await asyncio.gather(*(
        bot.driver.command(f"web staging v{i}", user=f"U0USER{i}") for i in range(6)))
    texts = [r.json()["text"] for r in replies]
    assert sum("is on its way" in t for t in texts) == 1
    assert sum("is busy" in t for t in texts) == 5
    assert await count(bot, Deployment) == 1


async def test_bad_input_is_answered_privately_and_changes_nothing(make_bot) -> None:
    bot = await make_bot()
    for text, expected in [
        ("apu staging", "Unknown service 'apu'. Did you mean 'api'? Known: api, web, worker."),
        ("api qa", "Unknown environment 'qa' for api."),
        ("api staging v1;reboot", "contains characters Shipbot does not accept: ';'"),
        ("api staging " + "v" * 200, "the limit is 128"),
        ("x" * 1500, "the limit is 1000"),
    ]:
        resp = await bot.driver.command(text)
        assert resp.status_code == 200
        body = resp.json()
        assert body["response_type"] == "ephemeral"
        assert expected in body["text"], text
    assert await count(bot, Deployment) == 0 and await count(bot, AuditEvent) == 0
    assert bot.slack.calls_to("chat.postMessage") == []


async def test_oversize_body_is_refused(make_bot) -> None:
    bot = await make_bot()
    body = bot.driver.command_body("api staging v1 --reason " + "x" * 1_100_000)
    resp = await bot.driver.post(body, FORM, {})
    assert resp.status_code == 413
    assert await count(bot, Deployment) == 0


async def test_health_and_metrics(make_bot) -> None:
    bot = await make_bot()
    health = await bot.driver.http.get(bot.url + "/healthz")
    assert health.status_code == 200 and health.json() == {"ok": True, "database": "ok"}
    await bot.driver.command("apu staging")
    await bot.next_tick()  # the runner counts deployments by state at its ticks
    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert 'shipbot_deployments{state="succeeded"}' in metrics
    assert "shipbot_slack_api_errors_total" in metrics
