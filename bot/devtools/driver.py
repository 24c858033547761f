"""Sends Slack-shaped, properly signed requests to a running Shipbot over HTTP.

Shared by the tests, the benchmarks and `shipbot console`, so all three exercise
the exact code path Slack does: signature check, Bolt routing, ack.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.devtools.fake_slack_channels import ChannelDirectory, is_conversation_id, normal_name
from integrations.http import system_tls

TEAM = {"id": "T0001", "domain": "shipbot-test"}
DEFAULT_CHANNEL = "#deploys"  # where commands are typed and buttons clicked unless told


def sign(secret: str, body: str, timestamp: int | None = None) -> dict[str, str]:
    """Slack's v0 signature headers for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    base = f"v0:{ts}:{body}".encode()
    digest = hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


class SlackDriver:
    """Builds and signs requests; ``channels`` is the fake's directory, so a channel named
    in a test (``#deploys-api``) is sent as the ID Slack would put in the payload, and the
    user acting there is in it. ``triggers`` issues trigger_ids the fake's views.open knows
    (``FakeSlack.issue_trigger``); without it they are random."""

    def __init__(self, base_url: str, signing_secret: str, *, timeout: float = 10.0,
                 channels: ChannelDirectory | None = None,
                 triggers: Callable[[], str] | None = None) -> None:
        self.url = base_url.rstrip("/") + "/slack/events"
        self.secret = signing_secret
        # The process's TLS context: loading the CA bundle per client costs ~16 ms.
        self.http = httpx.AsyncClient(timeout=timeout, verify=system_tls())
        self.channels = channels or ChannelDirectory()
        self.triggers = triggers or (lambda: f"{uuid.uuid4().int % 10**12}.1.{uuid.uuid4().hex}")

    def where(self, channel: str, user: str | None = None) -> tuple[str, str]:
        """(ID, name) of a channel given by ID or name: payloads carry the ID, never ``#``.
        With ``user``, that user is acting there, so is in the channel."""
        cid = self.channels.visit(channel, user) if user else self.channels.lookup(channel)
        if self.channels.user_of(cid) or cid.startswith("D"):
            return cid, "directmessage"
        known = self.channels.name_of(cid)
        return cid, known or (cid.lower() if is_conversation_id(channel) else normal_name(channel))

    async def aclose(self) -> None:
        await self.http.aclose()

    def command_body(
        self, text: str, *, user: str = "U0ALICE", channel: str = DEFAULT_CHANNEL,
        command: str = "/deploy", trigger_id: str | None = None,
    ) -> str:
        channel_id, channel_name = self.where(channel, user)
        return urlencode({
            "token": "unused-verification-token",
            "team_id": TEAM["id"], "team_domain": TEAM["domain"],
            "channel_id": channel_id, "channel_name": channel_name,
            "user_id": user, "user_name": user.lower(),
            "command": command, "text": text,
            "api_app_id": "A0SHIPBOT", "is_enterprise_install": "false",
            "response_url": "https://hooks.slack.invalid/commands/T0001/1/x",
            "trigger_id": trigger_id or self.triggers(),
        })

    async def command(self, text: str, **kwargs: Any) -> httpx.Response:
        """POST a slash command; returns Slack's view of our ack (status, JSON body)."""
        headers = kwargs.pop("headers", {})
        body = self.command_body(text, **kwargs)
        return await self.post(body, "application/x-www-form-urlencoded", headers)

    def action_payload(
        self, action_id: str, value: str, *, user: str = "U0ALICE",
        channel: str = DEFAULT_CHANNEL, message_ts: str = "1700000000.000100", block_id: str = "b",
    ) -> dict[str, Any]:
        """A ``block_actions`` payload shaped as Slack's docs show for a button click on a
        message in ``channel`` (an ID, or a name the payload carries as its ID)."""
        channel_id, channel_name = self.where(channel, user)
        return {
            **_interaction("block_actions", user),
            "container": {"type": "message", "message_ts": message_ts,
                          "channel_id": channel_id, "is_ephemeral": False},
            "trigger_id": self.triggers(),
            "channel": {"id": channel_id, "name": channel_name},
            "message": {"type": "message", "ts": message_ts, "text": "", "blocks": []},
            "response_url": "https://hooks.slack.invalid/actions/T0001/1/x",
            "actions": [{
                "type": "button", "action_id": action_id, "block_id": block_id,
                "text": {"type": "plain_text", "text": action_id}, "value": value,
                "action_ts": f"{time.time():.6f}",
            }],
        }

    async def click(self, action_id: str, value: str, **kwargs: Any) -> httpx.Response:
        payload = self.action_payload(action_id, value, **kwargs)
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded", {})

    def view_payload(
        self, callback_id: str, private_metadata: str, values: dict[str, dict[str, Any]],
        *, user: str = "U0ALICE",
    ) -> dict[str, Any]:
        """A ``view_submission`` payload as Slack's docs show (state.values by block/action)."""
        return {
            **_interaction("view_submission", user),
            "trigger_id": self.triggers(),
            "view": {
                "id": f"V{uuid.uuid4().hex[:10].upper()}", "team_id": TEAM["id"],
                "type": "modal", "callback_id": callback_id,
                "private_metadata": private_metadata, "blocks": [],
                "state": {"values": values}, "hash": "1700000000.abcdef",
                "title": {"type": "plain_text", "text": "Reject deployment"},
                "app_id": "A0SHIPBOT", "bot_id": "BBOT",
            },
            "response_urls": [],
            "is_enterprise_install": False,
        }

    async def submit_view(self, callback_id: str, private_metadata: str,
                          values: dict[str, dict[str, Any]], **kwargs: Any) -> httpx.Response:
        payload = self.view_payload(callback_id, private_metadata, values, **kwargs)
        body = urlencode({"payload": json.dumps(payload)})
        return await self.post(body, "application/x-www-form-urlencoded", {})

    async def post(self, body: str, content_type: str, headers: dict[str, str]) -> httpx.Response:
        signed = {**sign(self.secret, body), "Content-Type": content_type, **headers}
        return await self.http.post(self.url, content=body, headers=signed)


def _interaction(kind: str, user: str) -> dict[str, Any]:
    """The fields every interaction payload starts with: its type, team, user and app."""
    return {
        "type": kind, "team": TEAM,
        "user": {"id": user, "username": user.lower(), "name": user.lower(),
                 "team_id": TEAM["id"]},
        "api_app_id": "A0SHIPBOT", "token": "unused-verification-token",
    }
