"""The two doors to Slack, each passing the bot's one redaction step.

Everything the bot says goes out either as a Web API call (messages, updates, ephemeral
answers, modals, file titles: all through ``api_call``) or as the body of an ack, which
Bolt returns from ``async_dispatch`` both to the HTTP adapter and to Socket Mode. Redacting
there means no caller (notifier, outbox, listeners) can forget it.
"""

from __future__ import annotations

import json
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.engine.urgency import Urgency
from bot.logs import quiet_signature_failures
from bot.redact import Redactor
from bot.slack.retries import Backoffs


class RedactingWebClient(AsyncWebClient):
    """An ``AsyncWebClient`` whose every outgoing argument is redacted, recursively."""

    def __init__(self, *args: Any, redactor: Redactor, backoffs: Backoffs | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.redactor, self.backoffs = redactor, backoffs or Backoffs()

    async def api_call(  # type: ignore[override]
        self, api_method: str, *, http_verb: str = "POST", files: dict[str, Any] | None = None,
        data: Any = None, params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None, headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        r = self.redactor
        return await super().api_call(
            api_method, http_verb=http_verb, files=files,
            data=r.api_args(data) if isinstance(data, dict) else data,
            params=r.api_args(params), json=r.api_args(json), headers=headers, auth=auth)


class RedactingApp(AsyncApp):
    """A Bolt app whose responses (ack bodies: slash command replies, modal errors) are
    redacted with its client's redactor, the same instance the Web API calls use.

    Every request, over HTTP or Socket Mode, is ``urgent`` until acknowledged: a person
    waits for it, so the engine's background work holds back meanwhile (a Bolt middleware
    would not do: the chain runs before the listener, not around it)."""

    def __init__(self, *, client: RedactingWebClient, urgency: Urgency | None = None,
                 **kwargs: Any) -> None:
        super().__init__(client=client, **kwargs)
        self._redactor = client.redactor
        self._urgency = urgency or Urgency()
        quiet_signature_failures()

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        async with self._urgency.urgent():
            resp = await super().async_dispatch(req)
        if resp.body:
            resp.body = self._redact_body(resp.body)
        return resp

    def _redact_body(self, body: str) -> str:
        try:
            parsed = json.loads(body)
        except ValueError:
            return self._redactor.text(body)
        redacted = self._redactor.value(parsed)
        return body if redacted == parsed else json.dumps(redacted)
