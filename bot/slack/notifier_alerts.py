"""Delivers an alert thread's outbox rows: the root message (posted once, then edited),
the suspect reply with its buttons (likewise), and the replies under it, in order.

When the root is first posted, the suspect deployment's own thread gets a link to it
(an outbox row of that thread, queued with the root's ts), so either story leads to
the other.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from slack_sdk.errors import SlackApiError, SlackClientError
from sqlalchemy import update
from sqlmodel import col, func, select

from bot.clock import as_utc, human_duration
from bot.config_alerts import AlertsConfig
from bot.mrkdwn import escape, permalink
from bot.slack.blocks_alerts import alert_root, suspect_message
from bot.slack.notes import UnknownFact, words_of
from bot.store.models import AlertInstance, AlertThread, Deployment, Outbox

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.clock import Clock
    from bot.store.db import Sessions
    from bot.store.writers import WriterQueue

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """An alert thread and what its messages show, read once per delivery pass (changes
    made meanwhile come with outbox rows of their own, delivered in the next pass)."""

    thread: AlertThread
    firing: int
    suspect: Deployment | None
    rollback: Deployment | None
    redeploy: Deployment | None


class Outlet(Protocol):
    """What alert delivery uses of the notifier, which owns Slack I/O and the outbox."""

    sessions: Sessions
    client: AsyncWebClient
    clock: Clock
    writers: WriterQueue

    def kick(self) -> None: ...

    async def _failed(self, rows: list[Outbox], exc: Exception) -> None: ...

    async def unknown_fact(self, rows: list[Outbox], exc: UnknownFact) -> None: ...

    async def _mark(self, rows: list[Outbox], *, delivered: bool, error: str = "") -> None: ...


class AlertDelivery:
    """Posts what the rows ask for, then records the delivered rows in one transaction:
    fewer writes on the hot path. A crash in between re-posts the replies (at least once),
    as everywhere in the outbox; a Slack error or a stop records what was done (and the
    rest is retried, by this replica or another).
    The root and the suspect reply are recorded as soon as Slack gives their ts (once per
    thread): a replica taking a dead one's claim over edits them, never posts a second."""

    def __init__(self, notifier: Outlet, settings: AlertsConfig) -> None:
        self.n, self.settings = notifier, settings

    async def deliver(self, rows: list[Outbox]) -> bool:
        """False when a Slack error stopped the pass (the rows behind it wait)."""
        thread_id = rows[0].alert_thread_id
        assert thread_id is not None
        snap = await self._snapshot(thread_id)
        if snap is None or snap.thread.channel is None:
            log.warning("alert thread %s has no channel (set alerts.default_channel); "
                        "its messages are dropped", thread_id)
            await self.n._mark(rows, delivered=True)
            return True
        done: list[Outbox] = []
        roots = [r for r in rows if r.kind == "alert_root"]
        suspects = [r for r in rows if r.kind == "alert_suspect"]
        for row in rows:
            call: Awaitable[object]
            if row.kind == "alert_reply":
                group, call = [row], self._reply(snap, row)
            elif roots and row is roots[0]:
                group, call = roots, self._root(snap)
            elif suspects and row is suspects[0]:
                group, call = suspects, self._suspect(snap)
            else:
                continue
            try:
                await call
            except asyncio.CancelledError:  # stopping (a post waiting out a rate limit
                await self._record(done)  # goes at once): what went out is recorded first
                raise
            except (SlackApiError, SlackClientError, OSError, TimeoutError, UnknownFact) as exc:
                await self._record(done)
                if isinstance(exc, UnknownFact):
                    await self.n.unknown_fact(group, exc)
                else:
                    await self.n._failed(group, exc)
                return False
            done += group
        await self._record(done)
        return True

    async def _snapshot(self, thread_id: int) -> Snapshot | None:
        async with self.n.sessions() as session:
            thread = await session.get(AlertThread, thread_id)
            if thread is None:
                return None
            firing = (await session.exec(select(func.count()).select_from(AlertInstance).where(
                AlertInstance.thread_id == thread_id, AlertInstance.status == "firing"))).one()
            deps = [await session.get(Deployment, dep_id) if dep_id else None
                    for dep_id in (thread.suspect_deployment_id, thread.rollback_deployment_id,
                                   thread.redeploy_deployment_id)]
        return Snapshot(thread, firing, *deps)

    async def _record(self, done: list[Outbox]) -> None:
        """The rows that went out, in one write."""
        if done:
            await self.n._mark(done, delivered=True)

    def _link_note(self, snap: Snapshot) -> Outbox | None:
        thread, suspect = snap.thread, snap.suspect
        if suspect is None or suspect.finished_at is None or not thread.root_ts:
            return None
        gap = (as_utc(thread.started_at) - as_utc(suspect.finished_at)).total_seconds()
        when = (f"{human_duration(gap)} after this deployment finished" if gap >= 0
                else "while this deployment was finishing")
        text = (f":rotating_light: Alert *{escape(thread.name)}* fired {when}: "
                f"<{permalink(thread.root_channel, thread.root_ts)}|alert thread>.")
        return Outbox(deployment_id=suspect.id, kind="thread", text=text,
                      created_at=self.n.clock(),
                      blocks=json.dumps([{"type": "section", "text": {"type": "mrkdwn",
                                                                      "text": text}}]))

    async def _root(self, snap: Snapshot) -> tuple[str, str]:
        """Post the root (first time) or re-render it; returns its channel and ts."""
        thread = snap.thread
        assert thread.channel is not None
        tried = (self.settings.service_labels, self.settings.env_labels)
        text, blocks = alert_root(thread, snap.firing, self.n.clock(), tried)
        if thread.root_ts and thread.root_channel:
            await self.n.client.chat_update(channel=thread.root_channel, ts=thread.root_ts,
                                            text=text, blocks=blocks)
            return thread.root_channel, thread.root_ts
        resp = await self.n.client.chat_postMessage(channel=thread.channel, text=text,
                                                    blocks=blocks, unfurl_links=False)
        thread.root_channel, thread.root_ts = str(resp["channel"]), str(resp["ts"])
        await self._save(thread, link=self._link_note(snap))
        return thread.root_channel, thread.root_ts

    async def _root_ref(self, snap: Snapshot) -> tuple[str, str]:
        if snap.thread.root_ts and snap.thread.root_channel:
            return snap.thread.root_channel, snap.thread.root_ts
        return await self._root(snap)

    async def _reply(self, snap: Snapshot, row: Outbox) -> None:
        text, blocks = words_of(row)
        channel, ts = await self._root_ref(snap)
        await self.n.client.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                             blocks=blocks, unfurl_links=False)

    async def _suspect(self, snap: Snapshot) -> None:
        """Post the suspect reply (first time) or re-render its buttons and state."""
        channel, ts = await self._root_ref(snap)
        thread, suspect = snap.thread, snap.suspect
        link = permalink(suspect.card_channel, suspect.card_ts) if suspect else None
        text, blocks = suspect_message(thread, suspect, snap.rollback, snap.redeploy,
                                       self.settings.suspect_window, link)
        if thread.suspect_ts:
            await self.n.client.chat_update(channel=channel, ts=thread.suspect_ts, text=text,
                                            blocks=blocks)
            return
        resp = await self.n.client.chat_postMessage(channel=channel, thread_ts=ts, text=text,
                                                    blocks=blocks, unfurl_links=False)
        thread.suspect_ts = str(resp["ts"])
        await self._save(thread)

    async def _save(self, thread: AlertThread, link: Outbox | None = None) -> None:
        """Where the root and suspect reply are, as soon as Slack says: a takeover after
        a crash finds them and edits them instead of posting them again. A new root's
        link from the suspect deployment's thread is queued with it, so it is not lost."""
        async with self.n.writers(), self.n.sessions() as session:
            await session.exec(update(AlertThread).where(col(AlertThread.id) == thread.id)
                               .values(root_channel=thread.root_channel,
                                       root_ts=thread.root_ts, suspect_ts=thread.suspect_ts))
            if link is not None:
                session.add(link)
            await session.commit()
        if link is not None:
            self.n.kick()
