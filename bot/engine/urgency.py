"""Work a person is waiting for goes before background work.

A rollback click should reach the deploy target first; the messages about it (and
about everything else) can follow milliseconds later. A slash command or a click is
answered from the event loop the engine shares, a turn of the loop per database round
trip: while one is being acknowledged, background work (the runner's claims and writes,
the notifier's deliveries, metrics queries) takes no new turn, never held back longer
than ``MAX_WAIT`` seconds. Work done for the request itself (in its context, e.g. a
click's outcome after the ack) never waits for itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from integrations.metrics import MetricsProvider, Sample

MAX_WAIT = 0.25
_SERVING: ContextVar[bool] = ContextVar("shipbot_serving_a_person", default=False)


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
        """A person waits for what runs inside (and for the tasks it starts)."""
        self._enter()
        token = _SERVING.set(True)
        try:
            yield
        finally:
            _SERVING.reset(token)
            self._leave()

    def until_done(self, task: asyncio.Future[object]) -> None:
        """Urgent until ``task`` (e.g. the runner tick that calls the target) ends."""
        self._enter()
        task.add_done_callback(lambda _: self._leave())

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """What runs inside is done for a person (a rollback's tick): it never waits."""
        token = _SERVING.set(True)
        try:
            yield
        finally:
            _SERVING.reset(token)

    @staticmethod
    def task_context() -> contextvars.Context:
        """For a task the engine starts: a person's work passes on (a rollback's steps);
        anything else starts clean, so a tick an ack woke is background work."""
        return contextvars.copy_context() if _SERVING.get() else contextvars.Context()

    async def background_turn(self) -> None:
        """Before a piece of background work: let the requests being answered go first,
        unless this is one of them."""
        if not _SERVING.get():
            await self.wait_quiet()

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
        await self.urgency.background_turn()
        return await self.provider.increase(query, start, end)

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> list[Sample]:
        await self.urgency.background_turn()
        return await self.provider.query_range(query, start, end, step)

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        await self.urgency.background_turn()
        return await self.provider.query(query, at)

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        await self.urgency.background_turn()
        return await self.provider.query_buckets(query, at)
