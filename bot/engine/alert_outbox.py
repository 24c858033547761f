"""Alert-thread messages queued in the caller's transaction, and what a rollback's state
changes mean for the alert that caused it.

Imported by ``machine`` (so it imports nothing from the engine or the Slack layer):
every state change of a deployment started from an alert is reported in the alert
thread and in the suspect deployment's thread, and the time from the alert's start to
the rollback's end is stored on the rollback, in the same transaction as the change.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from bot.clock import as_utc, human_duration
from bot.mrkdwn import channel_mention
from bot.store.models import Deployment, Outbox

FAILED_ENDS = ("failed", "cancelled", "rejected", "expired", "rollback_failed")


def _blocks(text: str) -> str:
    clipped = text if len(text) <= 3000 else text[:2999] + "…"
    return json.dumps([{"type": "section", "text": {"type": "mrkdwn", "text": clipped}}])


async def insert_all(session: Any, rows: list[Outbox]) -> None:
    """Several outbox rows in one INSERT (the ORM would send one per row)."""
    await session.exec(insert(Outbox).values([r.model_dump(exclude={"id"}) for r in rows]))


def reply_row(thread_id: int, text: str, *, now: datetime) -> Outbox:
    return Outbox(alert_thread_id=thread_id, kind="alert_reply", text=text,
                  blocks=_blocks(text), created_at=now)


def note_row(dep_id: int, text: str, *, now: datetime) -> Outbox:
    return Outbox(deployment_id=dep_id, kind="thread", text=text, blocks=_blocks(text),
                  created_at=now)


def refresh_root(session: Any, thread_id: int, *, now: datetime) -> None:
    """Post (first time) or re-render the alert's root message."""
    session.add(Outbox(alert_thread_id=thread_id, kind="alert_root", created_at=now))


def refresh_suspect(session: Any, thread_id: int, *, now: datetime) -> None:
    """Post (first time) or re-render the suspect reply with its buttons."""
    session.add(Outbox(alert_thread_id=thread_id, kind="alert_suspect", created_at=now))


def reply(session: Any, thread_id: int, text: str, *, now: datetime) -> None:
    """A sentence in the alert thread; ``text`` is mrkdwn-safe (untrusted parts escaped)."""
    session.add(reply_row(thread_id, text, now=now))


def deployment_note(session: Any, dep_id: int, text: str, *, now: datetime) -> None:
    """A sentence in a deployment's thread (the suspect's), without loading that row."""
    session.add(note_row(dep_id, text, now=now))


def on_transition(session: Any, dep: Deployment, to: str, now: datetime) -> None:
    """Called by ``machine.transition`` for deployments that belong to an alert thread."""
    thread_id = dep.alert_thread_id
    if thread_id is None or dep.kind not in ("rollback", "redeploy"):
        return
    what = "Rollback" if dep.kind == "rollback" else "Redeploy"
    ref = f"{what} #{dep.id}"
    if to == "awaiting_approval":
        reply(session, thread_id, f":raised_hand: {ref} needs approval first: the request is "
              f"in its thread in {channel_mention(dep.channel)}.", now=now)
    elif to == "deploying":
        reply(session, thread_id, f":rewind: {ref}: putting `{dep.version}` on {dep.env} "
              "now.", now=now)
    elif to == "succeeded":
        _succeeded(session, dep, thread_id, ref, now)
    elif to in FAILED_ENDS:
        outcome = f":x: *{ref} did not complete ({to.replace('_', ' ')})*: {dep.detail}"
        reply(session, thread_id, outcome, now=now)
        if dep.rollback_of is not None:
            deployment_note(session, dep.rollback_of, outcome, now=now)
    else:
        return
    refresh_suspect(session, thread_id, now=now)


def _succeeded(session: Any, dep: Deployment, thread_id: int, ref: str, now: datetime) -> None:
    took = human_duration((now - as_utc(dep.created_at)).total_seconds())
    text = f":white_check_mark: *{ref} done*: {dep.service} {dep.env} runs `{dep.version}` " \
           f"again (took {took})."
    if dep.kind == "rollback" and dep.alert_started_at is not None:
        dep.recovery_seconds = (now - as_utc(dep.alert_started_at)).total_seconds()
        text += (f" {human_duration(dep.recovery_seconds)} from the alert's start to the end "
                 "of the rollback.")
    reply(session, thread_id, text, now=now)
    if dep.rollback_of is not None:
        deployment_note(session, dep.rollback_of, text, now=now)
