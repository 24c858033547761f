"""Alert-thread messages queued in the caller's transaction, and what a rollback's state
changes mean for the alert that caused it.

Imported by ``machine`` (so it imports only the engine's facts and outbox, which import
nothing else of the engine; and nothing of the Slack layer, which words the facts):
every state change of a deployment started from an alert is reported in the alert
thread and in the suspect deployment's thread, and the time from the alert's start to
the rollback's end is stored on the rollback, in the same transaction as the change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert

from bot.clock import as_utc
from bot.engine import facts
from bot.engine.outbox import fact_row
from bot.store.models import Deployment, Outbox

FAILED_ENDS = ("failed", "cancelled", "rejected", "expired", "rollback_failed")


async def insert_all(session: Any, rows: list[Outbox]) -> None:
    """Several outbox rows in one INSERT (the ORM would send one per row)."""
    await session.exec(insert(Outbox).values([r.model_dump(exclude={"id"}) for r in rows]))


def reply_row(thread_id: int, fact: facts.Fact, *, now: datetime) -> Outbox:
    return fact_row("alert_reply", fact, now=now, alert_thread_id=thread_id)


def note_row(dep_id: int, fact: facts.Fact, *, now: datetime) -> Outbox:
    return fact_row("thread", fact, now=now, deployment_id=dep_id)


def refresh_root(session: Any, thread_id: int, *, now: datetime) -> None:
    """Post (first time) or re-render the alert's root message."""
    session.add(Outbox(alert_thread_id=thread_id, kind="alert_root", created_at=now))


def refresh_suspect(session: Any, thread_id: int, *, now: datetime) -> None:
    """Post (first time) or re-render the suspect reply with its buttons."""
    session.add(Outbox(alert_thread_id=thread_id, kind="alert_suspect", created_at=now))


def reply(session: Any, thread_id: int, fact: facts.Fact, *, now: datetime) -> None:
    """A message in the alert thread."""
    session.add(reply_row(thread_id, fact, now=now))


def deployment_note(session: Any, dep_id: int, fact: facts.Fact, *, now: datetime) -> None:
    """A message in a deployment's thread (the suspect's), without loading that row."""
    session.add(note_row(dep_id, fact, now=now))


def on_transition(session: Any, dep: Deployment, to: str, now: datetime) -> None:
    """Called by ``machine.transition`` for deployments that belong to an alert thread."""
    thread_id = dep.alert_thread_id
    if thread_id is None or dep.kind not in ("rollback", "redeploy"):
        return
    assert dep.id is not None
    rollback = dep.kind == "rollback"
    if to == "awaiting_approval":
        reply(session, thread_id, facts.UndoNeedsApproval(rollback=rollback, id=dep.id,
                                                          channel=dep.channel), now=now)
    elif to == "deploying":
        reply(session, thread_id, facts.UndoDeploying(rollback=rollback, id=dep.id,
                                                      version=dep.version, env=dep.env),
              now=now)
    elif to == "succeeded":
        _succeeded(session, dep, thread_id, now)
    elif to in FAILED_ENDS:
        outcome = facts.UndoIncomplete(rollback=rollback, id=dep.id, state=to,
                                       detail=dep.detail)
        reply(session, thread_id, outcome, now=now)
        if dep.rollback_of is not None:
            deployment_note(session, dep.rollback_of, outcome, now=now)
    else:
        return
    refresh_suspect(session, thread_id, now=now)


def _succeeded(session: Any, dep: Deployment, thread_id: int, now: datetime) -> None:
    assert dep.id is not None
    recovery = None
    if dep.kind == "rollback" and dep.alert_started_at is not None:
        recovery = dep.recovery_seconds = (now - as_utc(dep.alert_started_at)).total_seconds()
    done = facts.UndoDone(rollback=dep.kind == "rollback", id=dep.id, service=dep.service,
                          env=dep.env, version=dep.version,
                          seconds=(now - as_utc(dep.created_at)).total_seconds(),
                          recovery_seconds=recovery)
    reply(session, thread_id, done, now=now)
    if dep.rollback_of is not None:
        deployment_note(session, dep.rollback_of, done, now=now)
