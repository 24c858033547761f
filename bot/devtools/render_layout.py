"""Where a rendered message sits in the console transcript: root, reply, aside, update.

Apart from the renderers because these decide the transcript's shape (what an edit
reprints, how a thread hangs), not how one message's Block Kit reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.devtools.render_mrkdwn import plain


def title_of(lines: Sequence[str], limit: int = 60) -> str:
    """A short name for a rendered message: its header, or its first line."""
    first = plain(next((line for line in lines if line.strip()), ""))
    title = first.removeprefix("== ").removesuffix(" ==")
    return title if len(title) <= limit else title[: limit - 1] + "…"


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
