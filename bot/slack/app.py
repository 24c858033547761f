"""The Bolt app: verify, acknowledge in milliseconds, hand over to the handlers.

No business logic here. A slash command's reply is the ack body itself (ephemeral),
and its work is a database row the engine picks up, so nothing depends on this
process living on after the ack.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.redact import Redactor
from bot.slack.blocks import (
    APPROVE_ACTION,
    CANCEL_ACTION,
    CONTROL_ACTIONS,
    REJECT_ACTION,
    REJECT_CALLBACK,
    reject_modal,
)
from bot.slack.blocks_alerts import ALERT_ACTIONS
from bot.slack.redacting import RedactingApp, RedactingWebClient
from commands.handlers import CommandHandlers, Invocation

log = logging.getLogger(__name__)
SLASH_COMMANDS = ("/deploy", "/rollback")


def build_web_client(token: str, base_url: str,
                     redactor: Redactor | None = None) -> RedactingWebClient:
    """Slack client with retries on 429 (honouring Retry-After), 5xx and dropped connections,
    redacting every call (without a redactor: token shapes and the token itself)."""
    return RedactingWebClient(
        redactor=redactor or Redactor([token]),
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


def build_slack_app(
    client: RedactingWebClient, signing_secret: str | None, handlers: CommandHandlers
) -> AsyncApp:
    app = RedactingApp(
        client=client,
        signing_secret=signing_secret or "socket-mode-payloads-are-not-signed",
        request_verification_enabled=signing_secret is not None,
        logger=log,
    )

    @app.command("/deploy")
    async def deploy_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        who = Invocation(user=command["user_id"], request_key=_command_key(command))
        reply = await handlers.on_text(command.get("text", ""), who)
        await ack(text=reply.text, response_type="in_channel" if reply.public else "ephemeral")

    @app.command("/rollback")
    async def rollback_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        who = Invocation(user=command["user_id"], request_key=_command_key(command))
        reply = await handlers.on_rollback_text(command.get("text", ""), who)
        await ack(text=reply.text, response_type="ephemeral")

    async def alert_button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Alert-thread buttons; double clicks and Slack's retries are deduped by the engine."""
        await ack()
        action, user = body["actions"][0], body["user"]["id"]
        reply = await handlers.on_alert_button(ALERT_ACTIONS[action["action_id"]],
                                               str(action.get("value", "")), user)
        await _tell(client, body, user, reply.text)

    for action_id in ALERT_ACTIONS:
        app.action(action_id)(alert_button)

    button_kinds = {CANCEL_ACTION: "cancel", APPROVE_ACTION: "approve",
                     **{action_id: kind for kind, action_id in CONTROL_ACTIONS.items()}}

    async def button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        action, user = body["actions"][0], body["user"]["id"]
        kind = button_kinds[action["action_id"]]
        reply = await handlers.on_button(kind, str(action.get("value", "")), user)
        await _tell(client, body, user, reply.text)

    for action_id in button_kinds:
        app.action(action_id)(button)

    @app.action(REJECT_ACTION)
    async def reject_button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Reject asks for a reason first: a modal opened with the click's trigger_id."""
        await ack()
        user = body["user"]["id"]
        dep_id, refusal = await handlers.can_reject(str(body["actions"][0].get("value", "")), user)
        if refusal or dep_id is None:
            await _tell(client, body, user, refusal or "That button is not valid any more.")
            return
        await client.views_open(trigger_id=body["trigger_id"], view=reject_modal(dep_id))

    @app.view(REJECT_CALLBACK)
    async def reject_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                               client: AsyncWebClient) -> None:
        reason = view["state"]["values"]["reason"]["reason"].get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={"reason": "Say why, for the audit trail."})
            return
        await ack()
        user = body["user"]["id"]
        reply = await handlers.on_reject(view.get("private_metadata", ""), user, reason)
        try:
            await client.chat_postMessage(channel=user, text=reply.text)
        except Exception:
            log.warning("could not tell %s the outcome of a rejection", user, exc_info=True)

    return app


def _command_key(command: dict[str, Any]) -> str:
    """Slack sends the same trigger_id when it retries a command: our dedupe key."""
    trigger = command.get("trigger_id")
    return f"slash:{trigger}" if trigger else f"slash:no-trigger:{uuid.uuid4()}"


async def _tell(client: AsyncWebClient, body: dict[str, Any], user: str, text: str) -> None:
    """Answer a click privately in the channel it came from."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id")
    if not channel:
        return
    try:
        await client.chat_postEphemeral(channel=channel, user=user, text=text)
    except Exception:
        log.warning("could not answer user %s in %s", user, channel, exc_info=True)
