"""What became of a delivery attempt: rows marked delivered, or failed and retried with
backoff (the row's, so every replica waits it out), given up after ``MAX_ATTEMPTS``."""

from __future__ import annotations

import logging
from datetime import timedelta

from slack_sdk.errors import SlackApiError
from sqlalchemy import update
from sqlmodel import col

from bot.clock import Clock
from bot.metrics import Metrics
from bot.slack.notes import UnknownFact
from bot.store.db import Sessions
from bot.store.models import Outbox
from bot.store.writers import WriterQueue

log = logging.getLogger("bot.slack.notifier")  # where these lines were always logged
MAX_ATTEMPTS = 8


class Outcomes:
    """The notifier's (and alert delivery's) records of each attempt."""

    sessions: Sessions
    clock: Clock
    metrics: Metrics
    writers: WriterQueue

    async def _failed(self, rows: list[Outbox], exc: Exception) -> None:
        if isinstance(exc, SlackApiError):
            error = str(exc.response.get("error", "unknown"))
            method = exc.response.api_url.rsplit("/", 1)[-1]
        else:
            error, method = type(exc).__name__, "unknown"
        self.metrics.slack_errors.labels(method, error).inc()
        log.warning("Slack %s for deployment %s failed (%s); will retry",
                    method, rows[0].deployment_id, error)
        await self._mark(rows, delivered=False, error=error)

    async def unknown_fact(self, rows: list[Outbox], exc: UnknownFact) -> None:
        """Written by a newer process: retried (with backoff) so that one can post it,
        given up after MAX_ATTEMPTS like a failing Slack call. Later replies of the thread
        wait for it here, to keep their order."""
        log.error("%s; this process cannot put it into words", exc)
        await self._mark(rows, delivered=False, error=str(exc))

    async def _mark(self, rows: list[Outbox], *, delivered: bool, error: str = "") -> None:
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            if delivered:  # the common case: one statement, not a load per row
                await session.exec(update(Outbox).where(col(Outbox.id).in_([r.id for r in rows]))
                                   .values(delivered_at=now, last_error=None))
                await session.commit()
                return
            for row in rows:
                fresh = await session.get(Outbox, row.id)
                if fresh is None:
                    continue
                fresh.attempts += 1
                fresh.last_error = error[:500]
                fresh.claimed_by = fresh.claim_until = None  # the backoff is every replica's
                if fresh.attempts >= MAX_ATTEMPTS:
                    log.error("giving up on outbox row %s: %s", fresh.id, error)
                    fresh.delivered_at = now  # dead letter: kept with its last_error
                else:
                    fresh.next_attempt_at = now + timedelta(seconds=2 ** fresh.attempts)
                session.add(fresh)
            await session.commit()
