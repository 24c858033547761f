"""Facts for announcements (locks, freeze windows) and alert threads."""

from __future__ import annotations

from datetime import datetime

from bot.engine.facts.base import Fact, Untrusted


class Locked(Fact):
    kind = "locked"
    by: str
    env: str
    service: str | None = None
    until: datetime | None = None
    reason: Untrusted


class Unlocked(Fact):
    kind = "unlocked"
    by: str
    env: str
    service: str | None = None


class FreezeStarted(Fact):
    kind = "freeze_started"
    environments: tuple[str, ...]
    name: Untrusted
    by: str | None = None
    reason: Untrusted
    until: datetime


class FreezeEnded(Fact):
    kind = "freeze_ended"
    environments: tuple[str, ...]
    name: Untrusted


# --- alert threads (and the deployments they concern) ------------------------------

class _Undo(Fact):
    """A rollback (or a redeploy undoing one) started from an alert."""

    rollback: bool  # False: a redeploy
    id: int


class UndoNeedsApproval(_Undo):
    kind = "undo_needs_approval"
    channel: str


class UndoDeploying(_Undo):
    kind = "undo_deploying"
    version: str | None
    env: str


class UndoIncomplete(_Undo):
    kind = "undo_incomplete"
    MRKDWN = frozenset({"detail"})
    state: str
    detail: str | None


class UndoDone(_Undo):
    kind = "undo_done"
    service: str
    env: str
    version: str | None
    seconds: float
    recovery_seconds: float | None = None  # a rollback: from the alert's start


class AutoRollbackStarted(Fact):
    kind = "auto_rollback_started"
    alert: Untrusted
    after_seconds: float
    suspect_version: str | None
    suspect_id: int
    service: str
    version: str | None
    rollback_id: int


class RollbackStarted(Fact):
    kind = "rollback_started"
    by: str
    rollback_id: int
    env: str
    suspect_version: str | None
    suspect_id: int
    version: str | None


class RollingBackForAlert(Fact):
    """In the suspect deployment's thread."""

    kind = "rolling_back_for_alert"
    version: str | None
    rollback_id: int
    alert: Untrusted
    link: str | None = None


class StartedFromAlert(Fact):
    """In the rollback's own thread."""

    kind = "started_from_alert"
    alert: Untrusted
    link: str | None = None


class Redeploying(Fact):
    kind = "redeploying"
    by: str
    version: str | None
    id: int


class AlertResolved(Fact):
    kind = "alert_resolved"
    seconds: float
    at: datetime


class AlertDismissed(Fact):
    kind = "alert_dismissed"
    by: str
