"""A count of the runner's turns (ticks), so a caller can wait for the next whole one.

"Nothing happened" is only evidence once the runner has looked: tests (and the local
console) wait for a tick that *started after* they asked to have finished, instead of
sleeping and hoping that a tick fell inside the sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Turns:
    def __init__(self) -> None:
        self._started = 0
        self._finished = 0
        self._ended = asyncio.Event()  # set (and replaced) at the end of each turn

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Wraps one tick, inside the tick lock (so turns never overlap)."""
        self._started += 1
        number = self._started
        try:
            yield
        finally:
            self._finished = number
            ended, self._ended = self._ended, asyncio.Event()
            ended.set()

    async def next(self) -> None:
        """Return once a turn that began after this call has ended (a tick that started
        earlier and is still running does not count: it may have read the old rows)."""
        wanted = self._started + 1
        while self._finished < wanted:
            await self._ended.wait()
