"""One step of one claimed deployment: run it, commit it, let the lease go; and what a
failing step becomes (a retry with backoff, a rate limit's wait, giving up safely).

The runner (``bot.engine.runner``) decides when and which deployments to claim; this
is what it does with each one it holds. The lease is renewed while the step runs,
however long it takes (``replicas.renewing``); a step cancelled at shutdown hands the
deployment back to the other replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta

from sqlalchemy.orm.exc import StaleDataError
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.engine import claims, facts, replicas, rollout_stops
from bot.engine.context import StepContext
from bot.engine.giving_up import MAX_STEP_ATTEMPTS, give_up
from bot.engine.machine import State
from bot.engine.outbox import note
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.steps import STEPS
from bot.engine.urgency import Urgency
from bot.metrics import Metrics
from bot.mrkdwn import escape
from bot.store.db import Sessions
from bot.store.models import Deployment
from bot.store.writers import WriterQueue
from integrations.base import IntegrationError, RateLimited
from integrations.http import HttpOptions
from integrations.metrics import MetricsProvider

log = logging.getLogger(__name__)
MAX_RATE_LIMIT_WAIT = timedelta(hours=1)  # GitHub's limits reset hourly
PUSH_BACK = timedelta(seconds=60)  # when even recording a failed step failed


class Advancing:
    """The runner's half that advances a deployment it holds (``Runner`` sets these)."""

    _give_up = staticmethod(give_up)  # a step that failed MAX_STEP_ATTEMPTS times
    sessions: Sessions
    writers: WriterQueue
    providers: dict[str, ServiceProviders]
    clock: Clock
    metrics: Metrics
    policy: Policy
    owner: str
    replica: str
    lease: timedelta
    poll_seconds: float
    metrics_provider: MetricsProvider | None
    http: HttpOptions | None
    urgency: Urgency

    def _due_again(self, due: datetime | None) -> None:
        """A step was committed and the deployment is due again at ``due`` (the runner
        wakes then)."""

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
            # A rollback's step is time to recovery: it never waits for the acks being
            # answered (``Urgency``), as other background work does.
            with self.urgency.serving() if _recovery(dep) else contextlib.nullcontext():
                try:
                    async with replicas.renewing(self.sessions, self.writers, self.clock,
                                                 self.lease, dep_id, self.owner):
                        await self._run_step(session, dep, now)
                    dep.run_owner = self.replica if replicas.live_run(dep) else None
                    dep.lease_owner, dep.lease_until = None, None
                    session.add(dep)
                    async with self.writers():
                        await session.commit()
                    self._due_again(dep.next_action_at)
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
        await claims.release(self.sessions, self.writers, dep_id, self.owner)

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
            await self._quietly(claims.push_back(self.sessions, self.writers, dep_id,
                                                 self.owner, state, self.clock() + PUSH_BACK),
                                dep_id, "pushing back")

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

    async def _quietly(self, work: Awaitable[None], dep_id: int, what: str) -> None:
        """If the database is down too, the lease runs out and a later tick retries."""
        try:
            await work
        except Exception:
            log.exception("deployment %s: %s it failed", dep_id, what)


def _recovery(dep: Deployment) -> bool:
    """A rollback, or a rollout being rolled back."""
    return dep.kind == "rollback" or dep.state == State.ROLLING_BACK
