"""Advances due deployments. Called by the scheduler tick and woken early by new work.

This is when and which: ticks, claiming what is due (the leases' SQL is in
``bot.engine.claims``), the steps under way, shutdown. What a step does with the
deployment it holds, and what a failing one becomes, is ``bot.engine.advancing``.

Several replicas (``bot.engine.replicas``): the lease is renewed while a step runs,
however long it takes; a deployment waiting for a run belongs to the replica that
started it while that replica is alive; at shutdown, ``drain`` stops claiming, gives
the steps under way a grace period, then hands them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import func, select

from bot.clock import Clock
from bot.engine import claims
from bot.engine.advancing import Advancing
from bot.engine.claims import LEASE
from bot.engine.machine import State
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.turns import Turns
from bot.engine.urgency import Urgency
from bot.engine.wakeups import Wakeups
from bot.metrics import Metrics
from bot.store.db import Sessions
from bot.store.models import Deployment
from bot.store.writers import WriterQueue
from integrations.http import HttpOptions
from integrations.metrics import MetricsProvider

__all__ = ["LEASE", "Runner"]
log = logging.getLogger(__name__)
# Steps under way at once (each a task; a step waiting on a target holds no database
# connection: ``advance`` ends its read transaction before the step's I/O). A tick claims
# what is due up to this many, starts their steps and returns to claiming at the next
# tick or wake-up, so one slow target never holds up the others.
MAX_STEPS = 200
CLAIM_BATCH = 5  # due deployments claimed and started at once (one UPDATE each batch)
COUNT_EVERY = 5.0  # seconds between refreshes of the per-state gauge (a GROUP BY)


class Runner(Advancing):
    """Claims what is due and starts a step (``Advancing.advance``) for each."""

    def __init__(
        self,
        sessions: Sessions,
        providers: dict[str, ServiceProviders],
        clock: Clock,
        metrics: Metrics,
        policy: Policy,
        *,
        owner: str,
        poll_seconds: float,
        on_change: Callable[[], None] = lambda: None,
        metrics_provider: MetricsProvider | None = None,
        writers: WriterQueue | None = None,
        lease: timedelta = LEASE,
        replica: str | None = None,
        http: HttpOptions | None = None,
        wake_when_due: bool = True,
        urgency: Urgency | None = None,
    ) -> None:
        """``wake_when_due``: claim a deployment this runner advanced when it is due again
        (``Wakeups``), not only at the scheduler's ticks."""
        self.writers = writers or WriterQueue("")
        self.metrics_provider, self.http = metrics_provider, http  # for the steps' context
        self.sessions, self.providers = sessions, providers
        self.clock, self.metrics, self.policy = clock, metrics, policy
        self.owner, self.poll_seconds, self.on_change = owner, poll_seconds, on_change
        # The lease is this process's; runs belong to the replica (its state directory).
        self.lease, self.replica = lease, replica or owner
        self._lock = asyncio.Lock()  # held while claiming one batch
        # One background claim loop at a time (it claims until nothing more is due); a
        # tick that finds one running says so (``_again``) and returns, and the loop
        # starts one more tick once it has let go of the lock.
        self._claiming = asyncio.Lock()
        self._again = False
        self._draining = False
        self._steps: dict[int, asyncio.Task[None]] = {}  # deployment id -> its step
        self._ticks: set[asyncio.Task[int]] = set()
        self._turn: asyncio.Task[int] | None = None
        self._counted_at = float("-inf")
        self.turns = Turns()  # tests wait for a whole tick with ``turns.next()``
        self.wakeups = Wakeups(clock, self.start_tick) if wake_when_due else None
        self.urgency = urgency or Urgency()  # acks being answered: claims wait for them

    async def tick(self, *, under_way: bool = True, urgent: bool = False) -> int:
        """Claim every due deployment (up to ``MAX_STEPS`` under way), advance each once
        and return how many were advanced. Only the claim is serialised; the steps run as
        tasks of their own, so further ticks claim other deployments while a slow target
        holds one up. An ``urgent`` tick (a rollback) claims at once, without letting the
        acks being answered go first. With ``under_way`` the tick also waits for (and
        counts) the steps earlier ticks started: it is a whole turn, after which whatever
        was due has been advanced (what ``turns`` promise); without, it waits for its own
        steps only."""
        if self._draining:
            return 0
        if not under_way and not urgent and self._claiming.locked():
            self._again = True  # the claim loop under way starts a tick for it when done
            return 0
        with self.turns.turn() if under_way else contextlib.nullcontext(), \
                self.urgency.serving() if urgent else contextlib.nullcontext():
            steps = await self._claim_due(urgent)
            own = set(steps.values())  # and every step under way now that is not its own:
            earlier = [t for t in self._steps.values()
                       if not t.done() and t not in own] if under_way else []
            await asyncio.gather(*earlier, return_exceptions=True)
            if not steps:
                await self._count_states()  # the gauge exists from the first tick on
                return len(earlier)
            results = await asyncio.gather(*steps.values(), return_exceptions=True)
            for dep_id, result in zip(steps, results, strict=True):
                if isinstance(result, Exception):  # one deployment must not stop the others
                    log.error("deployment %s: advancing it failed", dep_id, exc_info=result)
            await self._count_states()
            self.on_change()
            return len(steps) + len(earlier)

    def start_tick(self) -> None:
        """The scheduler's tick and wake-ups: claim what is due now, waiting for nothing
        else; and at most one whole turn at a time in the background, so a slow step
        never piles ticks up behind it."""
        if self._turn is None or self._turn.done():
            self._turn = self._background(self.tick())
        else:
            self._background(self.tick(under_way=False))

    def _due_again(self, due: datetime | None) -> None:
        if self.wakeups is not None and not self._draining:
            self.wakeups.at(due)

    def _background(self, work: Coroutine[Any, Any, int]) -> asyncio.Task[int]:
        """A tick of its own, from a clean context: one an ack woke is background work,
        not the ack's (``Urgency``), so it lets the next acks go first."""
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._ticks.add(task)
        task.add_done_callback(self._tick_done)
        return task

    def _tick_done(self, task: asyncio.Task[int]) -> None:
        self._ticks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a runner tick failed", exc_info=task.exception())

    async def _claim_due(self, urgent: bool) -> dict[int, asyncio.Task[None]]:
        """Claim and start what is due, ``CLAIM_BATCH`` at a time. Before each batch, the
        requests a person waits for that are being answered go first (``Urgency``,
        bounded; not for an ``urgent`` tick): a hundred steps started at once would hold
        the event loop those acks share. Only the claim holds the tick lock, and it waits
        for nothing more (``serving``), so a rollback's tick never waits behind this
        one's waiting."""
        if urgent:
            return await self._claim_loop(urgent=True)
        async with self._claiming:  # never held by a rollback's tick: it goes past
            started = await self._claim_loop(urgent=False)
        if self._again and not self._draining:
            # A tick came while the last batch was claimed, which may have missed what it
            # was for. Claimed by a tick of its own, after the lock is let go: looping here
            # instead never ended on a loaded machine, with ticks arriving during every
            # batch, and a whole tick waiting for the lock waited for ever.
            self._again = False
            self._background(self.tick(under_way=False))
        return started

    async def _claim_loop(self, urgent: bool) -> dict[int, asyncio.Task[None]]:
        started: dict[int, asyncio.Task[None]] = {}
        more = True
        while more and not self._draining:
            if not urgent:
                await self.urgency.background_turn()
            async with self._lock:
                if not urgent:
                    self._again = False  # the query below sees what was due until now
                with self.urgency.serving():  # waited above: not again at the writer queue
                    batch, more = await self._claim_batch()
            started.update(batch)
        return started

    async def _claim_batch(self) -> tuple[dict[int, asyncio.Task[None]], bool]:
        """Up to ``CLAIM_BATCH`` due deployments claimed and started; and whether more
        may be due."""
        room = min(CLAIM_BATCH, MAX_STEPS - sum(not t.done() for t in self._steps.values()))
        if room <= 0 or self._draining:
            return {}, False
        due = await claims.due_ids(self.sessions, self.replica, self.clock(), room)
        # Never a second step of a deployment this process is still advancing (its lease
        # may have lapsed while the database was away: the step goes on, and ends it).
        batch = await self._start(await self._claim([i for i in due if not self._busy(i)]))
        return batch, len(due) == room and bool(batch)

    async def _start(self, claimed: list[int]) -> dict[int, asyncio.Task[None]]:
        """A step task for each claimed deployment (none once shutdown began: released)."""
        if self._draining:  # shutdown began while claiming: leave them to the others
            for dep_id in claimed:
                await self._release(dep_id)
            return {}
        loop = asyncio.get_running_loop()
        # A clean context: steps are background work even in a tick an ack started
        # (``Urgency``); a rollback's step says so itself (``advance``).
        steps = {i: loop.create_task(self.advance(i), context=contextvars.Context())
                 for i in claimed}
        self._steps.update(steps)
        for dep_id, task in steps.items():
            task.add_done_callback(functools.partial(self._step_done, dep_id))
        return steps

    def _busy(self, dep_id: int) -> bool:
        step = self._steps.get(dep_id)
        return step is not None and not step.done()

    def _step_done(self, dep_id: int, task: asyncio.Task[None]) -> None:
        if self._steps.get(dep_id) is task:
            del self._steps[dep_id]

    async def drain(self, grace: float) -> None:
        """Shutdown: claim nothing more; steps under way get ``grace`` seconds to finish,
        then are cancelled, each releasing its lease (``advance``) for another replica."""
        self._draining = True
        if self.wakeups is not None:
            self.wakeups.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._steps:
            _, late = await asyncio.wait(set(self._steps.values()),
                                         timeout=max(0.0, deadline - loop.time()))
            if late and loop.time() >= deadline:
                for task in late:
                    log.warning("shutting down: handing a step still running back to the "
                                "other replicas")
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)

    async def idle(self) -> None:
        """Wait until no tick is running (at shutdown, before the database goes away)."""
        async with self._lock:
            pass
        await asyncio.gather(*self._ticks, return_exceptions=True)

    async def _claim(self, dep_ids: list[int]) -> list[int]:
        """Lease those of ``dep_ids`` nobody holds, in one write (``claims.claim``)."""
        if not dep_ids or self._draining:
            return []
        return await claims.claim(self.sessions, self.writers, dep_ids, owner=self.owner,
                                  replica=self.replica, now=self.clock(), lease=self.lease)

    async def _count_states(self) -> None:
        """The per-state gauge, at most every ``COUNT_EVERY`` seconds: a GROUP BY over
        every deployment is not worth running after each of many ticks a second."""
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._counted_at < COUNT_EVERY:
            return
        self._counted_at = loop_time
        async with self.sessions() as session:
            rows = (await session.exec(
                select(Deployment.state, func.count()).group_by(Deployment.state)
            )).all()
        counts = dict(rows)
        for state in State:
            self.metrics.deployments.labels(state.value).set(counts.get(state.value, 0))

