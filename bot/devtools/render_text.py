"""Block Kit and Slack mrkdwn as terminal text, for `shipbot console`.

Pure functions (no I/O; ``TextStyle.for_stream`` only looks at the stream) so the
console's transcript is predictable and the rendering is tested on the JSON the real
builders in ``bot.slack.blocks`` produce.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TextIO

Block = Mapping[str, Any]

# The emoji codes Shipbot posts (STATE_EMOJI and the thread notes); others stay ``:code:``.
EMOJI: Mapping[str, str] = MappingProxyType({
    "inbox_tray": "📥", "raised_hand": "✋", "hourglass_flowing_sand": "⏳",
    "hammer_and_wrench": "🛠️", "rocket": "🚀", "mag": "🔍", "arrow_double_up": "⏫",
    "double_vertical_bar": "⏸️", "white_check_mark": "✅", "no_entry": "⛔",
    "alarm_clock": "⏰", "heavy_multiplication_x": "✖️", "x": "❌", "rewind": "⏪",
    "leftwards_arrow_with_hook": "↩️", "rotating_light": "🚨", "label": "🏷️",
    "warning": "⚠️", "lock": "🔒", "unlock": "🔓", "snowflake": "❄️", "sunny": "☀️",
    "construction": "🚧", "ambulance": "🚑", "tada": "🎉",
})  # fmt: skip

_ANSI = MappingProxyType({
    "bold": "\x1b[1m", "dim": "\x1b[2m", "italic": "\x1b[3m", "strike": "\x1b[9m",
    "danger": "\x1b[31m", "primary": "\x1b[32m", "reset": "\x1b[0m",
})  # fmt: skip
_ANSI_CODE = re.compile(r"\x1b\[[0-9;]*m")
_LINK = re.compile(r"<([^<>\n]+)>")
_EMOJI_CODE = re.compile(r":([a-z0-9_+-]+):")
_INLINE_CODE = re.compile(r"(`[^`\n]+`)")
_FENCE = "```"
# Slack only formats *bold*, _italic_ and ~strike~ at word boundaries.
_FORMATS = (
    ("bold", re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")),
    ("italic", re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")),
    ("strike", re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")),
)
_BOLD_LABEL = re.compile(r"^\*([^*\n]+)\*$")


@dataclass(frozen=True)
class TextStyle:
    """How to draw: ANSI colours only on a terminal, emoji only where the encoding has them."""

    color: bool = False
    emoji: bool = True
    max_code_lines: int | None = None  # long build output: keep the last lines

    @classmethod
    def for_stream(cls, out: TextIO, max_code_lines: int | None = 8) -> TextStyle:
        """Colour on a terminal (unless NO_COLOR), emoji only if the encoding is UTF-8."""
        tty = bool(getattr(out, "isatty", lambda: False)())
        encoding = (getattr(out, "encoding", None) or "utf-8").lower().replace("-", "")
        return cls(color=tty and "NO_COLOR" not in os.environ,
                   emoji=encoding in ("utf8", "utf_8"), max_code_lines=max_code_lines)

    def paint(self, text: str, *styles: str) -> str:
        if not self.color or not styles or not text:
            return text
        return "".join(_ANSI[s] for s in styles) + text + _ANSI["reset"]


PLAIN = TextStyle()


@dataclass(frozen=True)
class Button:
    """A clickable element, with what a ``block_actions`` payload needs to press it."""

    label: str
    action_id: str
    value: str
    block_id: str
    style: str | None = None


def _link(match: re.Match[str]) -> str:
    """``<@U1>``, ``<#C1|name>``, ``<!here>``, ``<url|label>`` as a reader would say them."""
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("@"):
        return f"@{label}" if label else target
    if target.startswith("#"):
        return f"#{label}" if label else target
    if target.startswith("!"):
        if label:
            return label
        return "@" + target[1:].split("^")[0]
    if label and label != target:
        return f"{label} ({target})"
    return target


