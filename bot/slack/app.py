"""The Bolt app: verify, acknowledge in milliseconds, hand over to the handlers.

No business logic here. A slash command's reply is the ack body itself (ephemeral),
and its work is a database row the engine picks up, so nothing depends on this
process living on after the ack. A click is written to the inbox before its ack and
acted on after it (bot/engine/inbox.py): a click answered with 200 is never lost.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import uuid
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.inbox import Request
from bot.engine.urgency import Urgency
from bot.redact import Redactor
from bot.slack.blocks import REJECT_CALLBACK, reject_modal
from bot.slack.identity import BotIdentity
from bot.slack.redacting import RedactingApp, RedactingWebClient
from bot.slack.replies import reply_text
from bot.slack.retries import Backoffs
from commands.actions import ACTIONS, STALE, ActionId
from commands.handlers import CommandHandlers, Invocation

log = logging.getLogger(__name__)
SLASH_COMMANDS = ("/deploy", "/rollback")
REJECT_FORM_FAILED = ("Slack did not open the form for your reason in time; nothing was "
                      "changed. Please click Reject again.")


def build_web_client(token: str, base_url: str,
                     redactor: Redactor | None = None) -> RedactingWebClient:
    """Slack client with retries on 429 (honouring Retry-After), 5xx and dropped connections,
    redacting every call (without a redactor: token shapes and the token itself). The
    client's ``backoffs`` tell which calls are waiting between attempts."""
    backoffs = Backoffs()
    return RedactingWebClient(
        redactor=redactor or Redactor([token]),
        backoffs=backoffs,
        token=token,
        base_url=base_url,
        timeout=10,
        retry_handlers=backoffs.handlers(),
    )


def build_slack_app(
    client: RedactingWebClient, signing_secret: str | None, handlers: CommandHandlers,
    urgency: Urgency | None = None,
) -> AsyncApp:
    identity = BotIdentity(client, client.token or "")
    if not any(isinstance(f, _ExpectedTokenWarning) for f in log.filters):
        log.addFilter(_ExpectedTokenWarning())
    # Verification stays on: Bolt skips it for Socket Mode envelopes, and without a signing
    # secret (Socket Mode only) an unguessable one makes every HTTP request fail it.
    app = RedactingApp(
        name="shipbot",  # else Bolt reads the source of every frame of the caller's stack
        client=client,
        signing_secret=signing_secret or secrets.token_hex(32),
        authorize=identity.authorizer(),  # one workspace, one token: no auth.test per request
        logger=log,
        urgency=urgency,
    )

    @app.command("/deploy")
    async def deploy_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        who = _invocation(command)
        reply = await handlers.on_text(command.get("text", ""), who)
        await ack(text=reply_text(reply),
                  response_type="in_channel" if reply.public else "ephemeral")

    @app.command("/rollback")
    async def rollback_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        who = _invocation(command)
        reply = await handlers.on_rollback_text(command.get("text", ""), who)
        await ack(text=reply_text(reply), response_type="ephemeral")

    async def record_ack_complete(ack: AsyncAck, request: Request,
                                  client: AsyncWebClient) -> None:
        """Acknowledged means recorded: the row is written before the 200, acted on after
        it (by a drain, if this process dies first). A retry or replay is only acked."""
        recorded = await handlers.record(request)
        await ack()
        if recorded is not None:
            await handlers.complete(recorded, functools.partial(tell_user, client))

    async def click(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Every button of ``commands.actions``; double clicks and Slack's retries are
        deduped by the inbox, the clicker is checked by the engine."""
        action = body["actions"][0]
        known = ACTIONS[ActionId(action["action_id"])]
        await record_ack_complete(ack, _click(body, known.family, {
            "action": known.name, "value": str(action.get("value", ""))}), client)

    for action_id in ACTIONS:
        app.action(action_id.value)(click)

    @app.action(ActionId.REJECT.value)
    async def reject_button(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        """Reject asks for a reason first: a modal opened with the click's trigger_id."""
        await ack()
        user = body["user"]["id"]
        dep_id, refusal = await handlers.can_reject(str(body["actions"][0].get("value", "")), user)
        if refusal or dep_id is None:
            refused = _click(body, "reject", {})  # only where to answer; nothing recorded
            await tell_user(client, refused, refusal or "That button is not valid any more.")
            return
        try:
            await client.views_open(trigger_id=body["trigger_id"], view=reject_modal(dep_id))
        except SlackApiError as exc:  # e.g. the click's trigger_id expired (3 s) meanwhile
            log.warning("could not open the reject form for %s: %s", user,
                        exc.response.get("error"))
            await tell_user(client, _click(body, "reject", {}), REJECT_FORM_FAILED)

    @app.view(REJECT_CALLBACK)
    async def reject_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any],
                               client: AsyncWebClient) -> None:
        reason = view["state"]["values"]["reason"]["reason"].get("value") or ""
        if not reason.strip():
            await ack(response_action="errors", errors={"reason": "Say why, for the audit trail."})
            return
        user = body["user"]["id"]
        request = Request(key=f"view:{view.get('id', uuid.uuid4())}:{user}", kind="reject",
                          user=user, payload={"value": view.get("private_metadata", ""),
                                              "reason": reason})  # no channel: a DM
        await record_ack_complete(ack, request, client)

    @app.action(re.compile(".*"))  # last: only what no listener above takes
    async def unknown_button(ack: AsyncAck, body: dict[str, Any],
                             client: AsyncWebClient) -> None:
        """A button we do not render (any more): never guessed, logged, and said so."""
        await ack()
        log.error("a click on an unknown button %r", body["actions"][0].get("action_id"))
        await tell_user(client, _click(body, "unknown", {}), STALE)

    return app


