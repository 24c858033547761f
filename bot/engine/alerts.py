"""Alerts in, threads out: one thread per firing alert or Alertmanager group, the suspect
deployment found at once, resolutions and people's decisions recorded.

Everything is rows: the webhook only calls ``receive``, which writes the threads, their
alert instances and the outbox messages and returns. Repeated notifications find their
instance (unique key) or the open thread (unique ``open_key``), so Alertmanager's
repeats, retries and HA pairs never post twice.

A large delivery (an alert storm: thousands of alerts) is recorded in chunks of
``CHUNK`` alerts, each its own short transaction through the writer queue, so a person's
click or command waits for one chunk at most, not for the whole storm. Each chunk is
atomic and alerts are processed in order, as in one transaction; a delivery that fails
half way is retried whole by its sender and the chunks already recorded are repeats.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import func, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.config import ShipbotConfig
from bot.engine import alert_outbox, facts, machine, suspects
from bot.engine.policy import Policy
from bot.engine.rollback import RollbackService
from bot.store.db import Sessions
from bot.store.models import AlertInstance, AlertThread, Deployment
from bot.store.writers import WriterQueue
from integrations.alerts import Alert

RETRIES = 5
MAX_LABELS = 30
CHUNK = 50  # alerts per gated transaction: a few tens of milliseconds of holding the queue
# Chunks being recorded at once, over all deliveries. On PostgreSQL each holds one of the
# edge pool's connections, which slash commands and clicks answer from: a storm of
# deliveries in parallel (Alertmanager sends each group on its own) would otherwise take
# every one of them, and acks would wait for the pool past Slack's 3 seconds.
CONCURRENT_CHUNKS = 2


@dataclass
class Received:
    """What one webhook delivery did, returned to the sender as JSON."""

    alerts: int = 0
    threads: list[int] = field(default_factory=list)
    new: list[int] = field(default_factory=list)
    resolved: list[int] = field(default_factory=list)
    unmapped: int = 0
    ignored: int = 0

    def add(self, part: Received) -> None:
        """Fold a chunk's result into the delivery's (``alerts`` is set once, up front)."""
        self.threads += part.threads
        self.new += part.new
        self.resolved += part.resolved
        self.unmapped += part.unmapped
        self.ignored += part.ignored

    def as_json(self) -> dict[str, object]:
        return {"ok": True, "alerts": self.alerts, "threads": sorted(set(self.threads)),
                "new_threads": self.new, "resolved_threads": self.resolved,
                "unmapped": self.unmapped, "ignored": self.ignored}


def instance_key(alert: Alert) -> str:
    return f"{alert.source}:{alert.fingerprint}:{as_utc(alert.starts_at).isoformat()}"[:255]


def payload_of(alert: Alert) -> str:
    labels = dict(sorted(alert.labels.items())[:MAX_LABELS])
    return json.dumps({
        "summary": alert.summary[:1000], "description": alert.description[:2000],
        "generator_url": alert.generator_url, "runbook_url": alert.runbook_url,
        "dashboard_url": alert.dashboard_url, "silence_url": alert.silence_url,
        "labels": {k[:100]: v[:200] for k, v in labels.items()},
    })


class AlertService:
    def __init__(self, sessions: Sessions, config: ShipbotConfig, policy: Policy, clock: Clock,
                 rollbacks: RollbackService, on_change: Callable[[], None] = lambda: None,
                 writers: WriterQueue | None = None, chunk: int = CHUNK):
        self.sessions, self.config, self.policy, self.clock = sessions, config, policy, clock
        self.chunk = max(1, chunk)
        self.rollbacks, self.on_change = rollbacks, on_change
        self.settings, self.services = config.alerts, tuple(config.services)
        self.writers = writers or WriterQueue("")
        self.auto_rules = any(s.auto_rollback for s in config.services.values())
        self._recording = asyncio.Semaphore(CONCURRENT_CHUNKS)

    async def receive(self, alerts: list[Alert]) -> Received:
        """Record a delivery chunk by chunk, letting other writers in between, then start
        the auto-rollbacks it asks for."""
        result = Received(alerts=len(alerts))
        try:
            for start in range(0, len(alerts), self.chunk):
                result.add(await self._receive(alerts[start:start + self.chunk]))
                self.on_change()  # the first threads can be posted while the rest is recorded
        except Exception:
            # The sender retries the whole delivery, where these threads are no longer new.
            await self._auto_rollbacks(result.new)
            raise
        await self._auto_rollbacks(result.new)
        return result

    async def _auto_rollbacks(self, new_threads: list[int]) -> None:
        """Start the rollbacks the services' ``auto_rollback`` rules ask for (idempotent)."""
        if not self.auto_rules:
            return
        for thread_id in new_threads:
            async with self._recording:
                due = await self._auto_rollback_due(thread_id)
            if due:
                await self.rollbacks.from_alert(thread_id, "shipbot", auto=True)

    async def _receive(self, chunk: list[Alert]) -> Received:
        """One chunk in one gated transaction, retried when a concurrent delivery wins a
        race (it then finds that delivery's instance or thread)."""
        for attempt in range(RETRIES):
            try:
                async with self._recording, self.writers():
                    return await self._record(chunk)
            except (IntegrityError, StaleDataError, OperationalError):
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _record(self, alerts: list[Alert]) -> Received:
        now, result, refreshed = self.clock(), Received(), set[int]()
        async with self.sessions() as session:
            for alert in alerts:
                await self._one(session, alert, now, result, refreshed)
            await session.commit()
        return result

    def _map(self, alert: Alert) -> tuple[str | None, str | None]:
        service, env = self.settings.map(alert, self.services, self.config.environment_order)
        if service is None or env not in self.config.environments_of(service):
            env = None
        return service, env

    def _open_key(self, alert: Alert, service: str | None, env: str | None) -> str:
        """Alertmanager groups share a thread (per service/env); others key on fingerprint."""
        if alert.source == "alertmanager" and alert.group_key:
            digest = hashlib.sha256(alert.group_key.encode()).hexdigest()[:32]
            return f"am-group:{digest}:{service or '?'}/{env or '?'}"
        return f"{alert.source}:{alert.fingerprint}"[:255]

    async def _one(self, session: AsyncSession, alert: Alert, now: datetime,
                   result: Received, refreshed: set[int]) -> None:
        """One alert; ``refreshed``: threads whose root is already re-rendered this chunk."""
        key = instance_key(alert)
        instance = (await session.exec(
            select(AlertInstance).where(AlertInstance.key == key))).first()
        if instance is not None:
            result.threads.append(instance.thread_id)
            if instance.status == "firing" and not alert.firing:
                instance.status, instance.ends_at = "resolved", _end(alert, now)
                session.add(instance)
                await self._maybe_resolve(session, instance.thread_id, now, result)
            return  # a repeat: nothing new to say
        service, env = self._map(alert)
        thread = (await session.exec(select(AlertThread).where(
            AlertThread.open_key == self._open_key(alert, service, env)))).first()
        if thread is None:
            if not alert.firing:
                result.ignored += 1  # resolved before we ever saw it fire: nothing to say
                return
            thread = await self._open(session, alert, service, env, now)
            result.new.append(thread.id or 0)
            result.unmapped += service is None
        elif thread.id not in refreshed:
            alert_outbox.refresh_root(session, thread.id or 0, now=now)  # one more in the group
        assert thread.id is not None
        refreshed.add(thread.id)
        result.threads.append(thread.id)
        session.add(AlertInstance(
            key=key, thread_id=thread.id, fingerprint=alert.fingerprint[:64],
            status=alert.status, starts_at=as_utc(alert.starts_at),
            ends_at=None if alert.firing else _end(alert, now)))
        if not alert.firing:
            await session.flush()
            await self._maybe_resolve(session, thread.id, now, result)

    async def _open(self, session: AsyncSession, alert: Alert, service: str | None,
                    env: str | None, now: datetime) -> AlertThread:
        channel = (self.config.services[service].channel if service else
                   self.settings.default_channel or self.config.announce_channel)
        started, found, before = as_utc(alert.starts_at), None, None
        if service and env:
            found, before = await suspects.suspect_and_before(
                session, service, env, started, self.settings.suspect_window)
        thread = AlertThread(
            source=alert.source, open_key=self._open_key(alert, service, env),
            group_key=alert.group_key, fingerprint=alert.fingerprint[:64], service=service,
            env=env, status="firing", name=alert.name[:255],
            severity=alert.severity[:64] if alert.severity else None,
            payload=payload_of(alert), started_at=started, created_at=now, updated_at=now,
            channel=channel, suspect_deployment_id=found.id if found else None,
            rollback_to=before)
        session.add(thread)
        await session.flush()
        assert thread.id is not None
        alert_outbox.refresh_root(session, thread.id, now=now)
        if service:
            alert_outbox.refresh_suspect(session, thread.id, now=now)
        return thread

    async def _maybe_resolve(self, session: AsyncSession, thread_id: int, now: datetime,
                             result: Received) -> None:
        """The thread resolves when none of its alerts fires any more."""
        firing = (await session.exec(select(func.count()).select_from(AlertInstance).where(
            AlertInstance.thread_id == thread_id, AlertInstance.status == "firing"))).one()
        thread = await session.get(AlertThread, thread_id)
        if firing or thread is None or thread.status == "resolved":
            return
        ends = (await session.exec(select(func.max(AlertInstance.ends_at)).where(
            AlertInstance.thread_id == thread_id))).one()
        thread.status, thread.open_key, thread.updated_at = "resolved", None, now
        thread.resolved_at = as_utc(ends) if ends else now
        session.add(thread)
        alert_outbox.refresh_root(session, thread_id, now=now)
        alert_outbox.reply(session, thread_id, facts.AlertResolved(
            seconds=(thread.resolved_at - as_utc(thread.started_at)).total_seconds(),
            at=thread.resolved_at), now=now)
        result.resolved.append(thread_id)

    async def _auto_rollback_due(self, thread_id: int) -> bool:
        """Does the service's ``auto_rollback`` ask for a rollback of this alert's suspect?"""
        async with self.sessions() as session:
            thread = await session.get(AlertThread, thread_id)
            if thread is None or thread.service is None or not thread.rollback_to:
                return False
            rule = self.config.services[thread.service].auto_rollback
            dep = (await session.get(Deployment, thread.suspect_deployment_id)
                   if rule and thread.suspect_deployment_id else None)
        if rule is None or dep is None or dep.finished_at is None:
            return False
        after = as_utc(thread.started_at) - as_utc(dep.finished_at)
        return rule.matches(thread.name, thread.severity, after)

    async def acknowledge(self, thread_id: int, user: str) -> str:
        return await self._decide(thread_id, user, "acknowledged_by")

    async def dismiss(self, thread_id: int, user: str) -> str:
        """"Not the deploy": the rollback offer goes away, with who decided it."""
        return await self._decide(thread_id, user, "dismissed_by")

    async def _decide(self, thread_id: int, user: str, what: str) -> str:
        async with self.sessions() as session:  # checked before the writer queue: Slack may be slow
            thread = await session.get(AlertThread, thread_id)
        if thread is None:
            return "That alert is not known any more; nothing was changed."
        decision = await self.policy.may_decide_alert(user, thread.env)
        if not decision.allowed:
            return decision.reason
        answer = await machine.retry_on_conflict(
            lambda: self._decide_once(thread_id, user, what), writers=self.writers, tries=RETRIES,
            give_up="Several people acted at once; look at the alert thread.")
        self.on_change()
        return answer

    async def _decide_once(self, thread_id: int, user: str, what: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            thread = await session.get(AlertThread, thread_id)
            if thread is None:
                return "That alert is not known any more; nothing was changed."
            earlier = getattr(thread, what)
            verb = "acknowledged this alert" if what == "acknowledged_by" else \
                "marked this alert as not caused by the deploy"
            if earlier is not None:
                return f"<@{earlier}> already {verb}."
            setattr(thread, what, user)
            thread.updated_at = now
            session.add(thread)
            machine.record(session, service=thread.service or "*", env=thread.env or "*",
                           actor=user, action=what.removesuffix("_by"), now=now,
                           deployment_id=thread.suspect_deployment_id,
                           detail=f"alert thread #{thread_id}")
            if what == "dismissed_by":
                alert_outbox.reply(session, thread_id, facts.AlertDismissed(by=user), now=now)
            alert_outbox.refresh_root(session, thread_id, now=now)
            alert_outbox.refresh_suspect(session, thread_id, now=now)
            await session.commit()
        return f"You {verb}."


def _end(alert: Alert, now: datetime) -> datetime:
    return as_utc(alert.ends_at) if alert.ends_at else now

