"""The deployment state machine: the only code that changes ``Deployment.state``.

Each transition is checked against ``TRANSITIONS`` and recorded as an audit event
in the caller's transaction, together with a status-card refresh in the outbox.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from enum import StrEnum

from sqlalchemy import case, literal
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import as_utc
from bot.engine import alert_outbox, mirror_outbox
from bot.engine.urgency import stand_aside
from bot.store.db import redactor_of
from bot.store.models import AuditEvent, Deployment, Outbox, SlotVersion
from bot.store.writers import WriterQueue


class State(StrEnum):
    REQUESTED = "requested"
    AWAITING_APPROVAL = "awaiting_approval"
    QUEUED = "queued"
    BUILDING = "building"
    DEPLOYING = "deploying"
    VERIFYING = "verifying"
    PROMOTING = "promoting"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    FAILED = "failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


S = State
TRANSITIONS: dict[State, frozenset[State]] = {
    S.REQUESTED: frozenset({S.AWAITING_APPROVAL, S.QUEUED, S.REJECTED, S.CANCELLED, S.FAILED}),
    S.AWAITING_APPROVAL: frozenset({S.QUEUED, S.REJECTED, S.EXPIRED, S.CANCELLED}),
    S.QUEUED: frozenset({S.BUILDING, S.DEPLOYING, S.CANCELLED, S.FAILED}),
    S.BUILDING: frozenset({S.DEPLOYING, S.CANCELLED, S.FAILED}),
    S.DEPLOYING: frozenset({S.VERIFYING, S.SUCCEEDED, S.FAILED, S.PAUSED, S.ROLLING_BACK}),
    S.VERIFYING: frozenset({S.VERIFYING, S.PROMOTING, S.SUCCEEDED, S.PAUSED, S.ROLLING_BACK,
                            S.FAILED}),  # SUCCEEDED: a rolling deploy's checks passed
    S.PAUSED: frozenset({S.VERIFYING, S.PROMOTING, S.ROLLING_BACK, S.CANCELLED,
                         S.DEPLOYING}),  # DEPLOYING: promoted at a target's own wait
    S.PROMOTING: frozenset({S.PROMOTING, S.SUCCEEDED, S.FAILED, S.ROLLING_BACK}),
    S.ROLLING_BACK: frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED}),
    S.SUCCEEDED: frozenset(),
    S.REJECTED: frozenset(),
    S.EXPIRED: frozenset(),
    S.CANCELLED: frozenset(),
    S.FAILED: frozenset(),
    S.ROLLED_BACK: frozenset(),
    S.ROLLBACK_FAILED: frozenset(),
}
TERMINAL: frozenset[State] = frozenset(s for s, nxt in TRANSITIONS.items() if not nxt)
IN_FLIGHT: frozenset[State] = frozenset(State) - TERMINAL
STATE_TEXT: dict[State, str] = {
    s: s.value.replace("_", " ").capitalize() for s in State
}
# States in which something is actually changing on the target.
CHANGING: frozenset[State] = frozenset(
    {S.BUILDING, S.DEPLOYING, S.VERIFYING, S.PROMOTING, S.ROLLING_BACK}
)


class InvalidTransition(Exception):
    """A bug or a race: the deployment is not in a state that allows this change."""


def slot(service: str, env: str) -> str:
    return f"{service}/{env}"


async def create(
    session: AsyncSession, deployment: Deployment, *, actor: str, now: datetime,
    detail: str = "", action: str = "requested",
) -> Deployment:
    """Add a freshly requested deployment, its first audit event and its status card."""
    deployment.state = S.REQUESTED
    deployment.active_slot = slot(deployment.service, deployment.env)
    deployment.created_at = deployment.updated_at = now
    deployment.next_action_at = now
    session.add(deployment)
    await session.flush()
    assert deployment.id is not None
    _audit(session, deployment, actor, action, None, S.REQUESTED, detail, now)
    session.add(Outbox(deployment_id=deployment.id, kind="card", created_at=now))
    return deployment


def transition(
    session: AsyncSession,
    deployment: Deployment,
    to: State,
    *,
    actor: str,
    now: datetime,
    detail: str = "",
    action: str = "transition",
) -> None:
    """Move ``deployment`` to ``to`` or raise ``InvalidTransition``; audit it.
    SUCCEEDED is refused here: ``succeed`` also records what the slot runs now."""
    current = _allowed(deployment, to)
    if to is S.SUCCEEDED:
        raise InvalidTransition(f"deployment {deployment.id}: use machine.succeed")
    _move(session, deployment, current, to, actor=actor, now=now, detail=detail, action=action)


async def succeed(session: AsyncSession, deployment: Deployment, *, actor: str,
                  now: datetime, detail: str = "") -> None:
    """The one way to SUCCEEDED: in the same transaction, the slot's ``SlotVersion`` row
    names this deployment and copies what `/deploy status` shows of it (a succeeded
    deployment never changes again).

    The row is read here and written at the commit, like every step's writes (on SQLite
    they wait in the writer queue, never in the database). One slot runs one deployment at
    a time, so two successes of a slot never race; should they, the UPDATE keeps the
    higher id (PostgreSQL re-evaluates it on the row a concurrent commit left) and a
    second first INSERT fails the step, which is retried and then updates."""
    current = _allowed(deployment, S.SUCCEEDED)
    _move(session, deployment, current, S.SUCCEEDED, actor=actor, now=now, detail=detail,
          action="transition")
    await record_current(session, deployment)


async def record_current(session: AsyncSession, deployment: Deployment) -> None:
    """Make the slot's ``SlotVersion`` row name ``deployment``, a success, unless a newer
    one is there by the time the UPDATE runs (see ``succeed``)."""
    assert deployment.id is not None
    runs = SlotVersion(service=deployment.service, env=deployment.env,
                       deployment_id=deployment.id, version=deployment.version,
                       requester=deployment.requester, created_at=deployment.created_at,
                       finished_at=deployment.finished_at)
    with session.no_autoflush:  # a read: this transaction's writes wait for its commit
        row = await session.get(SlotVersion, (deployment.service, deployment.env))
    if row is None:
        session.add(runs)
        return
    newer = col(SlotVersion.deployment_id) < deployment.id  # as the row stands at the UPDATE
    for name in ("deployment_id", "version", "requester", "created_at", "finished_at"):
        column = SlotVersion.__table__.c[name]  # type: ignore[attr-defined]
        setattr(row, name, case((newer, literal(getattr(runs, name), column.type)),
                                else_=column))
    session.add(row)


def _allowed(deployment: Deployment, to: State) -> State:
    """The deployment's state, if the lifecycle allows ``to`` from it."""
    current = State(deployment.state)
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"deployment {deployment.id}: {current} -> {to} is not allowed")
    return current


