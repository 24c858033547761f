"""Freeze windows: recurring ones from the config (cron + duration, in a time zone)
and one-off ones declared from Slack, reduced to concrete intervals in UTC."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.clock import as_utc
from bot.config_policy import FreezeWindowConfig
from bot.mrkdwn import escape
from bot.store.models import Freeze


@dataclass(frozen=True)
class Window:
    key: str  # stable per occurrence: used to announce each start and end exactly once
    name: str
    environments: frozenset[str]
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str | None = None

    def describe(self) -> str:
        who = f" by <@{self.created_by}>" if self.created_by else ""
        return (f"{escape(self.name)}{who}: {escape(self.reason)} "
                f"(until {self.ends_at:%Y-%m-%d %H:%M} UTC)")


def occurrence(window: FreezeWindowConfig, at: datetime) -> Window | None:
    """The occurrence of a recurring window that contains ``at``, if any."""
    trigger = window.trigger()
    start = trigger.get_next_fire_time(None, at - window.duration)
    if start is None or start > at:
        return None
    start = start.astimezone(UTC)
    return Window(
        key=f"window:{window.name}:{start:%Y%m%dT%H%MZ}", name=window.name,
        environments=frozenset(window.environments), starts_at=start,
        ends_at=start + window.duration, reason=window.reason,
    )


def from_freeze(row: Freeze) -> Window:
    return Window(
        key=f"freeze:{row.id}", name=f"Freeze #{row.id}", environments=frozenset({row.env}),
        starts_at=as_utc(row.starts_at),
        ends_at=as_utc(row.lifted_at) if row.lifted_at else as_utc(row.ends_at),
        reason=row.reason, created_by=row.created_by,
    )


def active(
    configured: Sequence[FreezeWindowConfig], oneoff: Iterable[Freeze], at: datetime,
    env: str | None = None,
) -> list[Window]:
    """Windows in force at ``at`` (for ``env``, or for any environment)."""
    found = [w for w in (occurrence(c, at) for c in configured) if w is not None]
    found += [from_freeze(f) for f in oneoff]
    return [w for w in found
            if w.starts_at <= at < w.ends_at and (env is None or env in w.environments)]


def recently_ended(
    configured: Sequence[FreezeWindowConfig], oneoff: Iterable[Freeze], at: datetime,
    lookback: timedelta,
) -> list[Window]:
    """Occurrences that ended within ``lookback`` before ``at`` (to announce their end)."""
    ended = [w for w in (occurrence(c, at - lookback) for c in configured) if w is not None]
    ended += [from_freeze(f) for f in oneoff]
    return [w for w in ended if at - lookback <= w.ends_at <= at]