def _invocation(command: dict[str, Any]) -> Invocation:
    return Invocation(user=command["user_id"], request_key=_command_key(command),
                      channel=command.get("channel_id"))


class _ExpectedTokenWarning(logging.Filter):
    """Bolt warns that the client's token "will be ignored" when ``authorize=`` is given:
    that is the point (the authorize function hands Bolt the same token), not a problem."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "will be ignored" not in record.getMessage()


def _command_key(command: dict[str, Any]) -> str:
    """Slack sends the same trigger_id when it retries a command: our dedupe key."""
    trigger = command.get("trigger_id")
    return f"slash:{trigger}" if trigger else f"slash:no-trigger:{uuid.uuid4()}"


def _click(body: dict[str, Any], kind: str, payload: dict[str, Any]) -> Request:
    """A click as an inbox request. Its key is the same for Slack's retries of one click
    (message, action time, user, button) and differs for a second click."""
    action, user = body["actions"][0], body["user"]["id"]
    container = body.get("container") or {}
    message_ts = container.get("message_ts") or (body.get("message") or {}).get("ts") or ""
    moment = action.get("action_ts") or body.get("trigger_id") or uuid.uuid4().hex
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
    return Request(key=f"click:{message_ts}:{moment}:{user}:{action['action_id']}"[:255],
                   kind=kind, user=user, payload=payload, channel=channel)


async def tell_user(client: AsyncWebClient, request: Request, text: str) -> bool:
    """Answer privately in the channel of the request, else (no channel, or the bot may
    not post there) by DM. False when neither reached Slack: the inbox tries again."""
    if request.channel:
        try:
            await client.chat_postEphemeral(channel=request.channel, user=request.user,
                                            text=text)
            return True
        except Exception:
            log.warning("could not answer user %s in %s; sending a DM", request.user,
                        request.channel, exc_info=True)
    try:
        await client.chat_postMessage(channel=request.user, text=text)
        return True
    except Exception:
        log.warning("could not tell %s the outcome of %s", request.user, request.key,
                    exc_info=True)
        return False
