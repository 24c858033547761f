"""Every button the bot renders: one ``ActionId`` each, and what its click means.

A click parses, with its value, into the same typed request the text grammar produces
(``Cancel``, ``Control``, …), so one dispatcher serves both. The Slack layer renders
buttons with these ids and registers one listener per family from ``ACTIONS``; an id
that is not here is refused ("not valid any more"), never guessed. Adding a button:
its lifecycle event, one ``Action`` here, and the service method it calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from bot.engine.requests import AlertDecision, Approve, Cancel, Command, Control, UsageError

STALE = "That button is not valid any more. Use `/deploy status` instead."


class ActionId(StrEnum):
    CANCEL = "deploy_cancel"
    APPROVE = "deploy_approve"
    REJECT = "deploy_reject"  # opens the reason form first (see bot.slack.app)
    PROMOTE = "deploy_promote"
    PAUSE = "deploy_pause"
    RESUME = "deploy_resume"
    ABORT = "deploy_abort"
    ALERT_ROLLBACK = "alert_rollback"
    ALERT_DISMISS = "alert_not_the_deploy"
    ALERT_ACK = "alert_acknowledge"
    ALERT_REDEPLOY = "alert_redeploy"


@dataclass(frozen=True)
class Action:
    """``family`` and ``name`` are what the inbox records for a click (kept stable:
    rows written by an older process are still completed by a newer one)."""

    id: ActionId
    family: str
    name: str
    intent: Callable[[int], Command]


def _control(name: str) -> Callable[[int], Command]:
    return lambda ref: Control(action=name, deployment_id=ref)  # type: ignore[arg-type]


def _alert(decision: str) -> Callable[[int], Command]:
    return lambda ref: AlertDecision(thread_id=ref, decision=decision)  # type: ignore[arg-type]


ACTIONS: dict[ActionId, Action] = {a.id: a for a in (
    Action(ActionId.CANCEL, "button", "cancel", lambda ref: Cancel(deployment_id=ref)),
    Action(ActionId.APPROVE, "button", "approve", lambda ref: Approve(deployment_id=ref)),
    *(Action(ActionId(f"deploy_{name}"), "button", name, _control(name))
      for name in ("promote", "pause", "resume", "abort")),
    Action(ActionId.ALERT_ROLLBACK, "alert", "rollback", _alert("rollback")),
    Action(ActionId.ALERT_DISMISS, "alert", "dismiss", _alert("dismiss")),
    Action(ActionId.ALERT_ACK, "alert", "acknowledge", _alert("acknowledge")),
    Action(ActionId.ALERT_REDEPLOY, "alert", "redeploy", _alert("redeploy")),
)}
_BY_NAME = {(a.family, a.name): a for a in ACTIONS.values()}


class UnknownAction(UsageError):
    """A click on a button this bot does not render (any more): a bug, or a forgery."""


def intent(family: str, name: str, value: str) -> Command:
    """A recorded click as a typed request; ``UsageError`` for a value that does not name
    a deployment (or alert thread), ``UnknownAction`` for a button we do not know."""
    action = _BY_NAME.get((family, name))
    if action is None:
        raise UnknownAction(STALE)
    return action.intent(parse_ref(value))


def parse_ref(value: str) -> int:
    """A button's value names a deployment by id; anything else was tampered with. Only
    ASCII digits count: ``str.isdigit`` also takes '²' (which ``int`` refuses) and '٣'."""
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise UsageError(STALE)
    return int(value)
