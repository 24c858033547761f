"""Queue a message in the caller's transaction (delivered by the notifier).

The engine records what happened as a fact (``bot.engine.facts``); the notifier turns it
into words when it delivers the row (``bot.slack.notes``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.facts import Fact
from bot.store.models import Deployment, Outbox


def fact_row(kind: str, fact: Fact, *, now: datetime, **where: Any) -> Outbox:
    """An outbox row of ``kind`` ("thread", "announce", "alert_reply") recording ``fact``;
    ``where`` says where it goes (deployment_id, alert_thread_id or channel)."""
    return Outbox(kind=kind, fact=fact.kind, payload=fact.payload(), created_at=now, **where)


def note(session: AsyncSession, dep: Deployment, fact: Fact, *, now: datetime) -> None:
    """A message in the deployment's thread."""
    assert dep.id is not None
    session.add(fact_row("thread", fact, now=now, deployment_id=dep.id))


def announce(session: AsyncSession, channel: str | None, fact: Fact, *, now: datetime) -> None:
    """A standalone message (locks, freeze windows) to the team's announce channel."""
    if channel:
        session.add(fact_row("announce", fact, now=now, channel=channel))


def refresh_approval(session: AsyncSession, dep: Deployment, *, now: datetime) -> None:
    """Post (first time) or re-render the approval request of ``dep``."""
    assert dep.id is not None
    session.add(Outbox(deployment_id=dep.id, kind="approval", created_at=now))
