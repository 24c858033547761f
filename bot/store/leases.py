"""Keeping a lease alive while slow work runs: one loop for the runner's deployment
leases and the outbox and mirror claims.

Each holder renews every third of its lease, so one missed renewal (the database busy
for a moment) never lets the lease lapse under work that is still going on; a renewal
that fails is logged and tried again at the next beat. Cancelling the block (the process
dying or shutting down) stops the renewals: the lease then lapses and another replica
takes the work over. A renewal that finds an exclusive lease in another holder's hands
(this loop stalled past it) says so in the log and stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from bot.store.db import Sessions
from bot.store.writers import WriterQueue

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def renewing(sessions: Sessions, writers: WriterQueue, lease: timedelta,
                   renewal: Callable[[], Any], what: str, *,
                   exclusive: bool = False) -> AsyncIterator[None]:
    """While the block runs, execute ``renewal()`` (an UPDATE that moves the holder's
    lease forward, built afresh each time so it reads the clock then) every third of
    ``lease``. ``what`` names the lease in the log. ``exclusive``: the block never lets
    go of it, so a renewal that matches nothing means another holder has it."""

    async def renew() -> None:
        while True:
            await asyncio.sleep(lease.total_seconds() / 3)
            try:
                async with writers(), sessions() as session:
                    renewed = (await session.exec(renewal())).rowcount
                    await session.commit()
            except Exception:  # the database may be back before the lease runs out
                log.warning("renewing %s failed", what, exc_info=True)
                continue
            if exclusive and not renewed:  # lapsed (a stalled loop), and another holder has it
                log.warning("%s was lost: another replica took the work over, which may "
                            "now be done twice", what)
                return

    task = asyncio.get_running_loop().create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        # Its cancellation is collected; this block's own (shutdown) goes on up, where
        # suppressing CancelledError here would have swallowed it too.
        await asyncio.gather(task, return_exceptions=True)
