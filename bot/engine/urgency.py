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
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from datetime import datetime
from typing import Any

from integrations.metrics import MetricsProvider, Sample

MAX_WAIT = 0.25
_SERVING: ContextVar[bool] = ContextVar("shipbot_serving_a_person", default=False)
# The Urgency whose ``urgent`` block the current task runs in (``stand_aside`` leaves it).
_ANSWERING: ContextVar[Urgency | None] = ContextVar("shipbot_answering", default=None)


class _Gauge:
    """How many of something are under way, and an event set while there are none."""

    def __init__(self) -> None:
        self.count = 0
        self.none = asyncio.Event()
        self.none.set()

    def enter(self) -> None:
        self.count += 1
        self.none.clear()

    def leave(self) -> None:
        self.count -= 1
        if not self.count:
            self.none.set()


class Urgency:
    """Two kinds of urgent work: requests being answered (``urgent``), which all
    background work lets go first, and a rollback's tick (``until_done``), which the
    notifier lets go first (its own writes and steps are ``serving``, and the other
    steps it claimed must not wait for it to end)."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self.max_wait = max_wait
        self._answering, self._any = _Gauge(), _Gauge()
        self.waiting = 0  # background work holding back right now (tests wait for it)

    @property
    def quiet(self) -> bool:
        return self._any.none.is_set()

    @contextlib.asynccontextmanager
    async def urgent(self) -> AsyncIterator[None]:
        """A person waits for what runs inside (and for the tasks it starts)."""
        self._answering.enter()
        self._any.enter()
        token = _ANSWERING.set(self)
        try:
            with self.serving():
                yield
        finally:
            _ANSWERING.reset(token)
            self._any.leave()
            self._answering.leave()

    async def aside(self, seconds: float) -> None:
        """Sleep as one request fewer being answered (see ``stand_aside``)."""
        self._any.leave()
        self._answering.leave()
        try:
            await asyncio.sleep(seconds)
        finally:
            self._answering.enter()
            self._any.enter()

    def until_done(self, task: asyncio.Future[object]) -> None:
        """Urgent for the notifier until ``task`` (the runner tick that calls the
        target) ends."""
        self._any.enter()
        task.add_done_callback(lambda _: self._any.leave())

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """What runs inside is done for a person (a rollback's tick and steps) or has
        had its turn already: it never waits."""
        token = _SERVING.set(True)
        try:
            yield
        finally:
            _SERVING.reset(token)

    async def background_turn(self) -> None:
        """Before a piece of background work: let the requests being answered go first,
        unless this is one of them."""
        if not _SERVING.get():
            await self._wait(self._answering)

    async def wait_quiet(self) -> None:
        """The notifier, before a delivery: after requests being answered and rollbacks
        on their way to the target."""
        await self._wait(self._any)

    async def _wait(self, gauge: _Gauge) -> None:
        if gauge.none.is_set():
            return
        self.waiting += 1
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gauge.none.wait(), self.max_wait)
        finally:
            self.waiting -= 1


async def stand_aside(seconds: float) -> None:
    """Sleep, no longer urgent meanwhile: a request that waits for background work (a
    cancel retrying until the runner's step has let go of the deployment) must let that
    work have its turns, or each of them waits ``MAX_WAIT`` for the request that waits
    for it, and the request gives up first."""
    urgency = _ANSWERING.get()
    if urgency is None:
        await asyncio.sleep(seconds)
    else:
        await urgency.aside(seconds)


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
