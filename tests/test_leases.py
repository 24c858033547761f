"""``renewing``: a shutdown that cancels the work while its renewal is being stopped still
stops the work (it used to be swallowed with the renewal's own cancellation)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest

from bot.store.leases import renewing
from bot.store.writers import WriterQueue


class SlowToCloseSession:
    """A renewal stuck on a busy database whose connection, cancelled, takes a moment to
    close (as SQLAlchemy's aiosqlite connection does)."""

    def __init__(self, started: asyncio.Event, closing: asyncio.Event) -> None:
        self.started, self.closing = started, closing

    async def exec(self, statement: Any) -> Any:
        self.started.set()
        await asyncio.Event().wait()

    async def commit(self) -> None:
        raise AssertionError("never reached")


async def test_a_cancel_while_the_renewal_stops_is_not_lost() -> None:
    started, closing, after = asyncio.Event(), asyncio.Event(), []

    @contextlib.asynccontextmanager
    async def sessions() -> AsyncIterator[SlowToCloseSession]:
        try:
            yield SlowToCloseSession(started, closing)
        except asyncio.CancelledError:
            closing.set()
            await asyncio.sleep(0.2)  # the graceful close
            raise

    async def work() -> None:
        async with renewing(sessions, WriterQueue(""), timedelta(seconds=0.03),  # type: ignore[arg-type]
                            lambda: None, "a test lease"):
            await started.wait()  # the work ends while a renewal is under way
        after.append("went on")

    task = asyncio.create_task(work())
    await closing.wait()  # the block is stopping its renewal: now the shutdown comes
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after == []
