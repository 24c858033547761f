"""Promote, Pause, Resume, Abort: a human steering a canary or blue-green rollout.

The card's buttons and `/deploy promote|pause|resume|abort` both land here, with the
same permission checks (abort needs the rollback role, the others the deploy role).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.engine import machine, policy, progressive, undo
from bot.engine.context import StepContext
from bot.engine.machine import STATE_TEXT, State
from bot.engine.outbox import note
from bot.engine.plan import Stage
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.requests import Control
from bot.mrkdwn import code_or
from bot.store.db import Sessions
from bot.store.models import Deployment

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
        stage = stages[dep.stage] if dep.stage < len(stages) else None
        refusal = _refusal(dep, action, stage)
        if refusal:
            return refusal
        if action == "abort":
            await undo.roll_back(ctx, dep, f"aborted by <@{user}>")
            return f"Rolling back deployment #{dep.id}."
        if action == "pause":
            undo.pause(ctx, dep, f"Paused by <@{user}>. Resume or "
                              "Promote to continue, Abort to roll back.", actor=user)
            return f"Paused deployment #{dep.id}."
        if action == "resume" and (stage is None or stage.kind != "gate"):
            return _resume(ctx, dep, stage, user)
        if State(dep.state) is State.PAUSED:
            machine.transition(ctx.session, dep, State.VERIFYING, actor=user, now=ctx.now,
                               detail=f"{action} by <@{user}>", action=action)
        note(ctx.session, dep, f":arrow_forward: <@{user}> pressed {action.capitalize()}.",
             now=ctx.now)
        await progressive.advance_stage(ctx, dep, stages, by=user)
        if action == "resume":
            return f"Resumed deployment #{dep.id}: past the manual gate."
        return f"Promoted deployment #{dep.id} to the next step."


def _refusal(dep: Deployment, action: str, stage: Stage | None) -> str | None:
    """Promote only skips a wait; Roll back only while the old version still runs."""
    if action == "promote" and (stage is None or stage.kind not in ("bake", "gate", "window")):
        doing = stage.label() if stage else "finishing"
        if State(dep.state) is State.PAUSED:
            return (f"Deployment #{dep.id} is paused at {doing}, which Promote cannot skip: "
                    "press Resume to go on, and promote once it is waiting. Nothing changed.")
        return (f"Deployment #{dep.id} is busy with {doing}; promote once it is waiting. "
                "Nothing changed.")
    if action == "abort" and stage is not None and stage.kind == "promote" and \
            dep.action_run_id is not None:
        old = code_or(dep.previous_version, "the old version")
        return (f"Too late to roll back deployment #{dep.id} with Abort: {old} is being "
                f"retired now. Once this finishes, use `/rollback {dep.service} {dep.env}` "
                "to deploy it again. Nothing changed.")
    return None


def _resume(ctx: StepContext, dep: Deployment, stage: Stage | None, user: str) -> str:
    """Re-enter the current stage where it stopped: checks run, a traffic change started
    before the pause is polled. Only an analysis starts over (a pause breaks its series)."""
    promoting = stage is not None and stage.kind in ("window", "promote")
    machine.transition(ctx.session, dep, State.PROMOTING if promoting else State.VERIFYING,
                       actor=user, now=ctx.now, detail=f"resume by <@{user}>", action="resume")
    note(ctx.session, dep, f":arrow_forward: <@{user}> pressed Resume.", now=ctx.now)
    dep.next_action_at = ctx.now
    if stage is not None and stage.kind == "bake":
        dep.stage_started_at, dep.analysis_state, dep.last_check_at = ctx.now, "", None
        return f"Resumed deployment #{dep.id}: the current step starts over."
    return f"Resumed deployment #{dep.id} at {stage.label() if stage else 'its last step'}."
