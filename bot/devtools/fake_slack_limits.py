"""Request parsing, Slack's error envelope, token checks and injected failures for the fake
Slack server (Block Kit rules: ``fake_slack_blocks``; rate limits: ``fake_slack_rates``).
Only ``read_params`` touches aiohttp.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from aiohttp import web

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Params that Slack accepts as JSON-encoded strings in form bodies.
JSON_PARAMS = ("blocks", "attachments", "view", "files", "metadata")


def decode_json_params(params: dict[str, Any]) -> dict[str, Any]:
    """Decode JSON-string params so recorded calls look the same for form and JSON bodies."""
    out = dict(params)
    for key in JSON_PARAMS:
        value = out.get(key)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass  # left as a string; validation reports invalid_blocks_format
    return out


def error_body(error: str, messages: list[str] | None = None) -> dict[str, Any]:
    """Build Slack's error envelope; detail goes to ``response_metadata`` like the real API."""
    body: dict[str, Any] = {"ok": False, "error": error}
    if messages:
        if error == "invalid_blocks":
            body["errors"] = list(messages)
        body["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in messages]}
    return body


@dataclass
class InjectedFailure:
    """A canned failure queued by ``FakeSlack.fail_next`` for the next ``remaining`` calls."""

    error: str
    status: int
    remaining: int
    retry_after: int | None

    def response(self) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Consume one use and return (status, body, headers) for the HTTP reply."""
        self.remaining -= 1
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        return self.status, error_body(self.error), headers


def pop_failure(queue: list[InjectedFailure]) -> tuple[int, dict[str, Any], dict[str, str]] | None:
    """Use up the oldest queued failure for a method, dropping it once exhausted."""
    if not queue:
        return None
    reply = queue[0].response()
    if queue[0].remaining <= 0:
        queue.pop(0)
    return reply


def auth_error(
    authorization: str | None, token_param: Any, accepted: Collection[str] | None,
    kind: str = "xoxb-",
) -> dict[str, Any] | None:
    """Slack reads the bearer header first, then ``token``; None accepts any token of the
    method's ``kind`` (``xapp-`` for apps.connections.open, ``xoxb-`` otherwise)."""
    header = authorization or ""
    token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else token_param
    if not token:
        return error_body("not_authed")
    ok = token in accepted if accepted is not None else str(token).startswith(kind)
    return None if ok else error_body("invalid_auth")


async def read_params(request: web.Request) -> dict[str, Any] | None:
    """Query string plus body; slack_sdk sends JSON, form data or *only* query params by method.

    JSON-string ``blocks``/``attachments``/``view``/``files`` are decoded; None means bad JSON.
    """
    params: dict[str, Any] = dict(request.query)
    if request.body_exists and request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            return None
        if not isinstance(body, dict):
            return None
        params.update(body)
    elif request.body_exists and request.content_type in FORM_TYPES:
        for key, value in (await request.post()).items():
            params[key] = value.file.read() if isinstance(value, web.FileField) else value
    return decode_json_params(params)
