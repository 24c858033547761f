"""Tables. The database is the source of truth: every decision and every message
to send is a row, so a restart continues where the last process stopped."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlmodel import Field, SQLModel

from bot.clock import as_utc


class UTCDateTime(TypeDecorator[datetime]):
    """An instant, stored as UTC and read back as UTC-aware on every database.

    SQLite has no time zones: SQLAlchemy writes an aware value's wall time and drops its
    offset, so 20:00 in Los Angeles would be stored, and compared, as 20:00 UTC. Every
    value is converted to UTC before it is written (a naive one is taken as UTC already)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def _ts(index: bool = False, nullable: bool = True) -> Column:  # type: ignore[type-arg]
    return Column(UTCDateTime(), index=index, nullable=nullable)


# Optimistic locking: an UPDATE of a row someone else changed meanwhile raises
# StaleDataError instead of silently overwriting (a cancel racing the runner).
_row_version = Column("row_version", Integer, nullable=False)


class Deployment(SQLModel, table=True):
    """One request to put a version of a service on an environment."""

    __mapper_args__ = {"version_id_col": _row_version}
    # Each slot's newest success without sorting the history (policy, suspects); a slot's
    # newest deployments read backwards from where they end (`/deploy history`).
    __table_args__ = (Index("ix_deployment_state_slot", "state", "service", "env", "id"),
                      Index("ix_deployment_slot_id", "service", "env", "id"))
    row_version: int | None = Field(default=None, sa_column=_row_version)

    id: int | None = Field(default=None, primary_key=True)
    request_key: str = Field(unique=True, max_length=255)
    service: str = Field(max_length=64)
    env: str = Field(index=True, max_length=64)
    version: str | None = Field(default=None, max_length=128)
    previous_version: str | None = Field(default=None, max_length=128)
    reason: str | None = Field(default=None, sa_column=Column(Text))
    requester: str = Field(max_length=64)
    state: str = Field(index=True, max_length=32)
    # Non-null while in flight; unique, so the database itself refuses a second
    # concurrent deployment of the same service and environment.
    active_slot: str | None = Field(default=None, unique=True, max_length=140)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    updated_at: datetime = Field(sa_column=_ts(nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=_ts())
    next_action_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
    step_deadline_at: datetime | None = Field(default=None, sa_column=_ts())
    step_attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: datetime | None = Field(default=None, sa_column=_ts())
    # The replica that started the run this deployment waits for (a build, a deploy, a
    # traffic change): other replicas leave the deployment alone while it is alive
    # (``Replica``), since a provider's run may live on that replica's disk only.
    run_owner: str | None = Field(default=None, max_length=64)
    # A run a person's cancel or abort left going ("ci:<id>" or "target:<id>"): the runner
    # stops it, on the replica that started it, before anything else (the run may live on
    # that replica's disk only). Due at ``next_action_at`` even once the deployment ended.
    stop_run: str | None = Field(default=None, max_length=300)
    ci_run_id: str | None = Field(default=None, max_length=255)
    ci_url: str | None = Field(default=None, max_length=1000)
    # The build this deployment puts on its environment: what it produced (an image
    # reference or digest), its commit, and the deployment that ran it (itself, or an
    # earlier one of the same version: "build once, promote the artifact").
    artifact: str | None = Field(default=None, max_length=500)
    commit_sha: str | None = Field(default=None, max_length=64)
    built_by: int | None = Field(default=None)
    # The commits it ships (JSON of integrations.base.Comparison), when CI can compare,
    # and whether its requester overrode the environment's max_commits.
    changes: str | None = Field(default=None, sa_column=Column(Text))
    many_commits_ok: bool = False
    deploy_run_id: str | None = Field(default=None, max_length=255)
    channel: str = Field(max_length=80)
    card_channel: str | None = Field(default=None, max_length=80)
    card_ts: str | None = Field(default=None, max_length=32)
    hotfix: bool = False
    approvals_required: int = 0
    approval_expires_at: datetime | None = Field(default=None, sa_column=_ts())
    approval_ts: str | None = Field(default=None, max_length=32)
    approvals_received: int = 0
    approval_copy: str | None = Field(default=None, max_length=120)  # "channel ts" elsewhere
    # Rollbacks: "deploy", "rollback" (to an earlier version) or "redeploy" (undoes a
    # rollback); the alert that caused it (no FK: alert threads reference deployments).
    kind: str = Field(default="deploy", max_length=16)
    rollback_of: int | None = Field(default=None, foreign_key="deployment.id")
    alert_thread_id: int | None = Field(default=None, index=True)
    alert_started_at: datetime | None = Field(default=None, sa_column=_ts())
    recovery_seconds: float | None = None  # alert start to rollback end: the MTTR sample
    # Progressive delivery: where in the strategy's plan the rollout is.
    strategy: str = Field(default="rolling", max_length=16)
    stage: int = 0
    stage_started_at: datetime | None = Field(default=None, sa_column=_ts())
    action_run_id: str | None = Field(default=None, max_length=255)
    last_check_at: datetime | None = Field(default=None, sa_column=_ts())
    paused_reason: str | None = Field(default=None, sa_column=Column(Text))
    analysis_state: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    analysis_log: str = Field(default="[]", sa_column=Column(Text, nullable=False,
                                                            default="[]"))
    # The GitHub Deployment that mirrors this one (``MirrorEvent``), once created.
    github_deployment_id: str | None = Field(default=None, max_length=32)


class Replica(SQLModel, table=True):
    """A running bot process and how long it is known to be alive (its heartbeat). A
    deployment whose ``run_owner`` has no live row here is taken over by another one."""

    id: str = Field(primary_key=True, max_length=64)
    alive_until: datetime = Field(sa_column=_ts(index=True, nullable=False))


class SlotVersion(SQLModel, table=True):
    """What runs on each slot now: its newest successful deployment, written in the
    transaction that makes it succeed (``machine.succeed``). `/deploy status` reads these
    rows alone, instead of aggregating every success ever recorded; it shows the copied
    columns, which a finished deployment never changes (a join back to ``deployment``
    made PostgreSQL hash all 200,000 rows of a large history)."""

    service: str = Field(primary_key=True, max_length=64)
    env: str = Field(primary_key=True, max_length=64)
    deployment_id: int = Field(foreign_key="deployment.id")
    version: str | None = Field(default=None, max_length=128)
    requester: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    finished_at: datetime | None = Field(default=None, sa_column=_ts())


class Approval(SQLModel, table=True):
    """One person's decision on a deployment; unique per person, so double clicks count once."""

    __table_args__ = (UniqueConstraint("deployment_id", "user"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(index=True, foreign_key="deployment.id")
    user: str = Field(max_length=64)
    decision: str = Field(max_length=16)  # "approve" or "reject"
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(sa_column=_ts(nullable=False))


class Lock(SQLModel, table=True):
    """Blocks new deployments to an environment (service None: every service)."""

    id: int | None = Field(default=None, primary_key=True)
    env: str = Field(index=True, max_length=64)
    service: str | None = Field(default=None, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=64)
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    expires_at: datetime | None = Field(default=None, sa_column=_ts())
    released_at: datetime | None = Field(default=None, sa_column=_ts())
    released_by: str | None = Field(default=None, max_length=64)


class Freeze(SQLModel, table=True):
    """A one-off freeze window declared from Slack (recurring ones live in the config)."""

    id: int | None = Field(default=None, primary_key=True)
    env: str = Field(index=True, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    created_by: str = Field(max_length=64)
    starts_at: datetime = Field(sa_column=_ts(nullable=False))
    ends_at: datetime = Field(sa_column=_ts(nullable=False))
    lifted_at: datetime | None = Field(default=None, sa_column=_ts())
    lifted_by: str | None = Field(default=None, max_length=64)


class Announcement(SQLModel, table=True):
    """Announcements already made (a window's start or end): unique, so exactly once."""

    key: str = Field(primary_key=True, max_length=255)
    at: datetime = Field(sa_column=_ts(nullable=False))


class AuditEvent(SQLModel, table=True):
    """Append-only record of every decision: who, when, from which state to which."""

    # A service's newest events read backwards from where they end (`/deploy audit`),
    # however long ago the service was last deployed.
    __table_args__ = (Index("ix_auditevent_service_id", "service", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int | None = Field(default=None, index=True, foreign_key="deployment.id")
    service: str = Field(max_length=64)
    env: str = Field(max_length=64)
    actor: str = Field(max_length=64)
    action: str = Field(max_length=32)
    from_state: str | None = Field(default=None, max_length=32)
    to_state: str | None = Field(default=None, max_length=32)
    detail: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    at: datetime = Field(sa_column=_ts(index=True, nullable=False))


class Outbox(SQLModel, table=True):
    """A Slack message to deliver, written in the same transaction as the change it
    reports, so a crash or a Slack outage delays messages but never loses them."""

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int | None = Field(default=None, index=True, foreign_key="deployment.id")
    # Set instead of deployment_id for the alert thread's messages ("alert_root",
    # "alert_suspect": post or re-render; "alert_reply": a reply in its thread).
    alert_thread_id: int | None = Field(default=None, index=True, foreign_key="alertthread.id")
    # "card": re-render the status card; "thread": a reply under it; "approval": post or
    # re-render the approval request; "announce": a standalone message to ``channel``.
    kind: str = Field(max_length=16)
    channel: str | None = Field(default=None, max_length=80)
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    blocks: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    # What the engine recorded (``bot.engine.facts``: its kind and JSON payload), put into
    # words at delivery; rows written before facts (or by the Slack layer) have none and
    # are delivered with their ``text`` and ``blocks``.
    fact: str | None = Field(default=None, max_length=40)
    payload: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts())
    last_error: str | None = Field(default=None, max_length=500)
    # The replica posting it, while its lease runs: the others leave the thread's rows
    # alone, so Slack gets each message once (``bot.slack.outbox_claims``).
    claimed_by: str | None = Field(default=None, max_length=64)
    claim_until: datetime | None = Field(default=None, sa_column=_ts())


class MirrorEvent(SQLModel, table=True):
    """A state change to report to the service's deployments mirror (GitHub Deployments),
    written in the transaction of the change: a GitHub outage delays the statuses but
    never loses one, nor holds up the deployment."""

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int = Field(index=True, foreign_key="deployment.id")
    state: str = Field(max_length=16)  # a MirrorState: queued, in_progress, success...
    description: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts())
    last_error: str | None = Field(default=None, max_length=500)
    # The replica delivering it, while its lease runs: the others leave the deployment's
    # rows alone, so GitHub gets each status once (``mirror_delivery``).
    claimed_by: str | None = Field(default=None, max_length=64)
    claim_until: datetime | None = Field(default=None, sa_column=_ts())


_alert_row_version = Column("row_version", Integer, nullable=False)


class AlertThread(SQLModel, table=True):
    """One Slack thread per firing alert (or Alertmanager group): what fired, the suspect
    deployment, and what people decided. ``open_key`` is set while it fires and unique,
    so a repeated or concurrent notification finds this thread instead of posting again."""

    __mapper_args__ = {"version_id_col": _alert_row_version}
    row_version: int | None = Field(default=None, sa_column=_alert_row_version)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=16)
    open_key: str | None = Field(default=None, unique=True, max_length=255)
    group_key: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    fingerprint: str = Field(max_length=64)
    service: str | None = Field(default=None, index=True, max_length=64)
    env: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)  # "firing" or "resolved"
    name: str = Field(max_length=255)
    severity: str | None = Field(default=None, max_length=64)
    # JSON: summary, description, links and labels of the first alert (for re-rendering).
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    started_at: datetime = Field(sa_column=_ts(nullable=False))
    resolved_at: datetime | None = Field(default=None, sa_column=_ts())
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    updated_at: datetime = Field(sa_column=_ts(nullable=False))
    channel: str | None = Field(default=None, max_length=80)
    root_channel: str | None = Field(default=None, max_length=80)
    root_ts: str | None = Field(default=None, max_length=32)
    suspect_ts: str | None = Field(default=None, max_length=32)
    suspect_deployment_id: int | None = Field(default=None, foreign_key="deployment.id")
    rollback_to: str | None = Field(default=None, max_length=128)
    acknowledged_by: str | None = Field(default=None, max_length=64)
    dismissed_by: str | None = Field(default=None, max_length=64)
    rollback_deployment_id: int | None = Field(default=None, foreign_key="deployment.id")
    auto_rollback: bool = False
    redeploy_deployment_id: int | None = Field(default=None, foreign_key="deployment.id")


class AlertInstance(SQLModel, table=True):
    """One occurrence of one alert (fingerprint + start) inside a thread; ``key`` is unique,
    so Alertmanager's repeats and retries update it instead of adding another."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=255)
    thread_id: int = Field(index=True, foreign_key="alertthread.id")
    fingerprint: str = Field(max_length=64)
    status: str = Field(max_length=16)
    starts_at: datetime = Field(sa_column=_ts(nullable=False))
    ends_at: datetime | None = Field(default=None, sa_column=_ts())


class InboundRequest(SQLModel, table=True):
    """A slash command or click as Slack sent it, written before the ack. ``key`` is unique
    (a command's trigger id, a click's message and action time), so a replay or a retry
    is recorded once and answered with the first reply; rows not done are picked up by
    any replica once their claim lapses, so an acknowledged click survives a crash."""

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=255)
    kind: str = Field(max_length=16)  # "slash", "button", "alert" or "reject"
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False, default="{}"))
    user: str = Field(max_length=64)
    channel: str | None = Field(default=None, max_length=80)
    received_at: datetime = Field(sa_column=_ts(nullable=False))
    claimed_by: str | None = Field(default=None, max_length=64)
    claim_until: datetime | None = Field(default=None, sa_column=_ts())
    attempts: int = 0
    done_at: datetime | None = Field(default=None, sa_column=_ts())
    reply: str | None = Field(default=None, sa_column=Column(Text))
    # Set once the outcome reached the person (in the ack, or as a message after it).
    told_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
