"""Promote, Pause, Resume, Abort: a human steering a canary or blue-green rollout.

The card's buttons and `/deploy promote|pause|resume|abort` both land here, with the
same permission checks (abort needs the rollback role, the others the deploy role).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.engine import machine, policy, progressive, undo
from bot.engine.machine import STATE_TEXT, State
from bot.engine.outbox import note
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.steps import StepContext
from bot.store.db import Sessions
from bot.store.models import Deployment
from commands.model import Control

ALLOWED: dict[str, frozenset[State]] = {
    "promote": frozenset({State.VERIFYING, State.PAUSED, State.PROMOTING}),
    "pause": frozenset({State.VERIFYING}),
    "resume": frozenset({State.PAUSED}),
    "abort": frozenset({State.VERIFYING, State.PAUSED, State.PROMOTING}),
}


class ControlService:
    def __init__(self, sessions: Sessions, policy: Policy,
                 providers: dict[str, ServiceProviders], clock: Clock,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.sessions, self.policy, self.providers = sessions, policy, providers
        self.clock, self.on_change = clock, on_change

    async def control(self, cmd: Control, user: str) -> str:
        answer = await machine.retry_on_conflict(
            lambda: self._attempt(cmd, user),
            give_up="The rollout changed several times just now; look at the thread.")
        self.on_change()
        return answer

    async def _attempt(self, cmd: Control, user: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            dep = await self._find(session, cmd)
            if isinstance(dep, str):
                return dep
            state = State(dep.state)
            if state not in ALLOWED[cmd.action]:
                return (f"Deployment #{dep.id} is {STATE_TEXT[state].lower()}; {cmd.action} "
                        "does not apply now. Nothing changed.")
            role = "rollback" if cmd.action == "abort" else "deploy"
            allowed = await self.policy.may(user, role, dep.env)  # type: ignore[arg-type]
            if not allowed.allowed:
                return allowed.reason
            ctx = StepContext(session, self.providers[dep.service], now, 0.0, self.policy)
            answer = await self._apply(ctx, dep, cmd.action, user)
            await session.commit()
        return answer

    async def _find(self, session: AsyncSession, cmd: Control) -> Deployment | str:
        if cmd.deployment_id is not None:
            dep = await session.get(Deployment, cmd.deployment_id)
            return dep or f"Deployment #{cmd.deployment_id} does not exist; nothing changed."
        assert cmd.service and cmd.env
        dep = await policy.in_flight(session, cmd.service, cmd.env)
        return dep or f"No rollout of {cmd.service} on {cmd.env} is in progress."

    async def _apply(self, ctx: StepContext, dep: Deployment, action: str, user: str) -> str:
        stages = progressive.stages_of(ctx, dep)
        current = stages[dep.stage].kind if dep.stage < len(stages) else None
        if action == "promote" and State(dep.state) is not State.PAUSED and current not in (
                "bake", "gate", "window"):
            doing = stages[dep.stage].label() if current else "finishing"
            return (f"Deployment #{dep.id} is busy ({doing}); promote once it is waiting. "
                    "Nothing changed.")
        if action == "abort":
            await undo.roll_back(ctx, dep, f"aborted by <@{user}>")
            return f"Rolling back deployment #{dep.id}."
        if action == "pause":
            undo.pause(ctx, dep, f"Paused by <@{user}>. Resume or "
                              "Promote to continue, Abort to roll back.", actor=user)
            return f"Paused deployment #{dep.id}."
        resumable = action == "resume" and dep.stage < len(stages) and \
            stages[dep.stage].kind == "bake"
        if State(dep.state) is State.PAUSED:
            machine.transition(ctx.session, dep, State.VERIFYING, actor=user, now=ctx.now,
                               detail=f"{action} by <@{user}>", action=action)
        note(ctx.session, dep, f":arrow_forward: <@{user}> pressed {action.capitalize()}.",
             now=ctx.now)
        if resumable:  # an inconclusive or paused step is judged again from scratch
            dep.stage_started_at, dep.analysis_state, dep.last_check_at = ctx.now, "", None
            dep.next_action_at = ctx.now
            return f"Resumed deployment #{dep.id}: the current step starts over."
        await progressive.advance_stage(ctx, dep, stages, by=user)
        return f"Promoted deployment #{dep.id} to the next step."
