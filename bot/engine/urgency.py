"""Work a person is waiting for goes before chatter about earlier work.

A rollback click should reach the deploy target first; the messages about it (and
about everything else) can follow milliseconds later. While urgent work is in flight,
the notifier holds new deliveries back, never longer than ``MAX_WAIT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

MAX_WAIT = 0.25


class Urgency:
    def __init__(self) -> None:
        self._count = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def _enter(self) -> None:
        self._count += 1
        self._quiet.clear()

    def _leave(self) -> None:
        self._count -= 1
        if not self._count:
            self._quiet.set()

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        self._enter()
        try:
            yield
        finally:
            self._leave()

    def until_done(self, task: asyncio.Future[object]) -> None:
        """Urgent until ``task`` (e.g. the runner tick that calls the target) ends."""
        self._enter()
        task.add_done_callback(lambda _: self._leave())

    async def wait_quiet(self) -> None:
        if not self._quiet.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), MAX_WAIT)
