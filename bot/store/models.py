"""Tables. The database is the source of truth: every decision and every message
to send is a row, so a restart continues where the last process stopped."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, DateTime, Integer, Text
from sqlmodel import Field, SQLModel


def _ts(index: bool = False, nullable: bool = True) -> Column:  # type: ignore[type-arg]
    return Column(DateTime(timezone=True), index=index, nullable=nullable)


# Optimistic locking: an UPDATE of a row someone else changed meanwhile raises
# StaleDataError instead of silently overwriting (a cancel racing the runner).
_row_version = Column("row_version", Integer, nullable=False)


class Deployment(SQLModel, table=True):
    """One request to put a version of a service on an environment."""

    __mapper_args__ = {"version_id_col": _row_version}
    row_version: int | None = Field(default=None, sa_column=_row_version)

    id: int | None = Field(default=None, primary_key=True)
    request_key: str = Field(unique=True, max_length=255)
    service: str = Field(index=True, max_length=64)
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
    ci_run_id: str | None = Field(default=None, max_length=255)
    ci_url: str | None = Field(default=None, max_length=1000)
    deploy_run_id: str | None = Field(default=None, max_length=255)
    channel: str = Field(max_length=80)
    card_channel: str | None = Field(default=None, max_length=80)
    card_ts: str | None = Field(default=None, max_length=32)


class AuditEvent(SQLModel, table=True):
    """Append-only record of every decision: who, when, from which state to which."""

    id: int | None = Field(default=None, primary_key=True)
    deployment_id: int | None = Field(default=None, index=True, foreign_key="deployment.id")
    service: str = Field(index=True, max_length=64)
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
    deployment_id: int = Field(index=True, foreign_key="deployment.id")
    kind: str = Field(max_length=16)  # "card" (re-render the status card) or "thread"
    text: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    blocks: str = Field(default="[]", sa_column=Column(Text, nullable=False, default="[]"))
    created_at: datetime = Field(sa_column=_ts(nullable=False))
    delivered_at: datetime | None = Field(default=None, sa_column=_ts(index=True))
    attempts: int = 0
    next_attempt_at: datetime | None = Field(default=None, sa_column=_ts())
    last_error: str | None = Field(default=None, max_length=500)
