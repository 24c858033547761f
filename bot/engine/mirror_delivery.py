"""Delivers the ``MirrorEvent`` rows to each service's deployments mirror (GitHub
Deployments), in the background and apart from the runner: a deployment never waits for
GitHub, and GitHub being down only delays its statuses.

Each deployment's rows go in order (a later status waits for an earlier one); a failed
call is retried with backoff (as long as a rate limit asks), and a row is given up only
after ``GIVE_UP_AFTER``, or at once when GitHub refuses it (422: the version is no ref
in the repository), logged and kept with its error. The first status waits a little for
the Slack card to be posted, so that it links the thread (``log_url``).

Every replica runs this loop over the same rows, so a row is claimed before it is sent:
a compare-and-set on its lease (``claimed_by``, ``claim_until``), as the inbox claims
requests, renewed while GitHub answers. Only a deployment's oldest row still to deliver
can be claimed, so of two replicas one delivers a deployment's statuses, in order. A
replica that dies holding a claim is taken over once the lease has run out (at once by
its own next process, ``replicas.release_dead_leases``); if it died after GitHub created
the deployment, the provider finds that deployment by its key instead of adding one, and
a status that may have reached GitHub (``maybe_sent``) is looked up before it is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from itertools import groupby

from sqlalchemy import exists, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select

from bot.clock import Clock, as_utc
from bot.engine.providers import ServiceProviders, job
from bot.mrkdwn import permalink
from bot.store import leases
from bot.store.db import Sessions
from bot.store.models import Deployment, MirrorEvent
from bot.store.writers import WriterQueue
from integrations.base import IntegrationError, MirrorState, MirrorUpdate, RateLimited
from integrations.http import Rejected

log = logging.getLogger(__name__)
IDLE_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 600.0
GIVE_UP_AFTER = timedelta(hours=24)
CARD_WAIT = timedelta(seconds=30)  # how long the first status waits for the thread's link
# A claim lapses this long after its last renewal (each third of it): a replica that
# stopped renewing is dead, and another one delivers the row.
LEASE = timedelta(seconds=30)


class MirrorDelivery:
    def __init__(self, sessions: Sessions, providers: Mapping[str, ServiceProviders],
                 clock: Clock, writers: WriterQueue | None = None, *, owner: str = "",
                 lease: timedelta = LEASE) -> None:
        self.sessions, self.providers, self.clock = sessions, providers, clock
        self.writers = writers or WriterQueue("")
        # Who holds a claim: the bot sets its process's id ("replica/process") on start.
        self.owner, self.lease = owner or f"mirror-{uuid.uuid4().hex[:8]}", lease
        self.first_backoff = 2.0  # seconds; doubled at each failed attempt
        self._wake = asyncio.Event()

    @property
    def enabled(self) -> bool:
        return any(p.mirror is not None for p in self.providers.values())

    def kick(self) -> None:
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.deliver_pending()
            except Exception:
                log.exception("deployments mirror delivery failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
            self._wake.clear()

    async def deliver_pending(self) -> int:
        """Deliver what is due, each deployment's rows in order; how many were delivered."""
        now = self.clock()
        async with self.sessions() as session:
            rows = (await session.exec(
                select(MirrorEvent)
                .where(col(MirrorEvent.delivered_at).is_(None))
                .order_by(col(MirrorEvent.deployment_id), col(MirrorEvent.id))
                .limit(200))).all()
        delivered = 0
        for _, group in groupby(rows, key=lambda r: r.deployment_id):
            for row in group:
                if row.next_attempt_at is not None and as_utc(row.next_attempt_at) > now:
                    break  # backing off: the later rows wait behind it
                won, maybe_sent = await self._claim(row)
                if not won:
                    break  # another replica is delivering this deployment's rows
                async with self._renewing(row):
                    if not await self._deliver(row, maybe_sent=maybe_sent):
                        break
                delivered += 1
        return delivered

    async def _claim(self, row: MirrorEvent) -> tuple[bool, bool]:
        """Compare-and-set on the row's lease: of two replicas, one updates it; whether
        this one won, and whether the row may have been sent before (a holder whose claim
        lapsed, or a failed attempt whose answer may have been lost). Only the deployment's
        oldest undelivered row is claimable, so a replica reading a stale list never
        sends a later status before an earlier one."""
        now, earlier = self.clock(), aliased(MirrorEvent)
        async with self.writers(), self.sessions() as session:
            held = (await session.exec(select(MirrorEvent.claimed_by)
                                       .where(col(MirrorEvent.id) == row.id))).first()
            result = await session.exec(
                update(MirrorEvent).where(
                    col(MirrorEvent.id) == row.id, col(MirrorEvent.delivered_at).is_(None),
                    col(MirrorEvent.claimed_by).is_not_distinct_from(held),
                    or_(col(MirrorEvent.claim_until).is_(None),
                        col(MirrorEvent.claim_until) < now),
                    or_(col(MirrorEvent.next_attempt_at).is_(None),
                        col(MirrorEvent.next_attempt_at) <= now),
                    ~exists().where(col(earlier.deployment_id) == col(MirrorEvent.deployment_id),
                                    col(earlier.id) < col(MirrorEvent.id),
                                    col(earlier.delivered_at).is_(None)))
                .values(claimed_by=self.owner, claim_until=now + self.lease)
                .returning(col(MirrorEvent.attempts)))
            won = result.first()  # type: ignore[attr-defined]
            await session.commit()
        if won is None:
            return False, False
        row.attempts = int(won[0])  # another replica's failed attempts count too
        return True, held is not None or row.attempts > 0

    def _renewing(self, row: MirrorEvent) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep the claim while GitHub answers (three calls, each up to its timeout).
        A cancelled task (the process dying) leaves the claim to lapse: no release."""
        return leases.renewing(self.sessions, self.writers, self.lease, lambda: (
            update(MirrorEvent).where(col(MirrorEvent.id) == row.id,
                                      col(MirrorEvent.claimed_by) == self.owner,
                                      col(MirrorEvent.delivered_at).is_(None))
            .values(claim_until=self.clock() + self.lease)),
            f"the mirror claim of deployment {row.deployment_id}")

    async def _deliver(self, row: MirrorEvent, *, maybe_sent: bool) -> bool:
        now = self.clock()
        async with self.sessions() as session:
            dep = await session.get(Deployment, row.deployment_id)
        assert dep is not None
        providers = self.providers.get(dep.service)
        mirror = providers.mirror if providers is not None else None
        if mirror is None or dep.version is None:  # the config changed since
            await self._done(row, error="the service is not mirrored anymore")
            return True
        link = permalink(dep.card_channel, dep.card_ts)
        if link is None and now - as_utc(row.created_at) < CARD_WAIT:
            await self._later(row, now + timedelta(seconds=1), attempt=False)
            return False
        update_ = MirrorUpdate(key=job(dep, "mirror").key, deployment_id=row.deployment_id,
                               service=dep.service, env=dep.env, version=dep.version,
                               state=MirrorState(row.state), description=row.description,
                               log_url=link, mirror_id=dep.github_deployment_id,
                               commit=dep.commit_sha,
                               maybe_sent=maybe_sent)
        try:
            mirror_id = await mirror.report(update_)
        except (IntegrationError, OSError, TimeoutError) as exc:
            await self._failed(row, exc)
            return False
        await self._done(row, mirror_id=mirror_id if mirror_id != dep.github_deployment_id
                         else None)
        return True

    async def _failed(self, row: MirrorEvent, exc: Exception) -> None:
        clock_now = self.clock()
        reason = str(exc) if isinstance(exc, IntegrationError) else type(exc).__name__
        if isinstance(exc, Rejected) or clock_now - as_utc(row.created_at) > GIVE_UP_AFTER:
            # 422 and the like (a version that is no ref in the repository) never pass
            log.error("deployment %s: gave up mirroring %s: %s", row.deployment_id, row.state,
                      reason)
            await self._done(row, error=f"gave up: {reason}")
            return
        wait = exc.wait_seconds if isinstance(exc, RateLimited) else \
            min(MAX_BACKOFF_SECONDS, self.first_backoff * 2 ** row.attempts)
        log.warning("deployment %s: mirroring %s failed (attempt %d), retrying in %.0f s: %s",
                    row.deployment_id, row.state, row.attempts + 1, wait, reason)
        await self._later(row, clock_now + timedelta(seconds=wait), attempt=True,
                          error=reason)

    async def _later(self, row: MirrorEvent, when: datetime, *, attempt: bool,
                     error: str | None = None) -> None:
        # Released: nobody holds it (any replica may try it once it is due).
        values: dict[str, object] = {"next_attempt_at": when, "claimed_by": None,
                                     "claim_until": None}
        if attempt:
            values.update(attempts=row.attempts + 1, last_error=(error or "")[:500])
            row.attempts += 1
        async with self.writers(), self.sessions() as session:
            await session.exec(update(MirrorEvent).where(col(MirrorEvent.id) == row.id)
                               .values(**values))
            await session.commit()

    async def _done(self, row: MirrorEvent, *, mirror_id: str | None = None,
                    error: str | None = None) -> None:
        """Delivered (or given up); a new mirror id is saved on the deployment without
        touching its row version, so a step running meanwhile is not disturbed."""
        async with self.writers(), self.sessions() as session:
            await session.exec(update(MirrorEvent).where(col(MirrorEvent.id) == row.id)
                               .values(delivered_at=self.clock(), claim_until=None,
                                       last_error=error[:500] if error else None))
            if mirror_id is not None:
                await session.exec(update(Deployment)
                                   .where(col(Deployment.id) == row.deployment_id)
                                   .values(github_deployment_id=mirror_id))
            await session.commit()
