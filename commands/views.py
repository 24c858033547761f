"""What a reading command found, as data: the Slack layer turns it into words.

Handlers answer `/deploy status`, `history` and `audit` with one of these views instead
of text, so the wording and layout live in ``bot.slack`` with every other message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.engine import windows
from bot.engine.deploys import SlotStatus
from bot.store.models import AuditEvent, Deployment, Lock


@dataclass(frozen=True)
class StatusView:
    slots: Sequence[SlotStatus]
    locks: Sequence[Lock]
    freezes: Sequence[windows.Window]
    now: datetime


@dataclass(frozen=True)
class HistoryView:
    service: str
    env: str | None
    deployments: Sequence[Deployment]
    now: datetime


@dataclass(frozen=True)
class AuditView:
    service: str
    env: str | None
    events: Sequence[AuditEvent]


View = StatusView | HistoryView | AuditView


@dataclass(frozen=True)
class Reply:
    """What the bot answers the person who asked (ephemeral unless ``public``): a
    sentence, or a ``view`` the edge renders."""

    text: str = ""
    public: bool = False
    view: View | None = None
