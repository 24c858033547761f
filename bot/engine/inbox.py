"""The inbox: a state-changing command or click is a database row before it is acked.

Slack counts an HTTP 200 as delivered, and work started in-process dies with the
process. So the edge records each request under Slack's own identity for it (a slash
command's trigger id, a click's message and action time) before the ack, and processes
it after. The key is unique: a replay or a retry is recorded once and answered with the
first reply, like an idempotency key. A row a crash left undone (or done but its outcome
never told) is claimed with a lease by any replica's drain, on start and periodically,
and completed there; processing is idempotent, as a lapsed lease can mean a slow owner.

A request whose change dedupes by the request's key itself (a deployment's unique
``request_key``) skips the separate record: its row is written by a ``Receipt`` in the
transaction of the change (``once_keyed``), one commit instead of three. A refusal, which
changes nothing, is recorded with its reply before the ack. Either way the ack still
follows the row; a crash before that commit leaves nothing behind and no 200.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, inspect, or_, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.store.db import Sessions
from bot.store.models import InboundRequest
from bot.store.writers import WriterQueue

log = logging.getLogger(__name__)
# Longer than any one request takes to process (an ack's work is bounded by Slack's 3 s;
# a click's by its engine call): a claim that lapses means its owner died.
LEASE = timedelta(seconds=30)
MAX_ATTEMPTS = 5  # claims per row; then it is given up, loudly in the log
BATCH = 20
# Rows kept after their outcome was told: far beyond Slack's 5-minute replay window, and
# long enough to see what people clicked during an incident.
RETAIN = timedelta(days=7)
REPLAY_WAIT_SECONDS = 2.0  # how long a replay waits for the first one's reply
STILL_WORKING = ("Already received: Shipbot is still working on this request. Do not send "
                 "it again; check `/deploy status` in a moment.")
DEFERRED = ("Recorded, but Shipbot could not finish it just now. It retries on its own "
            "and tells you the outcome here; there is no need to send it again.")


@dataclass(frozen=True)
class Request:
    """What the edge hands in, and what processing gets back from the row."""

    key: str
    kind: str
    user: str
    payload: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None
    received_at: datetime | None = None
    reply: str | None = None  # set once processed


Process = Callable[[Request], Awaitable[str]]
Tell = Callable[[Request, str], Awaitable[bool]]  # True once the person has it


class Receipt:
    """The inbox row of one request, done and told, for its processor to add to the
    transaction of its change: the change and its record commit together or not at all."""

    def __init__(self, request: Request, owner: str, now: datetime, lease: timedelta) -> None:
        self.request, self.owner, self.now, self.lease = request, owner, now, lease
        self._row: InboundRequest | None = None

    def add(self, session: AsyncSession, reply: str) -> None:
        """Call before the commit of the change; ``reply`` is what the ack answers."""
        self._row = _row(self.request, self.owner, self.now, self.lease,
                         reply=reply, done_at=self.now, told_at=self.now)
        session.add(self._row)

    @property
    def kept(self) -> bool:
        """Committed: a rolled-back insert leaves its row without a database identity."""
        return self._row is not None and inspect(self._row).has_identity


Keyed = Callable[[Receipt], Awaitable[str]]


class Inbox:
    def __init__(self, sessions: Sessions, clock: Clock, *, owner: str,
                 writers: WriterQueue | None = None, lease: timedelta = LEASE) -> None:
        self.sessions, self.clock, self.owner, self.lease = sessions, clock, owner, lease
        self.writers = writers or WriterQueue("")

    async def record(self, request: Request) -> Request | None:
        """Write the row, claimed by this replica, ahead of background writes. None when
        the key is known already (a replay, Slack's retry, a concurrent twin)."""
        row = _row(request, self.owner, self.clock(), self.lease)
        return _request(row) if await self._insert(row) else None

    async def _insert(self, row: InboundRequest) -> bool:
        """False when the key is known already."""
        async with self.writers(urgent=True), self.sessions() as session:
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return False
        return True

    async def once(self, request: Request, process: Process) -> str:
        """Inline (a slash command, answered in its ack): process once, reply the same."""
        mine = await self.record(request) or await self._take_over(request.key)
        if mine is None:
            return await self._first_reply(request.key)
        try:
            reply = await process(mine)
        except Exception:
            log.exception("processing %s failed; the inbox drain retries it", request.key)
            return DEFERRED
        await self._finish(mine.key, reply, told=True)
        return reply

    async def once_keyed(self, request: Request, keyed: Keyed, process: Process) -> str:
        """``once`` for a request whose change dedupes by ``request.key`` in its own
        transaction: ``keyed`` adds the row there with its ``Receipt``. A twin that races it
        loses on a unique key and gets the first reply. A reply that changed nothing (a
        refusal) is recorded after, before the ack; a known key, or a failure, goes the way
        of ``once`` (``process`` then runs from the row, as a drain would)."""
        if await self._known(request.key):
            return await self.once(request, process)
        receipt = Receipt(request, self.owner, self.clock(), self.lease)
        try:
            reply = await keyed(receipt)
        except Exception:
            log.exception("processing %s failed; the inbox drain retries it", request.key)
            return DEFERRED if await self.record(request) else \
                await self._first_reply(request.key)
        if receipt.kept:
            return reply
        done = _row(request, self.owner, receipt.now, self.lease, reply=reply,
                    done_at=receipt.now, told_at=receipt.now)
        return reply if await self._insert(done) else await self._first_reply(request.key)

    async def _known(self, key: str) -> bool:
        async with self.sessions() as session:
            found = (await session.exec(select(InboundRequest.id).where(
                InboundRequest.key == key))).first()
        return found is not None

    async def complete(self, request: Request, process: Process, tell: Tell) -> None:
        """After the ack, or for a row a drain claimed: process unless done, then tell."""
        reply = request.reply
        if reply is None:
            reply = await process(request)
            await self._finish(request.key, reply, told=False)
        if await tell(request, reply):
            await self._mark_told(request.key)

    async def drain(self, process: Process, tell: Tell) -> int:
        """Complete the rows whose claim lapsed (their owner died); how many were claimed."""
        claimed = await self._claim_due()
        for request in claimed:  # in arrival order: an approval before a later cancel
            try:
                await self.complete(request, process, tell)
            except Exception:
                log.exception("inbox request %s failed; retried after its lease",
                              request.key)
        return len(claimed)

    async def prune(self) -> None:
        """Forget requests told long ago (the table would otherwise only grow)."""
        async with self.writers(), self.sessions() as session:
            await session.exec(delete(InboundRequest).where(  # type: ignore[call-overload]
                col(InboundRequest.told_at) < self.clock() - RETAIN))
            await session.commit()

    async def _claim_due(self) -> list[Request]:
        now = self.clock()
        async with self.sessions() as session:
            rows = (await session.exec(
                select(InboundRequest).where(_claimable(now)).order_by(
                    col(InboundRequest.id)).limit(BATCH))).all()
        claimed = []
        for row in rows:
            if row.attempts >= MAX_ATTEMPTS:
                await self._give_up(row)
            elif await self._claim(col(InboundRequest.id) == row.id):
                claimed.append(_request(row))
        return claimed

    async def _take_over(self, key: str) -> Request | None:
        """A replay of a request whose first processor died before finishing it."""
        if not await self._claim(col(InboundRequest.key) == key,
                                 col(InboundRequest.done_at).is_(None)):
            return None
        async with self.sessions() as session:
            row = (await session.exec(
                select(InboundRequest).where(InboundRequest.key == key))).one()
        return _request(row)

    async def _claim(self, *where: ColumnElement[bool]) -> bool:
        """Compare-and-set on the lease: of two replicas, one updates the row."""
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            result = await session.exec(
                update(InboundRequest).where(*where, _claimable(now))
                .values(claimed_by=self.owner, claim_until=now + self.lease,
                        attempts=col(InboundRequest.attempts) + 1)
                .returning(col(InboundRequest.id)))
            won = result.first() is not None  # type: ignore[attr-defined]
            await session.commit()
        return won

    async def _first_reply(self, key: str) -> str:
        """The reply the first copy of this request got, once it has one."""
        deadline = asyncio.get_running_loop().time() + REPLAY_WAIT_SECONDS
        while True:
            async with self.sessions() as session:
                row = (await session.exec(
                    select(InboundRequest).where(InboundRequest.key == key))).first()
            if row is not None and row.reply is not None:
                return row.reply
            if asyncio.get_running_loop().time() > deadline:
                return STILL_WORKING
            await asyncio.sleep(0.05)

    async def _finish(self, key: str, reply: str, *, told: bool) -> None:
        now = self.clock()
        async with self.writers(urgent=told), self.sessions() as session:
            await session.exec(
                update(InboundRequest)
                .where(col(InboundRequest.key) == key, col(InboundRequest.done_at).is_(None))
                .values(done_at=now, reply=reply, told_at=now if told else None))
            await session.commit()

    async def _mark_told(self, key: str) -> None:
        async with self.writers(), self.sessions() as session:
            await session.exec(update(InboundRequest).where(col(InboundRequest.key) == key)
                               .values(told_at=self.clock()))
            await session.commit()

    async def _give_up(self, row: InboundRequest) -> None:
        log.error("inbox request %s (%s by %s) failed %d times; giving up: %s", row.key,
                  row.kind, row.user, row.attempts,
                  "its outcome was never told" if row.done_at else "it was never processed")
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            await session.exec(update(InboundRequest).where(col(InboundRequest.id) == row.id)
                               .values(told_at=now, done_at=row.done_at or now))
            await session.commit()


def _claimable(now: datetime) -> ColumnElement[bool]:
    """Not yet told, and nobody's claim is running."""
    return (col(InboundRequest.told_at).is_(None)
            & or_(col(InboundRequest.claim_until).is_(None),
                  col(InboundRequest.claim_until) < now))


def _row(request: Request, owner: str, now: datetime, lease: timedelta,
         **outcome: Any) -> InboundRequest:
    """A new row, claimed by ``owner``; with ``outcome`` (reply, done and told) finished."""
    return InboundRequest(key=request.key, kind=request.kind, user=request.user,
                          payload=json.dumps(request.payload), channel=request.channel,
                          received_at=now, claimed_by=owner, claim_until=now + lease,
                          attempts=1, **outcome)


def _request(row: InboundRequest) -> Request:
    return Request(key=row.key, kind=row.kind, user=row.user, payload=json.loads(row.payload),
                   channel=row.channel, received_at=as_utc(row.received_at), reply=row.reply)
