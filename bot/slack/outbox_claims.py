"""Which replica posts a thread's outbox rows: a claim with a lease, as the deployments
mirror (``bot.engine.mirror_delivery``) and the inbox claim their rows.

Every replica's notifier reads the same undelivered rows, grouped by thread (a
deployment's, an alert's, or the announcements). A group is claimed as a whole, by a
compare-and-set on its oldest undelivered row (the head): of two replicas one updates
it, and the winner then stamps the rest of its list in the same transaction. The
whole group, not row by row, because its delivery collapses repeated card and
approval refreshes into one call and posts the replies of one pass in order; a row
claim each would cost a transaction per reply and split the collapse between replicas.

Order per thread: the head is only claimable when no earlier row of the thread is
undelivered (a row backing off holds the later ones back, on every replica), and the
rest of the list is cut at the first undelivered row it does not hold (a replica
reading a stale list never posts a later reply before an earlier one). The claim is
renewed while Slack answers (rate limits can make a group take long), released on
failure (the failed row's backoff then applies on every replica), and left to lapse
when the process dies: after the lease another replica takes the group over (at once
the replica's own next process, ``replicas.release_dead_leases``; at once anyone when
the process stops on SIGTERM, ``hand_back``).

What a takeover may repeat: a thread reply Slack accepted just before its holder died,
before the row was marked delivered, is posted again (at least once). Looking for it in
the thread first would need the history scopes (``conversations.replies``) the app does
not ask for, and ``chat.postMessage`` takes no idempotency key; the card, the approval
request and an alert root are safe, their ts being recorded as soon as Slack answers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.store import leases
from bot.store.db import Sessions
from bot.store.models import Outbox
from bot.store.writers import WriterQueue

log = logging.getLogger(__name__)
# A claim lapses this long after its last renewal (each third of it): a replica that
# stopped renewing is dead, and another one delivers the thread.
LEASE = timedelta(seconds=30)


@dataclass(frozen=True)
class Claim:
    """The rows this replica now holds (a prefix of its list, oldest first), and whether
    the head may have been posted already (its earlier holder's claim lapsed)."""

    rows: list[Outbox]
    taken_over: bool


def _same_thread(table: type[Outbox], head: Outbox) -> ColumnElement[bool]:
    """Rows of the head's group, by value (so the indexes on both keys serve)."""
    dep, thread = col(table.deployment_id), col(table.alert_thread_id)
    return and_(dep.is_(None) if head.deployment_id is None else dep == head.deployment_id,
                thread.is_(None) if head.alert_thread_id is None
                else thread == head.alert_thread_id)


class OutboxClaims:
    """Announcements (no deployment, no alert) are messages of their own, to various
    channels: each is claimed alone, so a failing one holds no other back."""

    def __init__(self, sessions: Sessions, writers: WriterQueue, clock: Clock, *,
                 owner: str, lease: timedelta = LEASE) -> None:
        self.sessions, self.writers, self.clock = sessions, writers, clock
        self.owner, self.lease = owner, lease  # the bot sets its process's id on start

    def _free(self) -> ColumnElement[bool]:
        return or_(col(Outbox.claim_until).is_(None), col(Outbox.claim_until) < self.clock())

    async def claim(self, rows: Sequence[Outbox]) -> Claim:
        """Claim one group's rows (oldest first); an empty claim when another replica
        holds the thread, or the list is stale (its head was delivered, or an earlier
        row is still to deliver)."""
        if not rows:  # a rescan found the thread delivered meanwhile: nothing to claim
            return Claim([], False)
        head, now, earlier = rows[0], self.clock(), aliased(Outbox)
        alone = head.deployment_id is None and head.alert_thread_id is None  # announcement
        async with self.sessions() as session:  # read apart: the write below comes first
            held = (await session.exec(select(Outbox.claimed_by)
                                       .where(col(Outbox.id) == head.id))).first()
        async with self.writers(), self.sessions() as session:
            won = (await session.exec(update(Outbox).where(  # type: ignore[call-overload]
                col(Outbox.id) == head.id, col(Outbox.delivered_at).is_(None),
                col(Outbox.claimed_by).is_not_distinct_from(held), self._free(),
                or_(col(Outbox.next_attempt_at).is_(None), col(Outbox.next_attempt_at) <= now),
                *([] if alone else [~exists().where(
                    _same_thread(earlier, head), col(earlier.id) < head.id,
                    col(earlier.delivered_at).is_(None))]))
                .values(claimed_by=self.owner, claim_until=now + self.lease)
                .returning(col(Outbox.id)))).first()
            if won is None or alone:
                await session.commit()
                return Claim([head] if won else [], held is not None)
            rest = await self._claim_rest(session, rows, now)
            if rest is None:  # another replica holds a later row: not now
                await session.rollback()
                return Claim([], False)
            await session.commit()
        return Claim([head, *rest], held is not None)

    async def _claim_rest(self, session: AsyncSession, rows: Sequence[Outbox],
                          now: datetime) -> list[Outbox] | None:
        """The head won: the rest of the list up to the first undelivered row it lacks
        (a stale list skips rows delivered meanwhile); None if one is held elsewhere."""
        head = rows[0]
        pending = (await session.exec(select(Outbox.id).where(
            _same_thread(Outbox, head), col(Outbox.delivered_at).is_(None),
            col(Outbox.id) > head.id, col(Outbox.id) <= max(r.id or 0 for r in rows))
            .order_by(col(Outbox.id)))).all()
        rest = _prefix(rows[1:], pending)
        if not rest:
            return rest
        got = set((await session.exec(update(Outbox).where(  # type: ignore[call-overload]
            col(Outbox.id).in_([r.id for r in rest]), col(Outbox.delivered_at).is_(None),
            or_(col(Outbox.claimed_by) == self.owner, self._free()))
            .values(claimed_by=self.owner, claim_until=now + self.lease)
            .returning(col(Outbox.id)))).scalars().all())
        return rest if len(got) == len(rest) else None

    def renewing(self, rows: Sequence[Outbox]) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep the claim while Slack answers (a rate-limited thread can take minutes).
        A cancelled task (the process dying) leaves the claim to lapse: no release."""
        ids = [r.id for r in rows]
        return leases.renewing(self.sessions, self.writers, self.lease, lambda: (
            update(Outbox).where(col(Outbox.id).in_(ids), col(Outbox.claimed_by) == self.owner,
                                 col(Outbox.delivered_at).is_(None))
            .values(claim_until=self.clock() + self.lease)), "the outbox claim")

    async def release(self, rows: Sequence[Outbox]) -> None:
        """Give back what this pass did not deliver (rows behind a failed one, a pass cut
        short): any replica may take them when they are due."""
        async with self.writers(), self.sessions() as session:
            await session.exec(update(Outbox).where(  # type: ignore[call-overload]
                col(Outbox.id).in_([r.id for r in rows]),
                col(Outbox.claimed_by) == self.owner, col(Outbox.delivered_at).is_(None))
                .values(claimed_by=None, claim_until=None))
            await session.commit()

    async def hand_back(self) -> None:
        """Shutting down, its passes cancelled: the other replicas take its threads now
        rather than after a lease. The holder stays named (a post may have gone out)."""
        async with self.writers(), self.sessions() as session:
            await session.exec(update(Outbox).where(  # type: ignore[call-overload]
                col(Outbox.claimed_by) == self.owner, col(Outbox.delivered_at).is_(None))
                .values(claim_until=None))
            await session.commit()


def _prefix(rows: Sequence[Outbox], pending: Sequence[int | None]) -> list[Outbox]:
    """``rows`` up to the first undelivered row (``pending``, in order) they lack: the
    later ones must wait for it."""
    mine = {r.id: r for r in rows}
    out: list[Outbox] = []
    for row_id in pending:
        if row_id not in mine:
            break
        out.append(mine[row_id])
    return out
