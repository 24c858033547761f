"""The Socket Mode connection, kept in the background.

It is opened only once the database and the HTTP server are up (so no envelope arrives
before the schema exists, and health answers even when Slack cannot be reached), and
slack_sdk's client retries and reconnects on its own. Readiness asks it whether it is
connected; the ASGI lifespan closes it before the bot stops.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

LinkState = Literal["not started", "connecting", "connected", "closed"]


class SocketModeLink:
    """One WebSocket to Slack for a Bolt app; ``start`` never waits for it to connect."""

    def __init__(self, app: AsyncApp, app_token: str) -> None:
        self._app, self._token = app, app_token
        self._handler: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False

    async def start(self) -> None:
        """Begin connecting (apps.connections.open, then the WebSocket), retrying until it
        works or ``close`` is called."""
        if self._handler is not None or self._closed:
            return
        # Built here, not in __init__: slack_sdk's client starts tasks on the running loop.
        self._handler = AsyncSocketModeHandler(self._app, self._token)
        self._connecting = asyncio.get_running_loop().create_task(
            self._handler.connect_async())

    async def state(self) -> LinkState:
        if self._closed:
            return "closed"
        if self._handler is None:
            return "not started"
        return "connected" if await self._handler.client.is_connected() else "connecting"

    async def close(self) -> None:
        """Say goodbye on the WebSocket (a close frame), then release its resources."""
        if self._closed:
            return
        self._closed = True
        if self._handler is not None:
            await self._handler.close_async()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
