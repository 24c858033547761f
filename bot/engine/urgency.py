"""Work a person is waiting for goes before background work.

A rollback click should reach the deploy target first; the messages about it (and
about everything else) can follow milliseconds later. A slash command or a click is
answered from the event loop the engine shares: while one is being acknowledged, the
runner starts no new steps and the notifier no new deliveries, never holding either
back longer than ``MAX_WAIT`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from integrations.metrics import MetricsProvider, Sample

MAX_WAIT = 0.25


class Urgency:
    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self.max_wait = max_wait
        self._count = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.waiting = 0  # background work holding back right now (tests wait for it)

    @property
    def quiet(self) -> bool:
        return self._quiet.is_set()

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
        if self._quiet.is_set():
            return
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._quiet.wait(), self.max_wait)
        finally:
            self.waiting -= 1


class YieldingMetrics:
    """A metrics provider whose every query waits for ``urgency`` first: a canary check
    runs several queries, each costing the event loop milliseconds (HTTP, JSON), so a
    judgement lets the acks being answered go between them."""

    def __init__(self, provider: MetricsProvider, urgency: Urgency) -> None:
        self.provider, self.urgency = provider, urgency

    def render_query(self, template: str, **values: Any) -> str:
        return self.provider.render_query(template, **values)

    async def increase(self, query: str, start: datetime, end: datetime) -> float | None:
        await self.urgency.wait_quiet()
        return await self.provider.increase(query, start, end)

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> list[Sample]:
        await self.urgency.wait_quiet()
        return await self.provider.query_range(query, start, end, step)

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        await self.urgency.wait_quiet()
        return await self.provider.query(query, at)

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        await self.urgency.wait_quiet()
        return await self.provider.query_buckets(query, at)
