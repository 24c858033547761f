"""Delivers the outbox to Slack: one status card per deployment, kept current with
``chat.update``, and the thread replies under it, in order.

Slack failures never touch deployment state: a failed call is logged, counted and
retried later with backoff; the deployment carries on meanwhile.

Every replica runs a notifier over the same rows: a thread's rows are claimed with a
lease before they are posted (``outbox_claims``), so Slack gets each message once, in
order. What a takeover after a crash may repeat: the status card, the approval request
and an alert's root and suspect reply are posted once their ts is recorded (saved right
after Slack answers, and checked before posting); a thread reply whose holder died
between Slack's answer and the commit is posted again (at least once, never lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from itertools import groupby
from typing import Protocol

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import update
from sqlmodel import col, or_, select

from bot.clock import Clock
from bot.config_alerts import AlertsConfig
from bot.engine.lifecycle import Event, enabled_events
from bot.engine.urgency import Urgency
from bot.metrics import Metrics
from bot.mrkdwn import permalink
from bot.slack.blocks import approval_request, status_card
from bot.slack.notes import UnknownFact, words_of
from bot.slack.notifier_alerts import AlertDelivery
from bot.slack.outbox_claims import LEASE, OutboxClaims
from bot.slack.outbox_outcomes import Outcomes
from bot.slack.retries import Backoffs
from bot.slack.rollout_chart import rollout_chart
from bot.store.db import Sessions
from bot.store.models import Approval, Deployment, Outbox
from bot.store.writers import WriterQueue

log = logging.getLogger(__name__)
IDLE_SECONDS = 1.0
STOP_GRACE_SECONDS = 2.0  # at shutdown, for a thread being posted to finish its row
SCAN_GAP = 0.05  # kicks within it share one scan; a person does not notice 50 ms
PARALLEL_DEPLOYMENTS = 8


def _thread(row: Outbox) -> tuple[int | None, int | None]:
    """Rows of one thread (a deployment's, an alert's; announcements: neither) go in order."""
    return row.deployment_id, row.alert_thread_id


class ApprovalInfo(Protocol):
    """What the approval message needs to know from the policy."""

    def approvers_text(self, env: str) -> str: ...

    def approvals_channel(self, env: str) -> str | None: ...


class Notifier(Outcomes):
    def __init__(
        self, sessions: Sessions, client: AsyncWebClient, clock: Clock, metrics: Metrics,
        approval_info: ApprovalInfo,
        progress: Callable[[Deployment], str | None] = lambda _: None,
        events: Callable[[Deployment], list[Event]] = enabled_events,
        alert_settings: AlertsConfig | None = None, writers: WriterQueue | None = None,
        urgency: Urgency | None = None, owner: str = "", lease: timedelta = LEASE,
    ) -> None:
        self.sessions, self.client, self.clock, self.metrics = sessions, client, clock, metrics
        self.approval_info, self.progress, self.events = approval_info, progress, events
        self.alerts = AlertDelivery(self, alert_settings or AlertsConfig())
        self.writers, self.urgency = writers or WriterQueue(""), urgency or Urgency()
        self.claims = OutboxClaims(sessions, self.writers, clock, lease=lease,
                                   owner=owner or f"notifier-{uuid.uuid4().hex[:8]}")
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(PARALLEL_DEPLOYMENTS)
        self._inflight: dict[tuple[int | None, int | None], asyncio.Task[None]] = {}
        self._skipped: set[tuple[int | None, int | None]] = set()
        self._finished = 0  # tasks ended so far: tells a scan its rows may be stale

    @property
    def owner(self) -> str:
        """Who holds this notifier's claims: the bot sets its process's id on start."""
        return self.claims.owner

    @owner.setter
    def owner(self, value: str) -> None:
        self.claims.owner = value

    def kick(self) -> None:
        """Something was queued: deliver now rather than at the next idle check."""
        self._wake.set()

    async def run_forever(self) -> None:
        """Scan, then wait for a kick (or ``IDLE_SECONDS``). Scans start ``SCAN_GAP`` apart
        at most: every slash-command ack kicks, and a scan per ack took the acks' CPU."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                began = loop.time()
                try:
                    await self.deliver_pending(wait=False)
                except Exception:
                    log.exception("outbox delivery failed; retrying")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
                await asyncio.sleep(began + SCAN_GAP - loop.time())
                self._wake.clear()
        finally:  # stopping: threads being posted get a moment to record what went out
            # (cancelled mid-write, a SQLite connection can keep its lock); one waiting to
            # retry has nothing in flight and goes at once
            backoffs = getattr(self.client, "backoffs", None) or Backoffs()
            await backoffs.finish(self._inflight.values(), STOP_GRACE_SECONDS)

    async def deliver_pending(self, wait: bool = True) -> int:
        """Start delivering each thread's pending rows; a thread still being delivered is
        left to its running task. Threads never wait for each other (a slow or
        rate-limited channel must not delay an alert elsewhere); ``wait`` waits for all.
        How many rows were pending."""
        finished_before = self._finished
        pending, rows = await self._scan()
        started, stale = [], self._finished != finished_before  # a task ended meanwhile
        for key, group in groupby(rows, key=_thread):
            if key in self._inflight:
                self._skipped.add(key)
                continue
            task = asyncio.create_task(self._run_group(key, list(group), stale))
            self._inflight[key] = task
            started.append(task)
        if wait:
            await asyncio.gather(*started)
        return pending

    async def _scan(self) -> tuple[int, list[Outbox]]:
        """The due rows of threads not already being delivered. Every ack kicks a scan, and
        under a backlog (rate-limited channels) nearly every thread is in flight: their
        rows are looked at as ids only, and whole rows are loaded for the others."""
        now = self.clock()
        due = (col(Outbox.delivered_at).is_(None),
               or_(col(Outbox.next_attempt_at).is_(None), col(Outbox.next_attempt_at) <= now))
        order = (col(Outbox.deployment_id).nulls_first(),
                 col(Outbox.alert_thread_id).nulls_first(), col(Outbox.id))
        async with self.sessions() as session:
            keys = (await session.exec(
                select(Outbox.id, Outbox.deployment_id, Outbox.alert_thread_id)
                .where(*due).order_by(*order).limit(500))).all()
            threads = [((dep_id, alert_id), id_) for id_, dep_id, alert_id in keys]
            busy = {thread for thread, _ in threads if thread in self._inflight}
            self._skipped |= busy
            wanted = [id_ for thread, id_ in threads if thread not in busy]
            rows = (await session.exec(select(Outbox).where(col(Outbox.id).in_(wanted))
                                       .order_by(*order))).all() if wanted else []
        return len(keys), list(rows)

    async def _run_group(self, key: tuple[int | None, int | None], rows: list[Outbox],
                         recheck: bool) -> None:
        try:
            await self.urgency.wait_quiet()  # acks and a rollback on its way go first
            rows = await self._still_pending(rows) if recheck else rows
            # Announcements are messages of their own, to various channels: one each.
            for part in ([rows] if key != (None, None) else [[r] for r in rows]):
                async with self._slots:
                    await self._claimed(part)
        except Exception:
            log.exception("outbox delivery for %s failed; retrying", key)
            return
        finally:
            self._inflight.pop(key, None)
            self._finished += 1
        if key in self._skipped:  # rows queued for this thread meanwhile: look again
            self._skipped.discard(key)
            self.kick()

    async def _still_pending(self, rows: list[Outbox]) -> list[Outbox]:
        """A scan that raced the end of this thread's previous task may hold rows that task
        has just delivered: keep only those still due, so nothing is posted twice."""
        now = self.clock()
        async with self.sessions() as session:
            due = set((await session.exec(select(Outbox.id).where(
                col(Outbox.id).in_([r.id for r in rows]), col(Outbox.delivered_at).is_(None),
                or_(col(Outbox.next_attempt_at).is_(None), col(Outbox.next_attempt_at) <= now),
            ))).all())
        return [r for r in rows if r.id in due]

    async def _claimed(self, rows: list[Outbox]) -> None:
        """Deliver what this replica wins the claim on (none: another one posts this
        thread), keeping the claim meanwhile; give back what is left undelivered."""
        claim = await self.claims.claim(rows)
        if not claim.rows:
            return
        if claim.taken_over:
            log.warning("outbox row %s: taken over from a replica whose claim lapsed (it "
                        "may have posted it already)", claim.rows[0].id)
        async with self.claims.renewing(claim.rows):
            try:
                complete = await self._deliver_group(claim.rows)
            except Exception:
                await self.claims.release(claim.rows)
                raise
        if not complete:
            await self.claims.release(claim.rows)

    async def _deliver_group(self, rows: list[Outbox]) -> bool:
        """Thread replies in order; repeated card or approval refreshes collapse into one.
        False when a failure stopped the pass (the rows behind it wait)."""
        dep_id = rows[0].deployment_id
        if rows[0].alert_thread_id is not None:
            return await self.alerts.deliver(rows)
        if dep_id is None:
            return await self._attempt(rows, self._announce(rows[0]))
        cards = [r for r in rows if r.kind == "card"]
        approvals = [r for r in rows if r.kind == "approval"]
        for row in rows:
            if row.kind == "thread":
                ok = await self._attempt([row], self._post_thread(dep_id, row))
            elif row.kind == "chart":
                ok = await self._attempt([row], self._upload_chart(dep_id))
            elif row is (approvals[0] if approvals else None):
                ok = await self._attempt(approvals, self._refresh_approval(dep_id))
            else:
                continue
            if not ok:
                return False  # keep order: later replies wait for this one
        return not cards or await self._attempt(cards, self._refresh_card(dep_id))

    async def _attempt(self, rows: list[Outbox], call: object) -> bool:
        try:
            await call  # type: ignore[misc]
        except (SlackApiError, SlackClientError, OSError, TimeoutError) as exc:
            await self._failed(rows, exc)
            return False
        except UnknownFact as exc:
            await self.unknown_fact(rows, exc)
            return False
        await self._mark(rows, delivered=True)
        return True

    async def _card_ref(self, dep_id: int) -> tuple[str, str]:
        """Channel and ts of the deployment's root message, posting the card first if needed."""
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
        assert dep is not None
        if dep.card_ts and dep.card_channel:
            return dep.card_channel, dep.card_ts
        text, blocks = status_card(dep, self.clock(), self.progress(dep), self.events(dep))
        resp = await self.client.chat_postMessage(
            channel=dep.channel, text=text, blocks=blocks, unfurl_links=False)
        channel, ts = str(resp["channel"]), str(resp["ts"])
        await self._save(dep_id, card_channel=channel, card_ts=ts)
        return channel, ts

    async def _post_thread(self, dep_id: int, row: Outbox) -> None:
        text, blocks = words_of(row)
        channel, ts = await self._card_ref(dep_id)
        await self.client.chat_postMessage(
            channel=channel, thread_ts=ts, text=text, blocks=blocks, unfurl_links=False)

    async def _refresh_card(self, dep_id: int) -> None:
        channel, ts = await self._card_ref(dep_id)
        async with self.sessions() as session:
            fresh = await session.get(Deployment, dep_id)
        assert fresh is not None
        text, blocks = status_card(fresh, self.clock(), self.progress(fresh),
                                   self.events(fresh))
        await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)

    async def _upload_chart(self, dep_id: int) -> None:
        """The rollout's canary-vs-baseline chart, as a PNG in the deployment thread."""
        channel, ts = await self._card_ref(dep_id)
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
        assert dep is not None
        png = await asyncio.to_thread(rollout_chart, dep)
        await self.client.files_upload_v2(
            channel=channel, thread_ts=ts, content=png, filename=f"rollout-{dep_id}.png",
            title=f"{dep.service} {dep.version} on {dep.env}: canary vs baseline")

    async def _announce(self, row: Outbox) -> None:
        text, blocks = words_of(row)
        await self.client.chat_postMessage(channel=row.channel or "", text=text,
                                           blocks=blocks, unfurl_links=False)

    async def _refresh_approval(self, dep_id: int) -> None:
        """Post the approval request in the thread (and the approvals channel), or update it."""
        channel, ts = await self._card_ref(dep_id)
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            approvals = (await session.exec(select(Approval.user, Approval.at).where(
                Approval.deployment_id == dep_id, Approval.decision == "approve")
                .order_by(col(Approval.id)))).all()
        assert dep is not None
        link = permalink(channel, ts)
        text, blocks = approval_request(dep, list(approvals),
                                        self.approval_info.approvers_text(dep.env),
                                        self.clock(), thread_link=link)
        if dep.approval_ts is None:
            resp = await self.client.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                                      blocks=blocks)
            await self._save(dep_id, approval_ts=str(resp["ts"]))
        else:
            await self.client.chat_update(channel=channel, ts=dep.approval_ts, text=text,
                                          blocks=blocks)
        elsewhere = self.approval_info.approvals_channel(dep.env)
        if elsewhere and dep.approval_copy is None:
            resp = await self.client.chat_postMessage(channel=elsewhere, text=text, blocks=blocks)
            await self._save(dep_id, approval_copy=f"{resp['channel']} {resp['ts']}")
        elif dep.approval_copy:
            copy_channel, copy_ts = dep.approval_copy.split(" ", 1)
            await self.client.chat_update(channel=copy_channel, ts=copy_ts, text=text,
                                          blocks=blocks)

    async def _save(self, dep_id: int, **values: str) -> None:
        """Record where a message went, without racing the engine's writes to the row."""
        async with self.writers(), self.sessions() as session:
            await session.exec(update(Deployment).where(col(Deployment.id) == dep_id)
                               .values(**values))
            await session.commit()
