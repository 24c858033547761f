"""The runner's leases on deployments, as SQL: which are due, claim, release, push back.

A deployment is claimed with a conditional UPDATE (a lease with expiry), so two
replicas, or a tick racing a wake-up, never advance the same deployment at once. The
claim bumps the row version, so a person's change decided on the row as it was before
the claim (a cancel, a pause) fails with a stale-row error and is decided again, on the
leased row, instead of overwriting a step that is already calling the target. Every
write here takes its turn in the writer queue (one SQLite writer at a time).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, update
from sqlmodel import col, select

from bot.engine import replicas
from bot.engine.machine import IN_FLIGHT, State
from bot.store.db import Sessions
from bot.store.models import Deployment
from bot.store.writers import WriterQueue

LEASE = timedelta(seconds=60)  # the default; SHIPBOT_LEASE_SECONDS


def due(now: datetime) -> ColumnElement[bool]:
    """In flight, or ended with a run left to stop (``stop_run``), and its time has come."""
    return and_(or_(col(Deployment.state).in_([s.value for s in IN_FLIGHT]),
                    col(Deployment.stop_run).is_not(None)),
                col(Deployment.next_action_at) <= now)


def unleased(now: datetime) -> ColumnElement[bool]:
    """Nobody holds it, or the holder's lease ran out."""
    return or_(col(Deployment.lease_until).is_(None), col(Deployment.lease_until) < now)


async def due_ids(sessions: Sessions, replica: str, now: datetime, limit: int) -> list[int]:
    """Up to ``limit`` deployments due by ``now`` that ``replica`` may claim, oldest due
    first (a read: claiming them is ``claim``). Leased ones are left out, so the next
    batch of a tick is the next deployments, not the ones its last batch claimed."""
    async with sessions() as session:
        found = (await session.exec(
            select(Deployment.id)
            .where(due(now), unleased(now), replicas.claimable(replica, now))
            .order_by(col(Deployment.next_action_at))
            .limit(limit)
        )).all()
    return [i for i in found if i is not None]


async def claim(sessions: Sessions, writers: WriterQueue, dep_ids: list[int], *,
                owner: str, replica: str, now: datetime, lease: timedelta) -> list[int]:
    """Lease those of ``dep_ids`` nobody holds, in one write.

    Due and in flight are checked again: a person may have paused, aborted or cancelled
    one since the tick selected it. The row version goes up, so whoever read the row
    before this claim must read it again (``retry_on_conflict``)."""
    async with writers(), sessions() as session:
        result = await session.exec(
            update(Deployment)
            .where(col(Deployment.id).in_(dep_ids), due(now), unleased(now),
                   replicas.claimable(replica, now))
            .values(lease_owner=owner, lease_until=now + lease,
                    row_version=col(Deployment.row_version) + 1)
            .returning(col(Deployment.id))
        )
        claimed = set(result.scalars().all())  # type: ignore[attr-defined]
        await session.commit()
    return [i for i in dep_ids if i in claimed]


async def release(sessions: Sessions, writers: WriterQueue, dep_id: int, owner: str) -> None:
    """Give the lease up, unless it ran out and another runner holds it now."""
    async with writers(), sessions() as session:
        await session.exec(update(Deployment)
                           .where(col(Deployment.id) == dep_id,
                                  col(Deployment.lease_owner) == owner)
                           .values(lease_owner=None, lease_until=None,
                                   row_version=col(Deployment.row_version) + 1))
        await session.commit()


async def push_back(sessions: Sessions, writers: WriterQueue, dep_id: int, owner: str,
                    state: State, later: datetime) -> None:
    """Due again at ``later`` (unless a person moved it on meanwhile); the lease freed."""
    async with writers(), sessions() as session:
        await session.exec(update(Deployment)
                           .where(col(Deployment.id) == dep_id,
                                  col(Deployment.lease_owner) == owner,
                                  col(Deployment.state) == state.value)
                           .values(next_action_at=later, lease_owner=None,
                                   lease_until=None,
                                   row_version=col(Deployment.row_version) + 1))
        await session.commit()
    await release(sessions, writers, dep_id, owner)  # moved on: only the lease
