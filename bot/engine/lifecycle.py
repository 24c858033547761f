"""What a person can do to a deployment, and when: every human event declared once.

Each event names the states it starts from, the role it needs and a guard for what the
state alone does not tell (where a rollout stands). ``enabled_events`` is derived from
the table and feeds the card's buttons and its "what you can do" line; ``refusal`` is
what the services check before acting, so a button that is shown works and a command
that is refused says why. The state machine (``machine.TRANSITIONS``) stays the
authority on which state changes are possible at all; this table is the human layer
on top of it. Adding an event: one ``Event`` member, one ``Rule`` here, its button
(``commands.actions``) and its service method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from bot.engine.machine import IN_FLIGHT, State
from bot.engine.plan import Stage
from bot.store.models import Deployment

Role = Literal["deploy", "approve", "lock", "rollback", "hotfix"]
S = State


class Event(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    PROMOTE = "promote"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"


class Blocked(StrEnum):
    """Why an event does not apply now: the services turn it into the sentence."""

    ENDED = "ended"  # the deployment is over
    NOT_NOW = "not_now"  # its state does not allow this event (cancel: the target changes)
    NOT_WAITING = "not_waiting"  # promote: the current step is work, not a wait
    RETIRING = "retiring"  # abort: the old version is being removed right now


Guard = Callable[[Deployment, Stage | None], Blocked | None]

WAITS = ("bake", "gate", "window")  # steps that only wait: Promote may skip them


def waits_in_deploy(dep: Deployment) -> bool:
    """Paused inside the deploy step, before the rollout's stages began: the deploy
    target waits for a human (an Argo ``pause: {}``; ``target_reports``)."""
    return State(dep.state) is S.PAUSED and dep.stage_started_at is None and \
        dep.deploy_run_id is not None


def _waiting(dep: Deployment, stage: Stage | None) -> Blocked | None:
    """Promote only skips a wait; it never skips a traffic change or the checks."""
    if waits_in_deploy(dep):
        return None
    return None if stage is not None and stage.kind in WAITS else Blocked.NOT_WAITING


def _old_version_runs(dep: Deployment, stage: Stage | None) -> Blocked | None:
    """Abort rolls back only while the old version is still there to go back to."""
    retiring = stage is not None and stage.kind == "promote" and dep.action_run_id is not None
    return Blocked.RETIRING if retiring else None


def _not_at_gate(dep: Deployment, stage: Stage | None) -> Blocked | None:
    """At a manual gate Resume and Promote would do the same: only Promote is offered
    (a typed `/deploy resume` there is read as promote, see ``normalise``); so at a
    deploy target's own wait."""
    gate = stage is not None and stage.kind == "gate"
    return Blocked.NOT_NOW if gate or waits_in_deploy(dep) else None


@dataclass(frozen=True)
class Rule:
    sources: frozenset[State]
    role: Role
    guard: Guard | None = None


ROLLOUT = frozenset({S.VERIFYING, S.PAUSED, S.PROMOTING})
LIFECYCLE: dict[Event, Rule] = {
    Event.APPROVE: Rule(frozenset({S.AWAITING_APPROVAL}), "approve"),
    Event.REJECT: Rule(frozenset({S.AWAITING_APPROVAL}), "approve"),
    # Cancel is safe only before the target is touched.
    Event.CANCEL: Rule(frozenset({S.REQUESTED, S.AWAITING_APPROVAL, S.QUEUED, S.BUILDING}),
                       "deploy"),
    Event.PROMOTE: Rule(ROLLOUT, "deploy", _waiting),
    Event.PAUSE: Rule(frozenset({S.VERIFYING}), "deploy"),
    Event.RESUME: Rule(frozenset({S.PAUSED}), "deploy", _not_at_gate),
    Event.ABORT: Rule(ROLLOUT, "rollback", _old_version_runs),
}


def state_refusal(dep: Deployment, event: Event) -> Blocked | None:
    """None when the deployment's state allows ``event``, else why not."""
    state = State(dep.state)
    if state in LIFECYCLE[event].sources:
        return None
    if state not in IN_FLIGHT:
        return Blocked.ENDED
    return Blocked.NOT_NOW


def refusal(dep: Deployment, event: Event, stage: Stage | None = None) -> Blocked | None:
    """None when ``event`` applies to ``dep`` now (state and guard), else why not."""
    blocked = state_refusal(dep, event)
    guard = LIFECYCLE[event].guard
    if blocked is None and guard is not None:
        blocked = guard(dep, stage)
    return blocked


def enabled_events(dep: Deployment, stage: Stage | None = None) -> list[Event]:
    """The events that apply now, in declaration order."""
    return [event for event in LIFECYCLE if refusal(dep, event, stage) is None]


def normalise(event: Event, stage: Stage | None, dep: Deployment | None = None) -> Event:
    """`/deploy resume` at a manual gate (or a target's own wait) means go on: Promote."""
    gate = stage is not None and stage.kind == "gate"
    if event is Event.RESUME and (gate or (dep is not None and waits_in_deploy(dep))):
        return Event.PROMOTE
    return event
