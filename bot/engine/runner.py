"""Advances due deployments. Called by the scheduler tick and woken early by new work.

A deployment is claimed with a conditional UPDATE (a lease with expiry), so two
replicas, or a tick racing a wake-up, never advance the same deployment at once. The
claim bumps the row version, so a person's change decided on the row as it was before
the claim (a cancel, a pause) fails with a stale-row error and is decided again, on
the leased row, instead of overwriting a step that is already calling the target.

Several replicas (``bot.engine.replicas``): the lease is renewed while a step runs,
however long it takes; a deployment waiting for a run belongs to the replica that
started it while that replica is alive; at shutdown, ``drain`` stops claiming, gives
the steps under way a grace period, then hands them back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, update
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.engine import facts, replicas, rollout_stops
from bot.engine.context import StepContext
from bot.engine.giving_up import MAX_STEP_ATTEMPTS, give_up
from bot.engine.machine import IN_FLIGHT, State
from bot.engine.outbox import note
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.steps import STEPS
from bot.engine.turns import Turns
from bot.metrics import Metrics
from bot.mrkdwn import escape
from bot.store.db import Sessions
from bot.store.models import Deployment
from bot.store.writers import WriterQueue
from integrations.base import IntegrationError, RateLimited
from integrations.http import HttpOptions
from integrations.metrics import MetricsProvider

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)  # the default; SHIPBOT_LEASE_SECONDS
MAX_RATE_LIMIT_WAIT = timedelta(hours=1)  # GitHub's limits reset hourly
# Steps under way at once (each a task; a step waiting on a target holds no database
# connection: ``advance`` ends its read transaction before the step's I/O). A tick claims
# what is due up to this many, starts their steps and returns to claiming at the next
# tick or wake-up, so one slow target never holds up the others.
MAX_STEPS = 200
CLAIM_BATCH = 100  # due deployments claimed per tick (one UPDATE)
COUNT_EVERY = 5.0  # seconds between refreshes of the per-state gauge (a GROUP BY)


class Runner:
    _give_up = staticmethod(give_up)  # a step that failed MAX_STEP_ATTEMPTS times

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
    ) -> None:
        self.writers = writers or WriterQueue("")
        self.metrics_provider, self.http = metrics_provider, http  # for the steps' context
        self.sessions, self.providers = sessions, providers
        self.clock, self.metrics, self.policy = clock, metrics, policy
        self.owner, self.poll_seconds, self.on_change = owner, poll_seconds, on_change
        # The lease is this process's; runs belong to the replica (its state directory).
        self.lease, self.replica = lease, replica or owner
        self._lock = asyncio.Lock()
        self._waiting = False
        self._draining = False
        self._steps: dict[int, asyncio.Task[None]] = {}  # deployment id -> its step
        self._ticks: set[asyncio.Task[int]] = set()
        self._turn: asyncio.Task[int] | None = None
        self._counted_at = float("-inf")
        self.turns = Turns()  # tests wait for a whole tick with ``turns.next()``

    async def tick(self, *, under_way: bool = True) -> int:
        """Claim every due deployment (up to ``MAX_STEPS`` under way), advance each once
        and return how many were advanced. Only the claim is serialised; the steps run as
        tasks of their own, so further ticks claim other deployments while a slow target
        holds one up. With ``under_way`` the tick also waits for (and counts) the steps
        earlier ticks started: it is a whole turn, after which whatever was due has been
        advanced (what ``turns`` promise); without, it waits for its own steps only."""
        if self._draining or (self._waiting and not under_way):  # a claim queued before
            return 0  # this one takes what is due, or stopping
        with self.turns.turn() if under_way else contextlib.nullcontext():
            async with self._queued():
                earlier = [t for t in self._steps.values() if not t.done()] if under_way \
                    else []
                steps = await self._claim_due()
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

    def _background(self, work: Coroutine[Any, Any, int]) -> asyncio.Task[int]:
        task = asyncio.get_running_loop().create_task(work)
        self._ticks.add(task)
        task.add_done_callback(self._tick_done)
        return task

    def _tick_done(self, task: asyncio.Task[int]) -> None:
        self._ticks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a runner tick failed", exc_info=task.exception())

    async def _claim_due(self) -> dict[int, asyncio.Task[None]]:
        room = min(CLAIM_BATCH, MAX_STEPS - sum(not t.done() for t in self._steps.values()))
        if room <= 0:
            return {}
        now = self.clock()
        async with self.sessions() as session:
            due = (await session.exec(
                select(Deployment.id)
                .where(_due(now), replicas.claimable(self.replica, now))
                .order_by(col(Deployment.next_action_at))
                .limit(room)
            )).all()
        # Never a second step of a deployment this process is still advancing (its lease
        # may have lapsed while the database was away: the step goes on, and ends it).
        claimed = await self._claim([i for i in due if i is not None and not self._busy(i)])
        if self._draining:  # shutdown began while claiming: leave them to the others
            for dep_id in claimed:
                await self._release(dep_id)
            return {}
        loop = asyncio.get_running_loop()
        steps = {i: loop.create_task(self.advance(i)) for i in claimed}
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

    @contextlib.asynccontextmanager
    async def _queued(self) -> AsyncIterator[None]:
        """The tick lock; while a tick waits for it, further wake-ups need not queue."""
        self._waiting = True
        try:
            await self._lock.acquire()
        finally:
            self._waiting = False
        try:
            yield
        finally:
            self._lock.release()

    async def _claim(self, dep_ids: list[int]) -> list[int]:
        """Lease those of ``dep_ids`` nobody holds, in one write (one turn in the writer queue).

        Due and in flight are checked again: a person may have paused, aborted or
        cancelled one since the tick selected it. The row version goes up, so whoever
        read the row before this claim must read it again (``retry_on_conflict``)."""
        if not dep_ids or self._draining:
            return []
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            result = await session.exec(
                update(Deployment)
                .where(col(Deployment.id).in_(dep_ids), _due(now),
                       or_(col(Deployment.lease_until).is_(None),
                           col(Deployment.lease_until) < now),
                       replicas.claimable(self.replica, now))
                .values(lease_owner=self.owner, lease_until=now + self.lease,
                        row_version=col(Deployment.row_version) + 1)
                .returning(col(Deployment.id))
            )
            claimed = set(result.scalars().all())  # type: ignore[attr-defined]
            await session.commit()
        return [i for i in dep_ids if i in claimed]

    async def advance(self, dep_id: int) -> None:
        """Run the step for the deployment's current state, then release the lease."""
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            if dep is None or dep.lease_owner != self.owner:
                return
            state = State(dep.state)
            now = self.clock()
            started = asyncio.get_running_loop().time()
            if dep.next_action_at is not None:  # due time -> step started: the runner's lag
                self.metrics.step_lag_seconds.observe(
                    max(0.0, (now - as_utc(dep.next_action_at)).total_seconds()))
            # End the read transaction: its connection goes back to the pool while the step
            # waits on the target (the row stays loaded; the lease keeps it ours, and the
            # row version catches a person's change at the commit).
            await session.commit()
            try:
                async with replicas.renewing(self.sessions, self.writers, self.clock, self.lease,
                                             dep_id, self.owner):
                    await self._run_step(session, dep, now)
                dep.run_owner = self.replica if replicas.live_run(dep) else None
                dep.lease_owner, dep.lease_until = None, None
                session.add(dep)
                async with self.writers():
                    await session.commit()
            except StaleDataError:
                await session.rollback()
                await self._release(dep_id)
                return
            except Exception as exc:
                await session.rollback()
                await self._step_error(dep_id, state, exc)
                return
            except asyncio.CancelledError:  # shutting down: another replica does it
                await self._quietly(self._hand_back(session, dep_id), dep_id, "handing back")
                raise
            finally:
                self.metrics.step_seconds.labels(state.value).observe(
                    asyncio.get_running_loop().time() - started)

    async def _run_step(self, session: AsyncSession, dep: Deployment, now: datetime) -> None:
        step = STEPS.get(State(dep.state))
        if step is None and dep.stop_run is None:
            dep.next_action_at = None
            return
        ctx = StepContext(session, self.providers[dep.service], now, self.poll_seconds,
                          self.policy, self.metrics_provider, self.http)
        with session.no_autoflush:  # writes wait in the writer queue, not in SQLite
            if dep.stop_run is not None:  # what a cancel or abort left going, first
                await rollout_stops.stop_left_run(ctx, dep)
            if step is None:  # it ended: that was all
                dep.next_action_at = None
                return
            if dep.run_owner not in (None, self.replica):  # claimed: its replica is gone
                replicas.take_over(ctx, dep, self.replica)
            await step(ctx, dep)

    async def _hand_back(self, session: AsyncSession, dep_id: int) -> None:
        await session.rollback()
        await self._release(dep_id)

    async def _release(self, dep_id: int) -> None:
        """Give the lease up, unless it ran out and another runner holds it now."""
        async with self.writers(), self.sessions() as session:
            await session.exec(update(Deployment)
                               .where(col(Deployment.id) == dep_id,
                                      col(Deployment.lease_owner) == self.owner)
                               .values(lease_owner=None, lease_until=None,
                                       row_version=col(Deployment.row_version) + 1))
            await session.commit()

    async def _step_error(self, dep_id: int, state: State, exc: Exception) -> None:
        """Retry a failing step with backoff; after a few attempts, give up the safe way.

        Never raises: if recording the failure fails too, the deployment is pushed back
        (due again later, lease released) and the tick goes on with the others."""
        user_safe = isinstance(exc, IntegrationError)
        reason = escape(str(exc)) if user_safe else f"internal error ({type(exc).__name__})"
        log.warning("deployment %s: step %s failed: %s", dep_id, state, reason,
                    exc_info=not user_safe)
        wait = exc.wait_seconds if isinstance(exc, RateLimited) else None
        try:
            await self._record_step_error(dep_id, state, reason, wait)
        except StaleDataError:  # a person changed it meanwhile: their change stands
            await self._quietly(self._release(dep_id), dep_id, "releasing")
        except Exception:
            log.exception("deployment %s: recording the failed %s step failed; pushed back",
                          dep_id, state)
            await self._quietly(self._push_back(dep_id, state), dep_id, "pushing back")

    async def _record_step_error(self, dep_id: int, state: State, reason: str,
                                 wait: float | None = None) -> None:
        """A rate limit (``wait``) is no failed attempt: the step waits as long as the
        provider asked, and the thread says so."""
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            if dep is None or dep.lease_owner != self.owner:  # another runner holds it now
                return
            dep.lease_owner, dep.lease_until = None, None
            if State(dep.state) is state and wait is not None:
                dep.next_action_at = now + min(timedelta(seconds=wait + 1), MAX_RATE_LIMIT_WAIT)
                note(session, dep, facts.RateLimited(reason=reason, wait_seconds=wait), now=now)
            elif State(dep.state) is state:
                dep.step_attempts += 1
                if dep.step_attempts >= MAX_STEP_ATTEMPTS:
                    self._give_up(session, dep, state, reason, now)
                else:
                    backoff = min(60.0, self.poll_seconds * 2 ** dep.step_attempts)
                    dep.next_action_at = now + timedelta(seconds=backoff)
            session.add(dep)
            await session.commit()

    async def _push_back(self, dep_id: int, state: State) -> None:
        """Try again in a while (unless a person moved it on meanwhile); free the lease."""
        later = self.clock() + timedelta(seconds=60)
        async with self.writers(), self.sessions() as session:
            await session.exec(update(Deployment)
                               .where(col(Deployment.id) == dep_id,
                                      col(Deployment.lease_owner) == self.owner,
                                      col(Deployment.state) == state.value)
                               .values(next_action_at=later, lease_owner=None,
                                       lease_until=None,
                                       row_version=col(Deployment.row_version) + 1))
            await session.commit()
        await self._release(dep_id)  # moved on: only the lease

    async def _quietly(self, work: Awaitable[None], dep_id: int, what: str) -> None:
        """If the database is down too, the lease runs out and a later tick retries."""
        try:
            await work
        except Exception:
            log.exception("deployment %s: %s it failed", dep_id, what)

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


def _due(now: datetime) -> ColumnElement[bool]:
    """In flight, or ended with a run left to stop (``stop_run``), and its time has come."""
    return and_(or_(col(Deployment.state).in_([s.value for s in IN_FLIGHT]),
                    col(Deployment.stop_run).is_not(None)),
                col(Deployment.next_action_at) <= now)
