"""Slack mrkdwn safety: text from users or programs must not ping, link or format."""

from __future__ import annotations


def escape(text: str) -> str:
    """Escape Slack's control characters, so ``<!here>`` shows as text instead of pinging."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
