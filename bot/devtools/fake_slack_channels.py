"""Channel IDs for the fake Slack, kept as a real workspace keeps them.

Slack addresses a conversation by its ID (``C0123ABCD``). Only the oldest methods
(chat.postMessage, chat.postEphemeral) also take a name, and they answer with the ID;
newer ones (chat.update, chat.delete, chat.getPermalink, conversations.*,
files.completeUploadExternal's ``channel_id``) answer ``channel_not_found`` for a name.
Posting to a user ID goes to the app's DM with that user, a ``D...`` conversation.

IDs are derived from the name, so tests and the driver can compute them up front.
Membership decides the rest: ``not_in_channel`` when the bot is not in a public channel and
lacks ``chat:write.public``, ``user_not_in_channel`` for an ephemeral to someone not in it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    private: bool = False
    bot_member: bool = True
    members: set[str] = field(default_factory=set)


class ChannelDirectory:
    """The workspace's conversations. A channel exists once a test, the bot's config
    (``LocalBot``) or the driver (a user typing or clicking there) names it; the bot can
    always open a DM. Unknown channels, and private ones without the bot, are
    ``channel_not_found``, as Slack hides them."""

    def __init__(self) -> None:
        self.by_id: dict[str, Channel] = {}

    def add(self, channel: str, *, private: bool = False, bot_member: bool = True,
            members: Iterable[str] = ()) -> Channel:
        """Create (or update) a channel by ``#name`` or ID, with the bot in it unless told."""
        cid = self.lookup(channel)
        name = None if is_conversation_id(channel.strip()) else normal_name(channel)
        found = self.by_id.setdefault(cid, Channel(cid, name))
        found.private, found.bot_member = private, bot_member
        found.members.update(members)
        return found

    def visit(self, channel: str, user: str) -> str:
        """``user`` acts in ``channel`` (types a command, clicks a button): the channel
        exists, and the user is in it. New channels are public, without the bot."""
        cid = self.lookup(channel)
        if cid.startswith("D"):
            return cid
        if cid not in self.by_id:
            self.add(channel, bot_member=False)
        self.by_id[cid].members.add(user)
        return cid

    def lookup(self, channel: str) -> str:
        """The ID ``channel`` (ID, ``#name``, name or user ID) stands for; creates nothing."""
        text = channel.strip()
        if is_conversation_id(text):
            return text
        if USER_ID.match(text):
            return id_for_dm(text)
        return id_for_name(text)

    def resolve(self, channel: object, *, names: bool) -> str | None:
        """The ID an API call addresses; None means Slack would answer channel_not_found
        (nothing given, a name where only IDs are taken, an unknown channel, or a private
        one the bot is not in). A user ID (where names are taken) opens the app's DM."""
        text = str(channel or "").strip()
        if not is_conversation_id(text):
            if not names:
                return None
            if USER_ID.match(text):
                dm = id_for_dm(text)
                return self.by_id.setdefault(dm, Channel(dm, user=text)).id
            if not CHANNEL_NAME.match(normal_name(text)):
                return None
        found = self.by_id.get(self.lookup(text))
        if found is None or (found.private and not found.bot_member):
            return None
        return found.id

    def is_member(self, channel_id: str, user: str) -> bool:
        """Whether ``user`` is in the conversation (the other party, for a DM)."""
        found = self.by_id.get(channel_id)
        if found is None:
            return False
        return user == found.user if found.user else user in found.members

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
