"""Socket Mode is as safe as HTTP mode: with SLACK_APP_TOKEN and no signing secret, the
HTTP server routes no Slack event at all; with a signing secret it verifies them. Unsigned
commands and clicks sent to every route change nothing in either mode."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from sqlmodel import select

from bot.devtools.driver import TEAM
from bot.devtools.local import LocalBot
from bot.runtime import Shipbot
from bot.settings import Settings
from bot.slack.blocks import REJECT_CALLBACK
from bot.slack.socket_mode import SocketModeLink
from bot.store.models import Approval, AuditEvent, Deployment, Freeze, Lock
from bot.web.app import SOCKET_MODE_ONLY, build_asgi_app
from commands.actions import ACTIONS, ActionId
from commands.handlers import Invocation
from tests.alert_helpers import alert_config, alert_thread, am_alert, am_payload, post, threads
from tests.conftest import eventually, make_config, outbox_delivered
from tests.test_approvals import approval_message

FORM = "application/x-www-form-urlencoded"
APP_TOKEN = "xapp-1-A0SHIPBOT-1-socketmode"
MODES = {  # name: (LocalBot options, what an unsigned /slack/events request gets)
    "http": ({}, 401),
    "socket mode": ({"signing": False, "app_token": APP_TOKEN}, 404),
    "socket mode with a signing secret": ({"app_token": APP_TOKEN}, 401),
}


async def as_user(bot: LocalBot, text: str, user: str = "U0ALICE") -> str:
    """Set-up through the command handlers themselves (in Socket Mode, HTTP cannot)."""
    who = Invocation(user=user, request_key=f"setup:{text}")
    return (await bot.bot.handlers.on_text(text, who)).text


async def incident(bot: LocalBot) -> dict[str, int]:
    """Two releases of web, an alert thread offering a rollback, and a production deploy
    of api waiting for an approver: something for every button to act on."""
    for text in ("web staging v1", "web staging v2", "api staging v1.4.2"):
        await as_user(bot, text)
        await eventually(lambda: _all_finished(bot))
    await as_user(bot, "api production v1.4.2")
    await approval_message(bot)
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "HighLatency", "service": "web", "env": "staging"})))
    await alert_thread(bot, "#deploys-web")
    await bot.next_tick()  # whatever the runner had due, and all it had to say, is out
    await outbox_delivered(bot)
    deps = await _rows(bot, Deployment)
    waiting = next(d.id for d in deps if d.state == "awaiting_approval")
    return {"deployment": waiting, "finished": deps[1].id, "thread": (await threads(bot))[0].id}


async def _all_finished(bot: LocalBot) -> bool:
    return all(d.finished_at for d in await _rows(bot, Deployment))


async def _rows(bot: LocalBot, model: type) -> list[Any]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(model))).all())


async def snapshot(bot: LocalBot) -> dict[str, Any]:
    """What an attack could change: deployments, decisions, guards, alert threads, and
    what the bot said in Slack."""
    deps = [(d.id, d.state, d.version, d.hotfix) for d in await _rows(bot, Deployment)]
    alert = [(t.id, t.status, t.acknowledged_by, t.dismissed_by)
             for t in await threads(bot)]
    counts = {m.__name__: len(await _rows(bot, m)) for m in (Approval, AuditEvent, Lock, Freeze)}
    said = {m: len(bot.slack.calls_to(m)) for m in ("chat.postEphemeral", "chat.postMessage",
                                                   "views.open")}
    return {"deployments": sorted(deps), "threads": alert, **counts, **said}


CONTROLS = ("promote", "pause", "resume", "abort")


def forged_bodies(ids: dict[str, int]) -> list[str]:
    """Slash commands and clicks as Slack would send them, claiming the approver's id."""
    def command(name: str, text: str) -> str:
        return urlencode({"team_id": TEAM["id"], "channel_id": "C0DEPLOYS", "user_id": "U0CAROL",
                          "command": name, "text": text, "trigger_id": f"1.1.{text}",
                          "response_url": "https://hooks.slack.invalid/x"})

    def click(action_id: str, value: int) -> str:
        return urlencode({"payload": json.dumps({
            "type": "block_actions", "team": TEAM, "user": {"id": "U0CAROL"},
            "channel": {"id": "C0DEPLOYS"}, "trigger_id": "1.1.click",
            "actions": [{"type": "button", "action_id": action_id, "value": str(value)}]})})

    commands = [command("/deploy", t) for t in (
        "api production v6.6.6 --hotfix --reason pwned", "lock production --reason pwned",
        "freeze production --until \"2099-01-01 00:00\" --reason pwned", "unlock production",
        "cancel api production", *(f"{c} api production" for c in CONTROLS))]
    commands.append(command("/rollback", "web staging"))
    controls = [ActionId(f"deploy_{c}") for c in CONTROLS]
    deployment_buttons = (ActionId.APPROVE, ActionId.REJECT, ActionId.CANCEL, *controls)
    clicks = [click(a, ids["deployment"]) for a in deployment_buttons]
    clicks += [click(a, ids["finished"]) for a in controls]
    clicks += [click(a, ids["thread"]) for a, action in ACTIONS.items() if action.family == "alert"]
    reject = urlencode({"payload": json.dumps({
        "type": "view_submission", "team": TEAM, "user": {"id": "U0CAROL"},
        "view": {"callback_id": REJECT_CALLBACK, "private_metadata": str(ids["deployment"]),
                 "state": {"values": {"reason": {"reason": {"value": "pwned"}}}}}})})
    return [*commands, *clicks, reject]


