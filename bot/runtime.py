"""Wiring: builds every part from settings and config and runs the background loops.

One factory, no globals: tests build as many bots as they like, each with its
own database, Slack endpoint and clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import uuid
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

import aiohttp
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from slack_bolt.async_app import AsyncApp

from bot.clock import Clock, system_clock
from bot.config import ShipbotConfig
from bot.config_analysis import JudgeKind
from bot.engine import progressive, replicas, slot_versions
from bot.engine.alerts import AlertService
from bot.engine.analysis import mann_whitney
from bot.engine.approvals import ApprovalService
from bot.engine.controls import ControlService
from bot.engine.deploys import DeployService
from bot.engine.guards import GuardService
from bot.engine.inbox import Inbox
from bot.engine.mirror_delivery import MirrorDelivery
from bot.engine.policy import Policy
from bot.engine.providers import build_providers
from bot.engine.replicas import Heartbeat
from bot.engine.rollback import RollbackService
from bot.engine.runner import Runner
from bot.engine.urgency import Urgency, YieldingMetrics
from bot.metrics import Metrics
from bot.redact import Redactor
from bot.settings import Settings
from bot.slack.app import build_slack_app, build_web_client, tell_user
from bot.slack.directory import SlackDirectory
from bot.slack.notifier import Notifier
from bot.store.db import create_engine, create_schema, edge_engine, session_factory
from bot.store.writers import WriterQueue
from commands.catalog import Catalog
from commands.handlers import CommandHandlers
from integrations.http import HttpOptions
from integrations.metrics_registry import build_metrics
from integrations.registry import ProviderContext

log = logging.getLogger(__name__)


class Shipbot:
    """The running bot: store, engine, notifier, Slack app and scheduler."""

    def __init__(self, settings: Settings, config: ShipbotConfig, clock: Clock = system_clock):
        self.settings, self.config, self.clock = settings, config, clock
        self.metrics = Metrics()
        # The one redaction step: Slack calls and acks, the audit trail and the log handlers.
        self.redactor = Redactor.for_bot(settings, config, os.environ)
        self.db = create_engine(settings.DATABASE_URL)  # the engine's work
        self.edge_db = edge_engine(self.db, settings.DATABASE_URL)  # what a person waits for
        # Every outbound provider request (CI, deploy, metrics, HTTP checks) is counted.
        self.http = HttpOptions(observe=self.metrics.count_provider_request)
        context = ProviderContext(state_dir=settings.SHIPBOT_STATE_DIR, http=self.http)
        self.providers = build_providers(config, context)
        # Sessions know the mirrored services: their state changes queue MirrorEvents.
        mirrored = frozenset(name for name, p in self.providers.items()
                             if p.mirror is not None)
        self.sessions = session_factory(self.db, self.redactor, mirrored)
        # Commands, clicks and webhooks: never waiting for a connection behind the runner.
        self.edge_sessions = session_factory(self.edge_db, self.redactor, mirrored)
        edge = self.edge_sessions
        self.urgency = Urgency()  # what a person waits for goes first
        self.writers = WriterQueue(settings.DATABASE_URL, self.urgency.background_turn)
        token = settings.SLACK_BOT_TOKEN.get_secret_value() if settings.SLACK_BOT_TOKEN else ""
        self.client = build_web_client(token or "xoxb-not-configured", settings.SLACK_API_URL,
                                       self.redactor)
        self.directory = SlackDirectory(self.client)
        self.policy = Policy(config, self.directory)
        self.notifier = Notifier(self.sessions, self.client, clock, self.metrics, self.policy,
                                 progress=lambda dep: progressive.progress(config, dep),
                                 events=lambda dep: progressive.enabled_now(config, dep),
                                 alert_settings=config.alerts, writers=self.writers,
                                 urgency=self.urgency)
        # This process, in leases and claims; ``start`` prefixes it with the replica's id.
        self._process_id = uuid.uuid4().hex[:8]
        owner = f"shipbot-{self._process_id}"
        self.notifier.owner = owner
        self.mirrors = MirrorDelivery(self.sessions, self.providers, clock, self.writers,
                                      owner=owner)
        lease = timedelta(seconds=settings.SHIPBOT_LEASE_SECONDS)
        self.heartbeat = Heartbeat(self.sessions, clock, lease, self.writers)
        self.runner = Runner(
            self.sessions, self.providers, clock, self.metrics, self.policy,
            owner=owner,
            poll_seconds=config.poll_interval_seconds, on_change=self._changed,
            metrics_provider=YieldingMetrics(build_metrics(config.metrics, context),
                                             self.urgency) if config.metrics else None,
            writers=self.writers, lease=lease, http=self.http, urgency=self.urgency,
        )
        self.service = DeployService(
            edge, self.policy, self.providers, clock, on_change=self.wake,
            writers=self.writers)
        self.approvals = ApprovalService(edge, self.policy, clock, on_change=self.wake)
        self.guards = GuardService(edge, self.policy, clock)
        self.controls = ControlService(edge, self.policy, self.providers, clock,
                                       on_change=self.wake)
        self.rollbacks = RollbackService(edge, self.policy, clock,
                                         on_change=self.advance_first, writers=self.writers,
                                         urgency=self.urgency)
        self.alerts = AlertService(edge, config, self.policy, clock, self.rollbacks,
                                   on_change=self.notifier.kick,  # only messages to send
                                   writers=self.writers)
        catalog = Catalog({n: config.environments_of(n) for n in config.services},
                          config.environment_order)
        self.inbox = Inbox(edge, clock, owner=owner, writers=self.writers)
        self.handlers = CommandHandlers(self.service, self.approvals, self.guards,
                                        self.controls, catalog, clock,
                                        rollbacks=self.rollbacks, alerts=self.alerts,
                                        inbox=self.inbox)
        secret = settings.SLACK_SIGNING_SECRET
        self.slack: AsyncApp = build_slack_app(
            self.client, secret.get_secret_value() if secret else None, self.handlers,
            self.urgency)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state_lock: int | None = None

    async def start(self) -> None:
        """Create the schema, then resume whatever the database says is in flight."""
        await create_schema(self.db)
        await self._mend_slot_versions()  # before anything else writes
        await self._become_replica()
        if JudgeKind.MANN_WHITNEY in self.config.judges():  # ~0.4 s of imports: not on the loop
            await asyncio.to_thread(mann_whitney.scipy_stats)
        # One connection pool for every Web API call (slack_sdk opens a session per call
        # otherwise): alert threads are posted in a few milliseconds, not a TCP handshake.
        self.client.session = aiohttp.ClientSession()
        tick = self.settings.SHIPBOT_TICK_SECONDS
        self._every(tick, "tick", self._start_tick)
        self._every(self.settings.SHIPBOT_LEASE_SECONDS / 3, "heartbeat", self.heartbeat.beat)
        self._every(30, "freeze-windows", self._announce)
        # Clicks another process acknowledged and died before acting on (or telling).
        self._every(max(tick, 1), "inbox", self._drain_inbox)
        self._every(3600, "inbox-prune", self.inbox.prune)
        self._every(3600, "slot-versions", self._mend_slot_versions)
        self.scheduler.start()
        self._spawn(self.notifier.run_forever())
        if self.mirrors.enabled:
            self._spawn(self.mirrors.run_forever())
        self._spawn(self._drain_inbox())
        _freeze_startup_heap()
        self.wake()

    def _every(self, seconds: float, name: str,
               job: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """A periodic job, one run at a time. Cancelled at shutdown (the scheduler cancels
        what still runs), it stops quietly: that is no crash to log."""

        async def run() -> None:
            try:
                await job()
            except asyncio.CancelledError:
                log.debug("%s: stopped at shutdown", name)

        self.scheduler.add_job(run, "interval", id=name, name=name, max_instances=1, coalesce=True,
                               seconds=seconds)

    async def _become_replica(self) -> None:
        """Runs belong to the state directory's replica; the heartbeat says it is alive.
        Holding the directory's lock means this replica's last process is dead: what it
        had claimed goes on now instead of after a lease."""
        state_dir = self.settings.SHIPBOT_STATE_DIR
        replica, self._state_lock = await asyncio.to_thread(replicas.identity, state_dir)
        owner = f"{replica}/{self._process_id}"
        self.runner.replica = self.heartbeat.replica = replica
        self.runner.owner = self.inbox.owner = self.mirrors.owner = owner
        self.notifier.owner = owner
        if self._state_lock is None:
            log.warning("another running Shipbot uses %s, so this one runs as replica %s "
                        "until it stops: give each replica its own SHIPBOT_STATE_DIR",
                        state_dir, replica)
        else:
            await replicas.release_dead_leases(self.sessions, self.writers, replica, owner)
        await self.heartbeat.beat()

    async def _start_tick(self) -> None:
        """The scheduler's tick starts the runner's claim and returns: a slow step must
        not make the scheduler skip the next ticks (``max_instances=1``)."""
        self.runner.start_tick()

    async def _drain_inbox(self) -> None:
        await self.handlers.drain(functools.partial(tell_user, self.client))

    async def _mend_slot_versions(self) -> None:
        """Successes an older replica or a hand-made fix left out of ``SlotVersion``."""
        try:
            mended = await slot_versions.mend(self.sessions, self.writers)
        except Exception:  # the next hour tries again; status shows an older version
            log.exception("checking what runs on each slot failed")
            return
        if mended:
            log.warning("recorded what runs now on %d slots whose newest success was not "
                        "recorded as current (a replica on older code, or a change by hand)",
                        mended)

    async def _announce(self) -> None:
        if await self.guards.announce_windows():
            self.notifier.kick()

    def wake(self) -> None:
        """New work was recorded: advance it now instead of at the next tick."""
        self.runner.start_tick()
        self.notifier.kick()
        self.mirrors.kick()

    def _changed(self) -> None:
        """The runner moved something on: messages and mirror statuses to deliver."""
        self.notifier.kick()
        self.mirrors.kick()

    def advance_first(self) -> None:
        """A rollback was recorded: reach the deploy target before posting about it (the
        runner kicks the notifier once it has advanced something)."""
        self.urgency.until_done(self._spawn(self.runner.tick(under_way=False, urgent=True)))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def stop(self) -> None:
        """SIGTERM (uvicorn's lifespan shutdown): claim nothing more, give the steps under
        way the grace period, then hand them and this replica's runs to the others."""
        if self.scheduler.running:
            self.scheduler.pause()  # nothing new starts; a running tick drains below
        await self.runner.drain(self.settings.SHIPBOT_SHUTDOWN_GRACE_SECONDS)
        # The scheduled tick returns once its steps have: let it, before the scheduler
        # would cancel it mid-step (and log that as a crash).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.runner.idle(), 2)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.heartbeat.replica:  # started: another replica takes its runs over now
            try:
                await self.heartbeat.leave()
            except Exception:  # its heartbeat runs out instead
                log.exception("shutting down: giving this replica's runs up failed")
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Their ends (cancelled, or failed: nothing left to do about it) are collected; a
        # cancel of this stop itself goes on up.
        await asyncio.gather(*tasks, return_exceptions=True)
        try:  # Slack threads this process was posting: the others go on at once
            await self.notifier.claims.hand_back()
        except Exception:  # its claims lapse instead
            log.exception("shutting down: handing the Slack outbox back failed")
        if self.client.session is not None:
            await self.client.session.close()
        await self.db.dispose()
        if self.edge_db is not self.db:
            await self.edge_db.dispose()
        if self._state_lock is not None:
            os.close(self._state_lock)  # the next process of this replica may start
            self._state_lock = None


@functools.cache  # once per process; gc.get_freeze_count() walks the frozen heap (~16 ms)
def _freeze_startup_heap() -> None:
    """Move what start-up made (modules, config, the app: ~200,000 objects) out of the
    garbage collector's sight, once per process. Each full collection walked all of it,
    ~0.1 s with the loop stopped, every few hundred requests: `/deploy status` over 1,000
    services had one answer in eight take 150 ms instead of 25."""
    gc.collect()
    gc.freeze()

