"""Queue a thread message in the caller's transaction (delivered by the notifier)."""

from __future__ import annotations

import json
from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.slack.blocks import thread_note
from bot.store.models import Deployment, Outbox


def note(
    session: AsyncSession,
    dep: Deployment,
    text: str,
    *,
    now: datetime,
    detail: str | None = None,
    link: str | None = None,
) -> None:
    assert dep.id is not None
    blocks = thread_note(text, detail=detail, link=link)
    session.add(
        Outbox(deployment_id=dep.id, kind="thread", text=text, blocks=json.dumps(blocks),
               created_at=now)
    )


def announce(session: AsyncSession, channel: str | None, text: str, *, now: datetime) -> None:
    """A standalone message (locks, freeze windows) to the team's announce channel."""
    if channel:
        session.add(Outbox(kind="announce", channel=channel, text=text,
                           blocks=json.dumps(thread_note(text)), created_at=now))


def refresh_approval(session: AsyncSession, dep: Deployment, *, now: datetime) -> None:
    """Post (first time) or re-render the approval request of ``dep``."""
    assert dep.id is not None
    session.add(Outbox(deployment_id=dep.id, kind="approval", created_at=now))
