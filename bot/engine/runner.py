"""Advances due deployments. Called by the scheduler tick and woken early by new work.

A deployment is claimed with a conditional UPDATE (a lease with expiry), so two
replicas, or a tick racing a wake-up, never advance the same deployment at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, func, select

from bot.clock import Clock
from bot.engine import machine, undo
from bot.engine.machine import IN_FLIGHT, State
from bot.engine.outbox import note
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.steps import STEPS, StepContext
from bot.metrics import Metrics
from bot.mrkdwn import escape
from bot.store.db import Sessions
from bot.store.gate import WriteGate
from bot.store.models import Deployment
from integrations.base import IntegrationError
from integrations.metrics import MetricsProvider

log = logging.getLogger(__name__)
LEASE = timedelta(seconds=60)
MAX_STEP_ATTEMPTS = 5
BATCH = 20


class Runner:
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
        gate: WriteGate | None = None,
    ) -> None:
        self.gate = gate or WriteGate("")
        self.metrics_provider = metrics_provider
        self.sessions, self.providers = sessions, providers
        self.clock, self.metrics, self.policy = clock, metrics, policy
        self.owner, self.poll_seconds, self.on_change = owner, poll_seconds, on_change
        self._lock = asyncio.Lock()
        self._waiting = False

    async def tick(self) -> int:
        """Advance every due deployment once; return how many were advanced."""
        if self._waiting:  # a tick is already queued behind the running one: it sees this too
            return 0
        async with self._queued():
            now = self.clock()
            async with self.sessions() as session:
                due = (await session.exec(
                    select(Deployment.id)
                    .where(col(Deployment.state).in_([s.value for s in IN_FLIGHT]),
                           col(Deployment.next_action_at) <= now)
                    .order_by(col(Deployment.next_action_at))
                    .limit(BATCH)
                )).all()
            claimed = await self._claim([i for i in due if i is not None])
            await asyncio.gather(*(self.advance(i) for i in claimed))
            await self._count_states()
            if claimed:
                self.on_change()
            return len(claimed)

    async def idle(self) -> None:
        """Wait until no tick is running (at shutdown, before the database goes away)."""
        async with self._lock:
            return

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
        """Lease those of ``dep_ids`` nobody holds, in one write (one turn at the gate)."""
        if not dep_ids:
            return []
        now = self.clock()
        async with self.gate(), self.sessions() as session:
            result = await session.exec(
                update(Deployment)
                .where(col(Deployment.id).in_(dep_ids),
                       or_(col(Deployment.lease_until).is_(None),
                           col(Deployment.lease_until) < now))
                .values(lease_owner=self.owner, lease_until=now + LEASE)
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
            step = STEPS.get(state)
            now = self.clock()
            started = asyncio.get_running_loop().time()
            try:
                if step is not None:
                    providers = self.providers[dep.service]
                    ctx = StepContext(session, providers, now, self.poll_seconds, self.policy,
                                      self.metrics_provider)
                    with session.no_autoflush:  # writes wait for the gate, not in SQLite
                        await step(ctx, dep)
                else:
                    dep.next_action_at = None
                dep.lease_owner, dep.lease_until = None, None
                session.add(dep)
                async with self.gate():
                    await session.commit()
            except StaleDataError:
                await session.rollback()
                await self._release(dep_id)
                return
            except Exception as exc:
                await session.rollback()
                await self._step_error(dep_id, state, exc)
                return
            finally:
                self.metrics.step_seconds.labels(state.value).observe(
                    asyncio.get_running_loop().time() - started)

    async def _release(self, dep_id: int) -> None:
        async with self.gate(), self.sessions() as session:
            await session.exec(update(Deployment).where(col(Deployment.id) == dep_id)
                               .values(lease_owner=None, lease_until=None))
            await session.commit()

    async def _step_error(self, dep_id: int, state: State, exc: Exception) -> None:
        """Retry a failing step with backoff; after a few attempts, fail with the reason."""
        user_safe = isinstance(exc, IntegrationError)
        reason = escape(str(exc)) if user_safe else f"internal error ({type(exc).__name__})"
        log.warning("deployment %s: step %s failed: %s", dep_id, state, reason,
                    exc_info=not user_safe)
        now = self.clock()
        async with self.gate(), self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            if dep is None or State(dep.state) is not state:
                return
            dep.step_attempts += 1
            dep.lease_owner, dep.lease_until = None, None
            if dep.step_attempts >= MAX_STEP_ATTEMPTS and state is State.ROLLING_BACK:
                machine.transition(session, dep, State.ROLLBACK_FAILED, actor="shipbot",
                                   now=now, detail=f"Gave up after {MAX_STEP_ATTEMPTS} "
                                   f"attempts: {reason}")
                note(session, dep, undo.rollback_failed_text(dep, reason), now=now)
            elif dep.step_attempts >= MAX_STEP_ATTEMPTS and state in STEPS:
                machine.transition(session, dep, State.FAILED, actor="shipbot", now=now,
                                   detail=f"Gave up after {MAX_STEP_ATTEMPTS} attempts: {reason}")
                note(session, dep, f":x: *Stopped while {state.value}:* {reason}. Nothing "
                     f"more will run. Fix the cause, then `/deploy {dep.service} {dep.env} "
                     f"{dep.version or ''}` again.", now=now)
            else:
                backoff = min(60.0, self.poll_seconds * 2 ** dep.step_attempts)
                dep.next_action_at = now + timedelta(seconds=backoff)
            session.add(dep)
            await session.commit()

    async def _count_states(self) -> None:
        async with self.sessions() as session:
            rows = (await session.exec(
                select(Deployment.state, func.count()).group_by(Deployment.state)
            )).all()
        counts = dict(rows)
        for state in State:
            self.metrics.deployments.labels(state.value).set(counts.get(state.value, 0))