def _unescape(text: str) -> str:
    """Slack escapes only these three; ``&amp;`` last so ``&amp;lt;`` stays ``&lt;``."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _emoji(text: str, style: TextStyle) -> str:
    if not style.emoji:
        return text
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def inline(text: str, style: TextStyle = PLAIN) -> str:
    """One run of mrkdwn (no code fences) as plain or ANSI text; `code` spans kept verbatim."""
    out: list[str] = []
    for i, part in enumerate(_INLINE_CODE.split(text)):
        if i % 2:  # inside backticks: Slack does not format here
            out.append(_unescape(part))
            continue
        part = _emoji(_LINK.sub(_link, part), style)
        for name, pattern in _FORMATS:
            part = pattern.sub(lambda m, n=name: style.paint(m.group(1), n), part)
        out.append(_unescape(part))
    return "".join(out)


def _code_lines(body: str, style: TextStyle) -> list[str]:
    lines = _unescape(body).strip("\n").splitlines() or [""]
    limit = style.max_code_lines
    if limit is not None and len(lines) > limit:
        hidden = len(lines) - limit
        lines = [f"… {hidden} earlier line{'s' if hidden > 1 else ''}", *lines[-limit:]]
    return ["    " + style.paint(line, "dim") for line in lines]


def mrkdwn(text: str, style: TextStyle = PLAIN) -> list[str]:
    """Mrkdwn text as lines; ```fenced``` code is indented, the rest made readable."""
    lines: list[str] = []
    for i, part in enumerate(text.split(_FENCE)):
        if i % 2:
            lines.extend(_code_lines(part, style))
        elif part.strip("\n"):
            lines.extend(inline(line, style) for line in part.strip("\n").splitlines())
    return lines


def _labelled(text: str, style: TextStyle) -> list[str]:
    """``*Label*\\nvalue`` (fields, and sections such as *Reason*) as ``Label: value``."""
    first, _, rest = text.partition("\n")
    label = _BOLD_LABEL.match(first.strip())
    if label and rest and _FENCE not in rest:
        value = [inline(line, style) for line in rest.splitlines() if line.strip()]
        head = style.paint(_unescape(label.group(1)), "bold") + ":"
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
        return _emoji(raw, style).splitlines() if obj.get("emoji", True) else raw.splitlines()
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


def title_of(lines: Sequence[str], limit: int = 60) -> str:
    """A short name for a rendered message: its header, or its first line."""
    first = plain(next((line for line in lines if line.strip()), ""))
    title = first.removeprefix("== ").removesuffix(" ==")
    return title if len(title) <= limit else title[: limit - 1] + "…"


def plain(line: str) -> str:
    """A rendered line without its ANSI colours."""
    return _ANSI_CODE.sub("", line)


def channel_label(channel: str, name: str | None = None) -> str:
    """``#name`` as Slack shows a channel: its ``name`` when the ID's name is known, else
    the name or ID given (Slack answers with IDs; configs may hold names or IDs)."""
    if name:
        return f"#{name.removeprefix('#')}"
    return channel if channel.startswith("#") else f"#{channel}"


def format_aside(tag: str, lines: Sequence[str]) -> list[str]:
    """``(only you) first line`` with the rest aligned under it."""
    pad = " " * (len(tag) + 1)
    return [f"{tag} {lines[0]}", *((pad + x).rstrip() for x in lines[1:])] if lines else []


def format_root(channel: str, lines: Sequence[str]) -> list[str]:
    """A new top-level message: who posted where, then its content indented."""
    return [f"{channel}  [shipbot]", *("  " + line for line in lines)]


def format_reply(lines: Sequence[str]) -> list[str]:
    """A thread reply, hung under the message above it."""
    if not lines:
        return []
    return ["  └ " + lines[0], *("    " + line for line in lines[1:])]


def format_update(
    channel: str, before: Sequence[str], after: Sequence[str], *, reply: bool = False
) -> list[str]:
    """An edited message: only the lines that changed, and buttons that went away."""
    old, new = set(before), set(after)
    added = [line for line in after if line not in old]
    gone = [line for line in before if line not in new and plain(line).startswith("[ ")]
    if not added and not gone:
        return []
    pad = "    " if reply else "  "
    head = f"{channel}  (updated) {title_of(after)}"
    if reply:
        head = f"  └ (updated) {title_of(after)}"
    body = [line for line in added if line != after[0]]  # the title is in the head already
    return [head, *(pad + line for line in body), *(f"{pad}{line} (gone)" for line in gone)]
