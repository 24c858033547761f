"""Slack's retries (429 with Retry-After, 5xx, dropped connections), and which calls are
only waiting between two attempts.

At shutdown the notifier gives a post in flight a grace period, so that what Slack took
is recorded as delivered. A post waiting out a rate limit has nothing in flight: waiting
for it only delays the pod's exit (by seconds, Retry-After), and its row stays pending for
the next replica either way. Such calls are cancelled at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)

STEP_SECONDS = 0.05  # how often the grace period looks for calls that began to wait


class Backoffs:
    """The tasks whose Slack call is waiting before its next attempt."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()

    def handlers(self) -> list[AsyncRetryHandler]:
        return [_Tracked(AsyncConnectionErrorRetryHandler(max_retry_count=2), self),
                _Tracked(AsyncRateLimitErrorRetryHandler(max_retry_count=3), self),
                _Tracked(AsyncServerErrorRetryHandler(max_retry_count=2), self)]

    async def finish(self, tasks: Iterable[asyncio.Task[Any]], grace: float) -> None:
        """Give ``tasks`` up to ``grace`` seconds to end; cancel those waiting to retry at
        once, and the rest when the time is up."""
        loop = asyncio.get_running_loop()
        deadline, pending = loop.time() + grace, set(tasks)
        while pending:
            for task in pending & self.tasks:
                task.cancel()
            left = deadline - loop.time()
            if left <= 0:
                for task in pending:
                    task.cancel()
            _, pending = await asyncio.wait(pending, timeout=max(0.0, min(STEP_SECONDS, left)))
            if left <= 0:
                await asyncio.gather(*pending, return_exceptions=True)
                return


class _Tracked(AsyncRetryHandler):
    """One of slack_sdk's retry handlers, noting its task in ``backoffs`` while it sleeps."""

    def __init__(self, inner: AsyncRetryHandler, backoffs: Backoffs) -> None:
        super().__init__(max_retry_count=inner.max_retry_count,
                         interval_calculator=inner.interval_calculator)
        self.inner, self.backoffs = inner, backoffs

    async def can_retry_async(self, **kwargs: Any) -> bool:
        return await self.inner.can_retry_async(**kwargs)

    async def prepare_for_next_attempt_async(self, **kwargs: Any) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.backoffs.tasks.add(task)
        try:
            await self.inner.prepare_for_next_attempt_async(**kwargs)
        finally:
            if task is not None:
                self.backoffs.tasks.discard(task)
