"""One writer at a time on SQLite, queued in the process instead of in the database.

SQLite allows one writing transaction; others wait in its busy handler, which sleeps
in growing steps (up to 100 ms) however soon the lock frees. Under bursts (many alerts,
many clicks, a busy runner) those sleeps dominate. Write transactions take their turn here
first, so they queue in asyncio and never sleep in SQLite. Writes a person is waiting
for (a slash command's ack) pass ``urgent=True`` and go before queued background work
(the runner, the notifier), which only has to be done soon, not now. Bulk work (an alert
storm) takes their turn in short chunks, so an urgent writer never waits for more than
one chunk. On PostgreSQL (row locks, several replicas) it only does the next thing:
background writers first wait for ``turn`` (``Urgency.background_turn``: the slash
commands and clicks being answered go first).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable


class WriterQueue:
    def __init__(self, database_url: str,
                 turn: Callable[[], Awaitable[None]] | None = None) -> None:
        self._enabled = database_url.startswith("sqlite")
        self._turn = turn
        self._held = False
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def queued(self, *, urgent: bool) -> int:
        """Writers of one kind waiting for their turn (for tests to observe the order)."""
        rank = 0 if urgent else 1
        return sum(r == rank and not turn.done() for r, _, turn in self._queue)

    @contextlib.asynccontextmanager
    async def __call__(self, *, urgent: bool = False) -> AsyncIterator[None]:
        if not urgent and self._turn is not None:  # before queueing: it holds nothing yet
            await self._turn()
        if not self._enabled:
            yield
            return
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if not self._held and not self._queue:
            self._held = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (0 if urgent else 1, next(self._order), turn))
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():  # handed over just as we were cancelled
                self._release()
            raise

    def _release(self) -> None:
        """Hand the turn to the next live waiter (urgent first, then oldest), or free it."""
        while self._queue:
            _, _, turn = heapq.heappop(self._queue)
            if not turn.done():
                turn.set_result(None)
                return
        self._held = False
