"""Queue a deployment's state change for its mirror (GitHub Deployments), in the caller's
transaction: ``machine.transition`` calls ``on_transition`` for every change, and a row is
written only for a mirrored service (the session says which) and only when the mirror's
state changes (building → deploying is in progress either way). ``mirror_delivery``
delivers the rows in the background."""

from __future__ import annotations

from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.store.db import mirrored_of, redactor_of
from bot.store.models import Deployment, MirrorEvent
from integrations.base import MirrorState

M = MirrorState
# Shipbot's states (by value: machine imports this module) as the mirror's. Requested and
# awaiting approval are nothing there yet; a request rejected or expired never was.
MIRROR_STATES: dict[str, MirrorState] = {
    "queued": M.QUEUED,
    "building": M.IN_PROGRESS, "deploying": M.IN_PROGRESS, "verifying": M.IN_PROGRESS,
    "promoting": M.IN_PROGRESS, "paused": M.IN_PROGRESS, "rolling_back": M.IN_PROGRESS,
    "succeeded": M.SUCCESS,
    "failed": M.FAILURE, "rolled_back": M.FAILURE,
    "rollback_failed": M.ERROR,
    "cancelled": M.INACTIVE,
}
_WORDS = {"rolled_back": "rolled back", "rollback_failed": "the rollback failed",
          "cancelled": "cancelled", "paused": "paused", "rolling_back": "rolling back"}


def on_transition(session: AsyncSession, dep: Deployment, before: str | None, to: str,
                  now: datetime) -> None:
    state, was = MIRROR_STATES.get(to), MIRROR_STATES.get(before or "")
    if state is None or dep.service not in mirrored_of(session):
        return
    if was is None and state is not M.QUEUED:
        return  # ended before it was queued (rejected, expired, cancelled): never mirrored
    if was is state and to not in _WORDS and before not in _WORDS:
        return  # the same on GitHub (building, then deploying: in progress either way)
    assert dep.id is not None
    words = _WORDS.get(to, to.replace("_", " "))
    text = f"Shipbot #{dep.id}: {words}"
    if state in (M.FAILURE, M.ERROR) and dep.detail:
        text += f": {dep.detail}"
    session.add(MirrorEvent(deployment_id=dep.id, state=state.value,
                            description=redactor_of(session).text(text)[:500],
                            created_at=now))
