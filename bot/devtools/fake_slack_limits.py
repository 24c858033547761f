"""Request parsing and Slack's documented Web API limits for the fake Slack server.

Kept apart from the server and message store in ``fake_slack`` so the rules can be read
(and unit-tested) against the Block Kit reference; only ``read_params`` touches aiohttp.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MAX_MESSAGE_BLOCKS = 50
MAX_MODAL_BLOCKS = 100
MAX_MESSAGE_TEXT = 40_000
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
MAX_ACTIONS_ELEMENTS = 25
MAX_CONTEXT_ELEMENTS = 10
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_ID_LENGTH = 255
MAX_MODAL_TITLE = 24

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


def _text_of(obj: Any) -> str:
    """Text of a text object, tolerating plain strings the way sloppy callers send them."""
    if isinstance(obj, dict):
        return str(obj.get("text", ""))
    return "" if obj is None else str(obj)


def _too_long(value: str, limit: int, pointer: str) -> list[str]:
    if len(value) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{pointer}]"]
    return []


def _too_many(items: list[Any], limit: int, pointer: str) -> list[str]:
    if len(items) > limit:
        return [f"no more than {limit} items allowed [json-pointer:{pointer}]"]
    return []


def _element_errors(element: dict[str, Any], pointer: str) -> list[str]:
    errors = _too_long(str(element.get("action_id", "")), MAX_ID_LENGTH, f"{pointer}/action_id")
    if element.get("type") == "button":
        text = _text_of(element.get("text"))
        errors += _too_long(text, MAX_BUTTON_TEXT, f"{pointer}/text/text")
        errors += _too_long(str(element.get("value", "")), MAX_BUTTON_VALUE, f"{pointer}/value")
    return errors


def _block_errors(block: Any, pointer: str) -> list[str]:
    if not isinstance(block, dict) or "type" not in block:
        return [f"missing required field: type [json-pointer:{pointer}]"]
    errors = _too_long(str(block.get("block_id", "")), MAX_ID_LENGTH, f"{pointer}/block_id")
    kind = block["type"]
    elements = block.get("elements") or []
    if kind == "section":
        errors += _too_long(_text_of(block.get("text")), MAX_SECTION_TEXT, f"{pointer}/text/text")
        fields = block.get("fields") or []
        errors += _too_many(fields, MAX_SECTION_FIELDS, f"{pointer}/fields")
        for i, f in enumerate(fields):
            errors += _too_long(_text_of(f), MAX_FIELD_TEXT, f"{pointer}/fields/{i}/text")
        if isinstance(block.get("accessory"), dict):
            errors += _element_errors(block["accessory"], f"{pointer}/accessory")
    elif kind == "header":
        errors += _too_long(_text_of(block.get("text")), MAX_HEADER_TEXT, f"{pointer}/text/text")
    elif kind == "actions":
        errors += _too_many(elements, MAX_ACTIONS_ELEMENTS, f"{pointer}/elements")
        for i, el in enumerate(elements):
            if isinstance(el, dict):
                errors += _element_errors(el, f"{pointer}/elements/{i}")
    elif kind == "context":
        errors += _too_many(elements, MAX_CONTEXT_ELEMENTS, f"{pointer}/elements")
    return errors


def block_errors(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str] | None:
    """Return Slack-style error strings for ``blocks``, or None if they are not a list at all."""
    if not isinstance(blocks, list):
        return None
    errors = _too_many(blocks, max_blocks, "/blocks")
    for i, block in enumerate(blocks):
        errors += _block_errors(block, f"/blocks/{i}")
    return errors


def error_body(error: str, messages: list[str] | None = None) -> dict[str, Any]:
    """Build Slack's error envelope; detail goes to ``response_metadata`` like the real API."""
    body: dict[str, Any] = {"ok": False, "error": error}
    if messages:
        if error == "invalid_blocks":
            body["errors"] = list(messages)
        body["response_metadata"] = {"messages": [f"[ERROR] {m}" for m in messages]}
    return body


def message_error(params: dict[str, Any]) -> dict[str, Any] | None:
    """Validate a chat.postMessage/update/postEphemeral payload; None when Slack would accept it."""
    text = params.get("text")
    blocks = params.get("blocks")
    if not text and not blocks and not params.get("attachments"):
        return error_body("no_text")
    if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
        return error_body("msg_too_long")
    if blocks in (None, "", []):
        return None
    errors = block_errors(blocks)
    if errors is None:
        return error_body("invalid_blocks_format")
    return error_body("invalid_blocks", errors) if errors else None


def view_error(view: Any) -> dict[str, Any] | None:
    """Validate a views.open/update ``view``; Slack reports modal problems as invalid_arguments."""
    if not isinstance(view, dict):
        return error_body("invalid_arguments", ["missing required field: view"])
    title = _text_of(view.get("title"))
    errors = _too_long(title, MAX_MODAL_TITLE, "/view/title/text")
    blocks = block_errors(view.get("blocks", []), MAX_MODAL_BLOCKS)
    errors += ["must be an array [json-pointer:/view/blocks]"] if blocks is None else blocks
    return error_body("invalid_arguments", errors) if errors else None


@dataclass
class TokenBucket:
    """Per-channel posting allowance: Slack allows ~1 msg/s per channel with short bursts."""

    rate: float
    burst: int
    tokens: float = field(default=0.0)
    updated: float | None = None

    def take(self, now: float) -> int:
        """Consume one token; return 0 on success or the whole seconds to wait (>= 1)."""
        if self.updated is None:
            self.tokens = float(self.burst)
        else:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))


class PostRateLimiter:
    """One TokenBucket per channel, mirroring Slack's per-channel chat.postMessage limit."""

    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("post rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, channel: str, now: float) -> int:
        """0 if the post may go through now, else the Retry-After seconds to send back."""
        bucket = self.buckets.setdefault(channel, TokenBucket(self.rate, self.burst))
        return bucket.take(now)


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
