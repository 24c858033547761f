"""Block Kit as terminal text, for `shipbot console`; the one import for its renderers.

Pure functions (no I/O; ``TextStyle.for_stream`` only looks at the stream) so the
console's transcript is predictable and the rendering is tested on the JSON the real
builders in ``bot.slack.blocks`` produce. Mrkdwn and the transcript layout live in
``render_mrkdwn`` and ``render_layout``; their names are offered here too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.devtools.render_layout import (
    channel_label,
    format_aside,
    format_reply,
    format_root,
    format_update,
    title_of,
)
from bot.devtools.render_mrkdwn import (
    EMOJI,
    FENCE,
    PLAIN,
    TextStyle,
    emoji,
    inline,
    mrkdwn,
    plain,
    unescape,
)

__all__ = [  # the console's and the tests' one import
    "EMOJI", "PLAIN", "Block", "Button", "TextStyle", "buttons", "channel_label",
    "format_aside", "format_reply", "format_root", "format_update", "inline", "inputs",
    "mrkdwn", "plain", "render_block", "render_blocks", "render_message", "render_view",
    "title_of",
]

Block = Mapping[str, Any]
_BOLD_LABEL = re.compile(r"^\*([^*\n]+)\*$")


@dataclass(frozen=True)
class Button:
    """A clickable element, with what a ``block_actions`` payload needs to press it."""

    label: str
    action_id: str
    value: str
    block_id: str
    style: str | None = None


def _labelled(text: str, style: TextStyle) -> list[str]:
    """``*Label*\\nvalue`` (fields, and sections such as *Reason*) as ``Label: value``."""
    first, _, rest = text.partition("\n")
    label = _BOLD_LABEL.match(first.strip())
    if label and rest and FENCE not in rest:
        value = [inline(line, style) for line in rest.splitlines() if line.strip()]
        head = style.paint(unescape(label.group(1)), "bold") + ":"
        if len(value) == 1:
            return [f"{head} {value[0]}"]
        return [head, *("  " + v for v in value)]
    return mrkdwn(text, style)


def _text_of(obj: Mapping[str, Any] | None, style: TextStyle) -> list[str]:
    """A text object: plain_text is literal (bar emoji codes), mrkdwn is formatted."""
    if not obj:
        return []
    raw = str(obj.get("text", ""))
    if obj.get("type") == "plain_text":
        return emoji(raw, style).splitlines() if obj.get("emoji", True) else raw.splitlines()
    return _labelled(raw, style)


def _element(element: Mapping[str, Any], style: TextStyle) -> str:
    """An interactive element as it would look: ``[ Cancel ]``, ``[ Pick one ▾ ]``."""
    kind = element.get("type")
    if kind == "button":
        label = " ".join(_text_of(element.get("text"), style))
        look = {"danger": ("danger", "bold"), "primary": ("primary", "bold")}
        return style.paint(f"[ {label} ]", *look.get(str(element.get("style")), ()))
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    placeholder = element.get("placeholder") or element.get("text")
    label = " ".join(_text_of(placeholder, style)) or str(kind)
    return f"[ {label} ▾ ]"


def render_block(block: Block, style: TextStyle = PLAIN) -> list[str]:
    """One block as lines of text; unknown block types are named, never dropped silently."""
    kind = block.get("type")
    if kind == "header":
        return [style.paint(f"== {' '.join(_text_of(block.get('text'), style))} ==", "bold")]
    if kind == "section":
        lines = _text_of(block.get("text"), style)
        for field in block.get("fields") or []:
            lines.extend(_text_of(field, style))
        if accessory := block.get("accessory"):
            lines.append(_element(accessory, style))
        return lines
    if kind == "context":
        parts = [
            " ".join(_text_of(el, style)) if el.get("type") != "image" else _element(el, style)
            for el in block.get("elements") or []
        ]
        return [style.paint("· " + "  ".join(parts), "dim")] if parts else []
    if kind == "actions":
        return ["  ".join(_element(el, style) for el in block.get("elements") or [])]
    if kind == "input":
        label = " ".join(_text_of(block.get("label"), style))
        element = block.get("element") or {}
        hint = " ".join(_text_of(element.get("placeholder"), style)) or "…"
        return [f"{label} [ {hint} ]"]
    if kind == "divider":
        return ["─" * 20]
    if kind == "image":
        return [_element(block, style)]
    return [f"[{kind} block]"]


def render_blocks(blocks: Sequence[Block], style: TextStyle = PLAIN) -> list[str]:
    return [line for block in blocks for line in render_block(block, style)]


def render_message(message: Mapping[str, Any], style: TextStyle = PLAIN) -> list[str]:
    """A message's blocks, or its ``text`` when it has none (as Slack shows it)."""
    blocks = message.get("blocks")
    if isinstance(blocks, list) and blocks:
        return render_blocks(blocks, style)
    return mrkdwn(str(message.get("text") or ""), style) or ["(empty message)"]


def render_view(view: Mapping[str, Any], style: TextStyle = PLAIN) -> list[str]:
    """A modal: its title, its blocks (inputs as empty fields), then its two buttons."""
    title = " ".join(_text_of(view.get("title"), style))
    ends = [_element({"type": "button", "text": view[k], "style": style_}, style)
            for k, style_ in (("submit", "primary"), ("close", None)) if view.get(k)]
    return [style.paint(f"== {title} ==", "bold"), *render_blocks(view.get("blocks") or [], style),
            *(["  ".join(ends)] if ends else [])]


def inputs(view: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(block_id, action_id, element type) of each input, to build the submission."""
    return [(str(b.get("block_id", "")), str(b["element"].get("action_id", "")),
             str(b["element"].get("type", "plain_text_input")))
            for b in view.get("blocks") or [] if b.get("type") == "input" and b.get("element")]


def buttons(blocks: Sequence[Block] | None) -> list[Button]:
    """Every button in the blocks (actions elements and section accessories), in order."""
    found: list[Button] = []
    for block in blocks or []:
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if block.get("type") == "section" and block.get("accessory"):
            elements.append(block["accessory"])
        for el in elements:
            if el.get("type") == "button":
                found.append(Button(
                    label=str((el.get("text") or {}).get("text", "")),
                    action_id=str(el.get("action_id", "")), value=str(el.get("value", "")),
                    block_id=str(block.get("block_id", "")), style=el.get("style"),
                ))  # fmt: skip
    return found
