"""Slack mrkdwn safety: text from users or programs must not ping, link or format."""

from __future__ import annotations

import re

_CHANNEL_ID = re.compile(r"^[CG][A-Z0-9]{8,}$")


def escape(text: str) -> str:
    """Escape Slack's control characters, so ``<!here>`` shows as text instead of pinging."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def channel_mention(channel: str) -> str:
    """A configured channel in message text: an ID (``C0123ABCD``) must be written
    ``<#C0123ABCD>`` for Slack to show it as ``#name`` (raw, readers see the bare ID);
    a ``#name`` is shown as written."""
    return f"<#{channel}>" if _CHANNEL_ID.match(channel) else channel


def code_or(value: str | None, otherwise: str) -> str:
    """``value`` as inline code, or the words to show when there is none
    (e.g. a previous version Shipbot never saw: "the previous version")."""
    return f"`{value}`" if value else otherwise


def permalink(channel: str | None, ts: str | None) -> str | None:
    """A link to a message, from its channel ID and ts (no Web API call)."""
    if not channel or not ts:
        return None
    return f"https://slack.com/archives/{channel}/p{ts.replace('.', '')}"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """'1 approval', '2 approvals': never 'approval(s)'."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
