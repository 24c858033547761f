"""One writer at a time on SQLite, queued in the process instead of in the database.

SQLite allows one writing transaction; others wait in its busy handler, which sleeps
in growing steps (up to 100 ms) however soon the lock frees. Under bursts (many alerts,
many clicks) those sleeps dominate. Short write transactions on hot paths take this
gate first, so they queue fairly in asyncio and never sleep in SQLite. On PostgreSQL
(row locks, several replicas) it does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator


class WriteGate:
    def __init__(self, database_url: str) -> None:
        self._lock = asyncio.Lock() if database_url.startswith("sqlite") else None

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if self._lock is None:
            yield
            return
        async with self._lock:
            yield
