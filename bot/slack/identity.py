"""Single-workspace authorization that never waits on Slack.

Bolt's default for a bot token calls ``auth.test`` on the first request and answers
"installation no longer available" when that call fails, so a restart during a Slack
429/500 turned every command into an error. Shipbot serves one workspace with one
configured token: every request is authorized from that token at once, and the bot's
identity (user id, team) is learned in the background with retries, then cached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)
FIRST_DELAY, MAX_DELAY, ATTEMPTS = 1.0, 60.0, 8  # then the next request starts again


class BotIdentity:
    """The configured bot token, plus what ``auth.test`` says about it once Slack answers."""

    def __init__(self, client: AsyncWebClient, token: str, *,
                 first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY) -> None:
        self.client, self.token = client, token
        self.first_delay, self.max_delay = first_delay, max_delay
        self.known: dict[str, Any] | None = None
        self._learning: asyncio.Task[None] | None = None

    @property
    def bot_user_id(self) -> str | None:
        return self.known.get("user_id") if self.known else None

    def authorizer(self) -> Callable[..., Awaitable[AuthorizeResult]]:
        """Bolt's ``authorize=`` (a plain function: Bolt passes arguments by their names)."""
        async def authorize(enterprise_id: str | None, team_id: str | None,
                            user_id: str | None) -> AuthorizeResult:
            return self.result(enterprise_id, team_id, user_id)

        return authorize

    def result(self, enterprise_id: str | None, team_id: str | None,
               user_id: str | None) -> AuthorizeResult:
        """No Slack call, ever; the identity fields once they are known."""
        self._learn_soon()
        known = self.known or {}
        return AuthorizeResult(
            enterprise_id=enterprise_id or known.get("enterprise_id"),
            team_id=team_id or known.get("team_id"), team=known.get("team"),
            url=known.get("url"), bot_user_id=known.get("user_id"),
            bot_id=known.get("bot_id"), bot_token=self.token, user_id=user_id)

    def _learn_soon(self) -> None:
        if self.known is None and (self._learning is None or self._learning.done()):
            self._learning = asyncio.get_running_loop().create_task(self.learn())

    async def learn(self) -> None:
        """Ask ``auth.test`` until it answers, backing off up to ``max_delay``; after
        ``ATTEMPTS`` failures stop (the next request starts over), so no task outlives
        a long outage for nothing."""
        delay = self.first_delay
        for _ in range(ATTEMPTS):
            try:
                resp = await self.client.auth_test(token=self.token)
                self.known = dict(resp.data) if isinstance(resp.data, dict) else {}
                log.info("Slack identity: bot user %s in team %s", self.bot_user_id,
                         self.known.get("team_id"))
                return
            except Exception as exc:  # any failure means "ask again later"
                log.warning("auth.test failed (%s); asking again in %.0f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_delay)
