"""Who is who in the workspace: user groups and users, from Slack, cached briefly.

The policy asks "is this user in @sre-leads?" on every click; Slack's answer is
cached for a few minutes so a burst of clicks costs one ``usergroups.users.list``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.engine.directory import UnknownGroup


class SlackDirectory:
    """The ``Directory`` the policy asks, answered from Slack."""

    def __init__(
        self, client: AsyncWebClient, *, ttl: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client, self.ttl, self.clock = client, ttl, clock
        self._groups: tuple[float, dict[str, str]] | None = None  # handle -> id
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._users: dict[str, tuple[float, bool]] = {}

    def _fresh(self, at: float) -> bool:
        return self.clock() - at < self.ttl

    async def _group_ids(self) -> dict[str, str]:
        if self._groups is None or not self._fresh(self._groups[0]):
            resp = await self.client.usergroups_list(include_disabled=False)
            groups: list[dict[str, str]] = resp.get("usergroups", [])
            ids = {g["handle"]: g["id"] for g in groups}
            self._groups = (self.clock(), ids)
        return self._groups[1]

    async def handles(self) -> list[str]:
        return sorted(await self._group_ids())

    async def members(self, handle: str) -> frozenset[str]:
        """User IDs in the group ``@handle`` (the leading @ is optional)."""
        handle = handle.removeprefix("@")
        cached = self._members.get(handle)
        if cached and self._fresh(cached[0]):
            return cached[1]
        group_id = (await self._group_ids()).get(handle)
        if group_id is None:
            raise UnknownGroup(f"Slack has no user group @{handle}")
        resp = await self.client.usergroups_users_list(usergroup=group_id)
        users = frozenset[str](resp.get("users", []))
        self._members[handle] = (self.clock(), users)
        return users

    async def is_active_user(self, user_id: str) -> bool:
        """False for unknown, deleted or foreign users: their clicks change nothing."""
        cached = self._users.get(user_id)
        if cached and self._fresh(cached[0]):
            return cached[1]
        try:
            resp = await self.client.users_info(user=user_id)
        except SlackApiError as exc:
            if exc.response.get("error") in ("user_not_found", "user_not_visible"):
                self._users[user_id] = (self.clock(), False)
                return False
            raise
        user = resp.get("user") or {}
        active = not user.get("deleted", False) and not user.get("is_bot", False)
        self._users[user_id] = (self.clock(), active)
        return active
