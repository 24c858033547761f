"""Channel IDs for the fake Slack, kept as a real workspace keeps them.

Slack addresses a conversation by its ID (``C0123ABCD``). Only the oldest methods
(chat.postMessage, chat.postEphemeral) also take a name, and they answer with the ID;
newer ones (chat.update, chat.delete, chat.getPermalink, conversations.*,
files.completeUploadExternal's ``channel_id``) answer ``channel_not_found`` for a name.
Posting to a user ID goes to the app's DM with that user, a ``D...`` conversation.

IDs are derived from the name, so tests and the driver can compute them up front.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

CONVERSATION_ID = re.compile(r"^[CGD][A-Z0-9]+$")
USER_ID = re.compile(r"^[UW][A-Z0-9]+$")
CHANNEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,79}$")


def _derived(prefix: str, key: str) -> str:
    """``prefix`` plus 10 uppercase letters and digits, stable for ``key``."""
    digest = base64.b32encode(hashlib.sha256(key.encode()).digest()).decode()
    return prefix + digest[:10]


def is_conversation_id(value: str) -> bool:
    """``C…``/``G…``/``D…`` IDs; a leading ``#`` always makes it a name."""
    return bool(CONVERSATION_ID.match(value))


def normal_name(name: str) -> str:
    """``#deploys-api`` and ``deploys-api`` are the same channel."""
    return name.strip().removeprefix("#").lower()


def id_for_name(name: str) -> str:
    """The ID the fake gives the channel called ``name`` (with or without ``#``)."""
    return _derived("C", "channel:" + normal_name(name))


def id_for_dm(user: str) -> str:
    """The ID of the app's DM with ``user``."""
    return _derived("D", "im:" + user)


@dataclass
class Channel:
    """One conversation: a named channel, a channel known only by ID, or a DM."""

    id: str
    name: str | None = None
    user: str | None = None  # the other party, for a DM


class ChannelDirectory:
    """Name <-> ID map; a channel exists from its first use (as with chat:write.public)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Channel] = {}

    def lookup(self, channel: str) -> str:
        """The ID ``channel`` (ID, ``#name``, name or user ID) stands for; creates nothing."""
        text = channel.strip()
        if is_conversation_id(text):
            return text
        if USER_ID.match(text):
            return id_for_dm(text)
        return id_for_name(text)

    def resolve(self, channel: object, *, names: bool) -> str | None:
        """The ID an API call addresses, registering it on first use; None means Slack
        would answer channel_not_found (nothing given, or a name where only IDs are taken)."""
        text = str(channel or "").strip()
        if is_conversation_id(text):
            self.by_id.setdefault(text, Channel(text))
            return text
        if not names:
            return None
        if USER_ID.match(text):
            found = self.by_id.setdefault(id_for_dm(text), Channel(id_for_dm(text), user=text))
            return found.id
        name = normal_name(text)
        if not CHANNEL_NAME.match(name):
            return None
        return self.by_id.setdefault(id_for_name(name), Channel(id_for_name(name), name)).id

    def name_of(self, channel_id: str) -> str | None:
        """The channel's name without ``#``; None for DMs and channels known only by ID."""
        found = self.by_id.get(channel_id)
        return found.name if found else None

    def user_of(self, channel_id: str) -> str | None:
        """The user a DM is with; None for anything else."""
        found = self.by_id.get(channel_id)
        return found.user if found else None

    def label(self, channel: str) -> str:
        """How Slack shows a conversation: ``#name``, or the ID if the name is unknown."""
        name = self.name_of(channel)
        if name:
            return f"#{name}"
        return channel if is_conversation_id(channel) else f"#{normal_name(channel)}"
