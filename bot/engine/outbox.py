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