@pytest.mark.parametrize("mode", list(MODES))
async def test_unsigned_commands_and_clicks_change_nothing_on_any_route(
        make_bot, tmp_path, quiet, mode: str) -> None:
    options, slack_status = MODES[mode]
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet, **options)
    ids = await incident(bot)
    before = await snapshot(bot)
    routes = [r.path for r in build_asgi_app(bot.bot, manage_lifespan=False).routes]
    assert "/slack/events" in routes and "/webhooks/alertmanager" in routes
    async with httpx.AsyncClient(timeout=10) as client:
        for path in routes:
            for body in forged_bodies(ids):
                for extra in ({}, {"X-Slack-Request-Timestamp": "1", "X-Slack-Signature": "v0=1"}):
                    resp = await client.post(bot.url + path, content=body,
                                             headers={"Content-Type": FORM, **extra})
                    expected = {"/slack/events": slack_status}.get(
                        path, 401 if path.startswith("/webhooks/") else 405)
                    assert resp.status_code == expected, (mode, path, body[:60])
                    if resp.status_code == 404:
                        assert resp.json()["error"] == SOCKET_MODE_ONLY
    assert await snapshot(bot) == before


async def test_socket_mode_with_a_signing_secret_still_serves_signed_http(make_bot) -> None:
    bot = await make_bot(app_token=APP_TOKEN)
    resp = await bot.driver.command("api staging v1.0.0")
    assert resp.status_code == 200 and "Deployment #1" in resp.json()["text"]


async def test_socket_mode_without_a_secret_refuses_even_correctly_shaped_requests(
        make_bot) -> None:
    bot = await make_bot(signing=False, app_token=APP_TOKEN)
    resp = await bot.driver.command("api staging v1.0.0")  # signed with a secret it lacks
    assert resp.status_code == 404 and resp.json() == {"ok": False, "error": SOCKET_MODE_ONLY}
    assert await _rows(bot, Deployment) == []


async def test_readiness_names_what_is_missing_while_liveness_stays_up(tmp_path) -> None:
    """A database that refuses connections (a closed port) and a Socket Mode link not yet
    connected: /healthz is 503 naming both, /livez and /metrics still answer."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = Settings(SLACK_BOT_TOKEN="xoxb-t", SLACK_APP_TOKEN=APP_TOKEN,  # type: ignore[arg-type]
                        DATABASE_URL=f"postgresql://shipbot@127.0.0.1:{port}/shipbot",
                        SHIPBOT_STATE_DIR=tmp_path)
    bot = Shipbot(settings, make_config(tmp_path))
    link = SocketModeLink(bot.slack, APP_TOKEN)
    app = build_asgi_app(bot, manage_lifespan=False, slack_link=link)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    serving = asyncio.create_task(server.serve())

    async def listening() -> bool:
        return server.started

    try:
        await eventually(listening)
        url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(url + "/healthz")
            assert health.status_code == 503
            assert health.json() == {"ok": False, "slack": "not started",
                                     "database": "unavailable (ConnectionRefusedError)"}
            assert (await client.get(url + "/livez")).json() == {"ok": True}
            assert (await client.get(url + "/metrics")).status_code == 200
    finally:
        server.should_exit = True
        await serving
        await bot.db.dispose()
