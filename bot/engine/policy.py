"""Who may do what, and when: every allow/deny decision lives here.

For now: one deployment at a time per service and environment, and cancel only
before the target is touched. Roles, locks and freeze windows join this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import as_utc, human_duration
from bot.engine.machine import CANCELLABLE, IN_FLIGHT, STATE_TEXT, State
from bot.store.models import Deployment


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOW = Decision(True)


async def in_flight(session: AsyncSession, service: str, env: str) -> Deployment | None:
    stmt = select(Deployment).where(
        Deployment.service == service, Deployment.env == env,
        col(Deployment.state).in_([s.value for s in IN_FLIGHT]),
    )
    return (await session.exec(stmt)).first()


def busy_reason(dep: Deployment, now: datetime) -> str:
    since = as_utc(dep.created_at)
    ago = human_duration((now - since).total_seconds())
    label = STATE_TEXT[State(dep.state)].lower()
    what = f"`{dep.version}`" if dep.version else "the latest build"
    hint = (f"cancel it with `/deploy cancel {dep.service} {dep.env}`"
            if State(dep.state) in CANCELLABLE else "it can no longer be cancelled")
    return (
        f":no_entry: {dep.service} {dep.env} is busy: <@{dep.requester}> is deploying {what} "
        f"(#{dep.id}, {label}) since {since:%H:%M} UTC ({ago} ago). Nothing was started. "
        f"Wait for it to finish, or {hint}."
    )


async def may_deploy(session: AsyncSession, service: str, env: str, now: datetime) -> Decision:
    current = await in_flight(session, service, env)
    if current is not None:
        return Decision(False, busy_reason(current, now))
    return ALLOW


def may_cancel(dep: Deployment) -> Decision:
    state = State(dep.state)
    if state in CANCELLABLE:
        return ALLOW
    if state not in IN_FLIGHT:
        return Decision(False, f"Deployment #{dep.id} already ended: {STATE_TEXT[state]}.")
    return Decision(
        False,
        f"Deployment #{dep.id} is {STATE_TEXT[state].lower()}: {dep.env} is already being "
        "changed, so it cannot be cancelled safely. Wait for the result.",
    )
