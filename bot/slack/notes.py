"""The engine's facts into Slack words and Block Kit, at delivery.

The engine records what happened (``bot.engine.facts``) in the outbox; the notifier calls
``words_of`` for each row it posts. One renderer per fact kind lives in ``notes_deploy``
(request, approvals, build, deploy), ``notes_rollout`` (traffic, checks, verdicts,
pauses, rollbacks) and ``notes_alerts`` (announcements, alert threads); every command
hint a message gives is spelled there.

Rows written before facts existed (a rolling upgrade) carry their words already and are
posted as written; a fact this process does not know (a newer one wrote it) is posted
from the row's stored text if it has one, and otherwise raises ``UnknownFact`` (so does a
renderer that fails): the notifier retries such a row with backoff, then gives up on it.
"""

from __future__ import annotations

import json
import logging

from bot.engine.facts import Fact, load
from bot.slack import notes_alerts, notes_deploy, notes_rollout
from bot.slack.blocks import Blocks, thread_note
from bot.slack.words import RENDERERS, Note
from bot.store.models import Outbox

log = logging.getLogger(__name__)
MODULES = (notes_deploy, notes_rollout, notes_alerts)  # importing them fills RENDERERS


class UnknownFact(Exception):
    """A row records a fact this process cannot put into words (and no text to fall back
    on): left for a process that knows it, as a failed delivery attempt."""


def note_of(fact: Fact) -> Note:
    return RENDERERS[type(fact)](fact)


def render(fact: Fact) -> tuple[str, Blocks]:
    """The message text (notifications, screen readers) and its blocks."""
    note = note_of(fact)
    return note.text, thread_note(note.text, detail=note.output or None, link=note.link)


def words_of(row: Outbox) -> tuple[str, Blocks]:
    """What to post for an outbox row: its fact in words, or the words it was stored with."""
    if row.fact:
        fact = load(row.fact, row.payload)
        problem = f"unknown fact kind {row.fact!r}"
        if fact is not None and type(fact) in RENDERERS:
            try:
                return render(fact)
            except Exception:  # a bug in one renderer must not stop the thread for good
                log.exception("outbox row %s: the words for %r failed", row.id, row.fact)
                problem = f"no words for fact kind {row.fact!r}"
        if not row.text:
            raise UnknownFact(f"{problem} in outbox row {row.id}")
        log.warning("outbox row %s: %s, posting its stored text", row.id, problem)
    blocks = json.loads(row.blocks or "[]")
    return row.text, blocks or thread_note(row.text)
