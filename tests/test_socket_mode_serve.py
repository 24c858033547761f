"""`shipbot serve` in Socket Mode, as a real process: the fake Slack Web API answers
apps.connections.open with the URL of a small Socket Mode server in this test, which says
hello, sends a slash command envelope and collects the acks (as bolt-python's tests mock
the socket server). Health answers before Slack does; nothing is handled before the schema
exists; SIGTERM closes the WebSocket with a close frame."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import WSCloseCode, WSMsgType, web

from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import invite_bot
from tests.conftest import eventually, make_config

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

ROOT = Path(__file__).parent.parent
APP_TOKEN = "xapp-1-A0SHIPBOT-1-socketmode"


def slash_envelope(text: str, envelope_id: str = "env-1") -> dict[str, Any]:
    """A slash command as Socket Mode delivers it (the payload is the form Slack posts)."""
    return {"envelope_id": envelope_id, "type": "slash_commands",
            "accepts_response_payload": True,
            "payload": {"token": "unused", "team_id": "T0001", "team_domain": "shipbot-test",
                        "channel_id": "C0DEPLOYS", "channel_name": "deploys",
                        "user_id": "U0ALICE", "user_name": "alice", "command": "/deploy",
                        "text": text, "api_app_id": "A0SHIPBOT",
                        "response_url": "https://hooks.slack.invalid/commands/1",
                        "trigger_id": f"1.1.{envelope_id}"}}


class SocketModeServer:
    """Slack's end of the WebSocket. ``upgrades_open`` holds the upgrade (a slow or blocked
    network); once open, connection n says hello and sends ``rounds[n]`` without waiting;
    once they are acked and another round is due, it asks the bot to reconnect (Slack's
    ``disconnect`` message)."""

    def __init__(self, rounds: list[list[dict[str, Any]]]) -> None:
        self.rounds = rounds
        self.upgrades_open = asyncio.Event()
        self.waiting = 0  # upgrade requests seen (held until upgrades_open is set)
        self.acks: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.close_codes: list[int | None] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/link", self._link)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"ws://127.0.0.1:{self._runner.addresses[0][1]}/link"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def connecting(self) -> bool:
        """The bot asked for a WebSocket (and may be held back)."""
        return self.waiting > 0

    async def _link(self, request: web.Request) -> web.WebSocketResponse:
        index, self.waiting = self.waiting, self.waiting + 1
        await self.upgrades_open.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "hello", "num_connections": 1,
                            "connection_info": {"app_id": "A0SHIPBOT"},
                            "debug_info": {"host": "fake", "approximate_connection_time": 3600}})
        envelopes = self.rounds[index] if index < len(self.rounds) else []
        for envelope in envelopes:
            await ws.send_json(envelope)
        unacked = len(envelopes)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await self.acks.put(json.loads(message.data))
                unacked -= 1
                if unacked == 0 and index + 1 < len(self.rounds):
                    await ws.send_json({"type": "disconnect", "reason": "refresh_requested"})
        self.close_codes.append(ws.close_code)
        return ws


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A `shipbot serve` process and the fakes it talks to."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str, log: Path,
                 socket_mode: SocketModeServer, slack: FakeSlack) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.socket_mode, self.slack = socket_mode, slack

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(self.url + path)

    async def up(self) -> bool:
        try:
            return (await self.get("/livez")).status_code == 200
        except httpx.TransportError:
            assert self.proc.returncode is None, self.log.read_text()
            return False


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Served] = []

    async def launch(rounds: list[list[dict[str, Any]]], *, upgrades_open: bool) -> Served:
        slack = FakeSlack()
        await slack.start()
        invite_bot(slack, make_config(tmp_path))
        link = SocketModeServer(rounds)
        await link.start()
        if upgrades_open:
            link.upgrades_open.set()
        slack.socket_mode_url = link.url
        config = tmp_path / "shipbot.yml"
        config.write_text(yaml.safe_dump(make_config(tmp_path).model_dump(mode="json")))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "SHIPBOT_", "DATABASE_URL"))}
        env.update(SLACK_BOT_TOKEN="xoxb-serve-test", SLACK_APP_TOKEN=APP_TOKEN,
                   SLACK_API_URL=slack.base_url, DATABASE_URL=f"sqlite:///{tmp_path}/fresh.db",
                   SHIPBOT_STATE_DIR=str(tmp_path / "state"))
        port, log = free_port(), tmp_path / "serve.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "serve", "--config", str(config),
                "--host", "127.0.0.1", "--port", str(port),
                cwd=ROOT, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT)
        served = Served(proc, f"http://127.0.0.1:{port}", log, link, slack)
        started.append(served)
        return served

    yield launch
    for served in started:
        if served.proc.returncode is None:
            served.proc.kill()
            await served.proc.wait()
        served.socket_mode.upgrades_open.set()
        await served.socket_mode.stop()
        await served.slack.stop()


async def test_health_answers_before_slack_connects_and_sigterm_closes_the_socket(
        serve) -> None:
    served = await serve([[slash_envelope("api staging v1.0.0")]], upgrades_open=False)
    await eventually(served.up, timeout=60)
    await eventually(served.socket_mode.connecting)
    health = await served.get("/healthz")
    assert health.status_code == 503
    assert health.json() == {"ok": False, "database": "ok", "slack": "connecting"}
    assert (await served.get("/livez")).json() == {"ok": True}
    metrics = await served.get("/metrics")
    assert metrics.status_code == 200 and "shipbot_" in metrics.text

    served.socket_mode.upgrades_open.set()
    ack = await asyncio.wait_for(served.socket_mode.acks.get(), 30)
    assert ack["envelope_id"] == "env-1" and "Deployment #1" in ack["payload"]["text"]

    async def ready() -> bool:
        return (await served.get("/healthz")).status_code == 200

    await eventually(ready)
    assert (await served.get("/healthz")).json() == \
        {"ok": True, "database": "ok", "slack": "connected"}

    served.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(served.proc.wait(), 30)
    assert served.socket_mode.close_codes == [WSCloseCode.OK], served.log.read_text()
    assert "Traceback" not in served.log.read_text()


async def test_an_envelope_right_after_hello_on_a_fresh_database_is_handled(serve) -> None:
    served = await serve([[slash_envelope("api staging v1.0.0"),
                           slash_envelope("status", envelope_id="env-2")]], upgrades_open=True)
    first = await asyncio.wait_for(served.socket_mode.acks.get(), 60)
    second = await asyncio.wait_for(served.socket_mode.acks.get(), 30)
    acks = {a["envelope_id"]: a["payload"]["text"] for a in (first, second)}
    assert "Deployment #1" in acks["env-1"], served.log.read_text()
    assert "api" in acks["env-2"]
    log = served.log.read_text()
    assert "no such table" not in log and "Traceback" not in log


async def test_asked_to_reconnect_it_reconnects_and_keeps_handling(serve) -> None:
    served = await serve([[slash_envelope("api staging v1.0.0")],
                          [slash_envelope("api dev v1.0.0", envelope_id="env-2")]],
                         upgrades_open=True)
    first = await asyncio.wait_for(served.socket_mode.acks.get(), 60)
    second = await asyncio.wait_for(served.socket_mode.acks.get(), 30)
    assert "Deployment #1" in first["payload"]["text"]
    assert second["envelope_id"] == "env-2" and "Deployment #2" in second["payload"]["text"]
    assert len(served.slack.calls_to("apps.connections.open")) == 2

    async def ready() -> bool:
        return (await served.get("/healthz")).status_code == 200

    await eventually(ready)
