"""Slack mrkdwn as terminal text, for `shipbot console`: links, emoji, *bold* and code.

Kept apart from the Block Kit walk in ``render_text`` because every text object, ack and
thread note ends up here, and its rules (Slack's word boundaries, escapes) stand alone.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TextIO

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
FENCE = "```"
# Slack only formats *bold*, _italic_ and ~strike~ at word boundaries.
_FORMATS = (
    ("bold", re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")),
    ("italic", re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")),
    ("strike", re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")),
)


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


def _paint(style: TextStyle, name: str, match: re.Match[str]) -> str:
    return style.paint(match.group(1), name)


def plain(line: str) -> str:
    """A rendered line without its ANSI colours."""
    return _ANSI_CODE.sub("", line)


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


def unescape(text: str) -> str:
    """Slack escapes only these three; ``&amp;`` last so ``&amp;lt;`` stays ``&lt;``."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def emoji(text: str, style: TextStyle) -> str:
    """``:rocket:`` codes as the emoji themselves, where the style may show emoji."""
    if not style.emoji:
        return text
    return _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def inline(text: str, style: TextStyle = PLAIN) -> str:
    """One run of mrkdwn (no code fences) as plain or ANSI text; `code` spans kept verbatim."""
    out: list[str] = []
    for i, part in enumerate(_INLINE_CODE.split(text)):
        if i % 2:  # inside backticks: Slack does not format here
            out.append(unescape(part))
            continue
        part = emoji(_LINK.sub(_link, part), style)
        for name, pattern in _FORMATS:
            part = pattern.sub(functools.partial(_paint, style, name), part)
        out.append(unescape(part))
    return "".join(out)


def _code_lines(body: str, style: TextStyle) -> list[str]:
    lines = unescape(body).strip("\n").splitlines() or [""]
    limit = style.max_code_lines
    if limit is not None and len(lines) > limit:
        hidden = len(lines) - limit
        lines = [f"… {hidden} earlier line{'s' if hidden > 1 else ''}", *lines[-limit:]]
    return ["    " + style.paint(line, "dim") for line in lines]


def mrkdwn(text: str, style: TextStyle = PLAIN) -> list[str]:
    """Mrkdwn text as lines; ```fenced``` code is indented, the rest made readable."""
    lines: list[str] = []
    for i, part in enumerate(text.split(FENCE)):
        if i % 2:
            lines.extend(_code_lines(part, style))
        elif part.strip("\n"):
            lines.extend(inline(line, style) for line in part.strip("\n").splitlines())
    return lines
