"""Block Kit rules the fake Slack enforces, as the Block Kit reference states them.

Messages with a broken block are refused with ``invalid_blocks`` and one message per
problem, each ending in a ``[json-pointer:...]``, as Slack answers; modals with
``invalid_arguments``. Wordings seen from Slack are used where known ("must provide an
object", "must be a valid enum value", "must define either `text` or `fields`", the
length and count limits); the duplicate-ID wordings are the fake's own.
"""

from __future__ import annotations

from typing import Any

from bot.devtools.fake_slack_limits import error_body

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
TEXT_TYPES = ("plain_text", "mrkdwn")


def _text_of(obj: Any) -> str:
    return str(obj.get("text", "")) if isinstance(obj, dict) else ""


def _too_long(value: str, limit: int, pointer: str) -> list[str]:
    if len(value) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{pointer}]"]
    return []


def _too_many(items: list[Any], limit: int, pointer: str) -> list[str]:
    if len(items) > limit:
        return [f"no more than {limit} items allowed [json-pointer:{pointer}]"]
    return []


def text_object_errors(obj: Any, pointer: str, limit: int, *,
                       plain_only: bool = False) -> list[str]:
    """A composition text object: an object (not a string) whose ``type`` is plain_text or
    mrkdwn (only plain_text where the field says so) and whose text fits ``limit``."""
    if not isinstance(obj, dict):
        return [f"must provide an object [json-pointer:{pointer}]"]
    allowed = ("plain_text",) if plain_only else TEXT_TYPES
    if obj.get("type") not in allowed:
        return [f"must be a valid enum value [json-pointer:{pointer}/type]"]
    if not _text_of(obj):
        return [f"must be more than 0 characters [json-pointer:{pointer}/text]"]
    return _too_long(_text_of(obj), limit, f"{pointer}/text")


def _confirm_errors(confirm: Any, pointer: str) -> list[str]:
    """A confirmation dialog: plain_text title, confirm and deny; text of either type."""
    if not isinstance(confirm, dict):
        return [f"must provide an object [json-pointer:{pointer}]"]
    errors = text_object_errors(confirm.get("text"), f"{pointer}/text", 300)
    for key, limit in (("title", 100), ("confirm", 30), ("deny", 30)):
        errors += text_object_errors(confirm.get(key), f"{pointer}/{key}", limit,
                                     plain_only=True)
    return errors


def _element_errors(element: dict[str, Any], pointer: str) -> list[str]:
    errors = _too_long(str(element.get("action_id", "")), MAX_ID_LENGTH, f"{pointer}/action_id")
    if element.get("type") == "button":
        errors += text_object_errors(element.get("text"), f"{pointer}/text", MAX_BUTTON_TEXT,
                                     plain_only=True)
        errors += _too_long(str(element.get("value", "")), MAX_BUTTON_VALUE, f"{pointer}/value")
    if "confirm" in element:
        errors += _confirm_errors(element["confirm"], f"{pointer}/confirm")
    return errors


def _duplicate_action_ids(elements: list[Any], pointer: str) -> list[str]:
    """"Should be unique among all other action_ids in the containing block." """
    seen: set[str] = set()
    errors = []
    for i, el in enumerate(elements):
        action_id = el.get("action_id") if isinstance(el, dict) else None
        if action_id is None:
            continue
        if action_id in seen:
            errors.append(f"duplicate action_id {action_id!r} in this block "
                          f"[json-pointer:{pointer}/{i}/action_id]")
        seen.add(action_id)
    return errors


def _section_errors(block: dict[str, Any], pointer: str) -> list[str]:
    text, fields = block.get("text"), block.get("fields")
    if text is None and not fields:
        return [f"must define either `text` or `fields` [json-pointer:{pointer}/type]"]
    errors = []
    if text is not None:
        errors += text_object_errors(text, f"{pointer}/text", MAX_SECTION_TEXT)
    fields = fields if isinstance(fields, list) else []
    errors += _too_many(fields, MAX_SECTION_FIELDS, f"{pointer}/fields")
    for i, f in enumerate(fields):
        errors += text_object_errors(f, f"{pointer}/fields/{i}", MAX_FIELD_TEXT)
    accessory = block.get("accessory")
    if isinstance(accessory, dict):
        errors += _element_errors(accessory, f"{pointer}/accessory")
    return errors


def _block_errors(block: Any, pointer: str) -> list[str]:
    if not isinstance(block, dict) or "type" not in block:
        return [f"missing required field: type [json-pointer:{pointer}]"]
    errors = _too_long(str(block.get("block_id", "")), MAX_ID_LENGTH, f"{pointer}/block_id")
    kind = block["type"]
    elements = block.get("elements") or []
    if kind == "section":
        errors += _section_errors(block, pointer)
    elif kind == "header":
        errors += text_object_errors(block.get("text"), f"{pointer}/text", MAX_HEADER_TEXT,
                                     plain_only=True)
    elif kind == "actions":
        errors += _too_many(elements, MAX_ACTIONS_ELEMENTS, f"{pointer}/elements")
        for i, el in enumerate(elements):
            if isinstance(el, dict):
                errors += _element_errors(el, f"{pointer}/elements/{i}")
        errors += _duplicate_action_ids(elements, f"{pointer}/elements")
    elif kind == "context":
        errors += _too_many(elements, MAX_CONTEXT_ELEMENTS, f"{pointer}/elements")
        for i, el in enumerate(elements):
            if not (isinstance(el, dict) and el.get("type") == "image"):
                errors += text_object_errors(el, f"{pointer}/elements/{i}", MAX_SECTION_TEXT)
    elif kind == "input":
        errors += text_object_errors(block.get("label"), f"{pointer}/label", 2_000,
                                     plain_only=True)
    return errors


def block_errors(blocks: Any, max_blocks: int = MAX_MESSAGE_BLOCKS,
                 root: str = "/blocks") -> list[str] | None:
    """Slack-style error strings for ``blocks``, or None if they are not a list at all.
    A ``block_id`` must be unique within the message or view."""
    if not isinstance(blocks, list):
        return None
    errors = _too_many(blocks, max_blocks, root)
    seen: set[str] = set()
    for i, block in enumerate(blocks):
        errors += _block_errors(block, f"{root}/{i}")
        block_id = block.get("block_id") if isinstance(block, dict) else None
        if block_id is not None:
            if block_id in seen:
                errors.append(f"duplicate block_id {block_id!r} in this message "
                              f"[json-pointer:{root}/{i}/block_id]")
            seen.add(block_id)
    return errors


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
    """Validate a views.open/update ``view``; Slack reports modal problems as invalid_arguments.
    Title, submit and close are plain_text objects only."""
    if not isinstance(view, dict):
        return error_body("invalid_arguments", ["missing required field: view"])
    errors = text_object_errors(view.get("title"), "/view/title", MAX_MODAL_TITLE,
                                plain_only=True)
    for key in ("submit", "close"):
        if key in view:
            errors += text_object_errors(view[key], f"/view/{key}", MAX_MODAL_TITLE,
                                         plain_only=True)
    blocks = block_errors(view.get("blocks", []), MAX_MODAL_BLOCKS, "/view/blocks")
    errors += ["must be an array [json-pointer:/view/blocks]"] if blocks is None else blocks
    return error_body("invalid_arguments", errors) if errors else None
