"""Who is who in the workspace, as the policy needs it: members of a user group, and
whether a user is active. The engine defines what it asks; ``bot.slack.directory``
answers from Slack."""

from __future__ import annotations

from typing import Protocol


class UnknownGroup(Exception):
    """The config names a user group that the workspace does not know."""


class Directory(Protocol):
    async def members(self, handle: str) -> frozenset[str]: ...

    async def is_active_user(self, user_id: str) -> bool: ...
