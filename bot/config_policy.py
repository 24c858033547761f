"""Config for production guardrails: approvals, roles, freeze windows.

Principals name people: a Slack user ID (``U0123ABCD``), a user group handle
(``@sre-leads``, resolved through Slack) or ``*`` for everyone in the workspace.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from bot.values import UsageError, parse_duration

PRINCIPAL_RE = re.compile(r"^(\*|[UW][A-Z0-9]{2,20}|@[a-z0-9][a-z0-9._-]{0,79})$")
EVERYONE = "*"


def _duration(value: Any) -> Any:
    """Our short forms (30m, 2h); ISO 8601 (PT30M, from a JSON dump) passes through."""
    if isinstance(value, str) and not value.startswith("P"):
        try:
            return parse_duration(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


def _principals(values: list[str]) -> list[str]:
    for v in values:
        if not PRINCIPAL_RE.match(v):
            raise ValueError(
                f"'{v}' is not a principal: use a user ID (U0123ABCD), a user group "
                "handle (@sre-leads) or * for everyone")
    return values


Principals = Annotated[list[str], Field(description="User IDs, @group handles or *")]


class Roles(BaseModel):
    """Who may do what in one environment; unset roles take the documented defaults."""

    model_config = ConfigDict(extra="forbid")
    deploy: Principals | None = None
    approve: Principals | None = None
    lock: Principals | None = None
    rollback: Principals | None = None
    hotfix: Principals | None = None

    _check = field_validator("*")(classmethod(lambda cls, v: v if v is None else _principals(v)))


class ApprovalConfig(BaseModel):
    """GitHub-Environments-style required reviewers, in Slack."""

    model_config = ConfigDict(extra="forbid")
    approvers: Principals = Field(min_length=1)
    required_approvals: int = Field(default=1, ge=1, le=10)
    allow_self_approval: bool = False
    expires_after: Duration = timedelta(minutes=30)
    channel: str | None = Field(default=None, description="Also post requests here")
    hotfix_approvals: int = Field(default=1, ge=0, le=10)
    rollbacks: bool = Field(default=False, description="Rollbacks need approval too "
                            "(default: no, restoring a version that ran here is urgent)")

    _check = field_validator("approvers")(classmethod(lambda cls, v: _principals(v)))


class FreezeWindowConfig(BaseModel):
    """A recurring freeze: starts on a cron schedule and lasts ``duration``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=80)
    environments: list[str] = Field(min_length=1)
    cron: str = Field(description="Five fields, e.g. '0 18 * * fri' for Friday 18:00")
    duration: Duration
    timezone: str = "UTC"
    reason: str = Field(min_length=1, max_length=300)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}' (use names like Europe/Berlin)") from None
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        try:
            CronTrigger.from_crontab(v)
        except ValueError as exc:
            raise ValueError(f"not a cron expression ({exc}); e.g. '0 18 * * fri'") from None
        return v

    def trigger(self) -> CronTrigger:
        return CronTrigger.from_crontab(self.cron, timezone=ZoneInfo(self.timezone))