def _move(session: AsyncSession, deployment: Deployment, current: State, to: State, *,
          actor: str, now: datetime, detail: str, action: str) -> None:
    deployment.state = to
    deployment.updated_at = now
    deployment.step_attempts = 0
    if detail:
        deployment.detail = detail
    if to in TERMINAL:
        deployment.active_slot = None
        deployment.finished_at = now
        deployment.next_action_at = None
        deployment.step_deadline_at = None
    assert deployment.id is not None
    session.add(deployment)
    _audit(session, deployment, actor, action, current, to, detail, now)
    session.add(Outbox(deployment_id=deployment.id, kind="card", created_at=now))
    if deployment.alert_thread_id is not None:  # a rollback: report in the alert thread too
        alert_outbox.on_transition(session, deployment, to.value, now)
    mirror_outbox.on_transition(session, deployment, current.value, to.value, now)


def record(
    session: AsyncSession, *, service: str, env: str, actor: str, action: str, now: datetime,
    detail: str = "", deployment_id: int | None = None,
) -> None:
    """An audit event that is not a state change (an approval, a lock, a freeze).
    ``detail`` is mrkdwn-safe text: anything a user typed in it is already escaped."""
    session.add(AuditEvent(deployment_id=deployment_id, service=service, env=env, actor=actor,
                           action=action, detail=_audit_detail(session, detail), at=now))


def _audit(
    session: AsyncSession,
    dep: Deployment,
    actor: str,
    action: str,
    from_state: State | None,
    to_state: State | None,
    detail: str,
    now: datetime,
) -> None:
    session.add(AuditEvent(
        deployment_id=dep.id,
        service=dep.service,
        env=dep.env,
        actor=actor,
        action=action,
        from_state=from_state,
        to_state=to_state,
        detail=_audit_detail(session, detail),
        at=now,
    ))


def _audit_detail(session: AsyncSession, detail: str) -> str:
    """Redacted before it is stored: the trail is exported and kept for years, and a
    detail can quote a build's output or a reason someone pasted a token into."""
    return redactor_of(session).text(detail)[:2000]


class StepInProgress(Exception):
    """The runner holds the deployment's lease: it may be starting external work now."""


def step_in_progress(dep: Deployment, now: datetime) -> bool:
    return dep.lease_owner is not None and dep.lease_until is not None and \
        as_utc(dep.lease_until) > now


CONFLICTS = (StaleDataError, IntegrityError, OperationalError, StepInProgress)


async def retry_on_conflict(attempt: Callable[[], Awaitable[str]], *, give_up: str,
                            tries: int = 5, writers: WriterQueue | None = None) -> str:
    """Run a human's decision again when another writer changed the row first.

    The runner bumps a deployment's row version at every poll, so a click racing a poll
    must look again (and decide again on fresh state), not fail with a stale-row error.
    Each ``attempt`` opens its own session and returns the sentence for the user; waits
    grow from 50 ms and stay well inside Slack's 3 s for an ack. With ``writers`` each
    attempt holds SQLite's writer queue and a conflict is retried at once: the writers it
    raced have finished by then (the alert-rollback click path, which must not sleep).
    """
    for i in range(tries):
        try:
            if writers is None:
                return await attempt()
            async with writers():
                return await attempt()
        except CONFLICTS:
            if writers is None:  # the runner's step may need background turns to end
                await stand_aside(0.05 * 2 ** i)
    return give_up
