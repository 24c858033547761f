"""Promote, Pause, Resume, Abort: a human steering a canary or blue-green rollout.

The card's buttons and `/deploy promote|pause|resume|abort` both land here, with the
same permission checks (abort needs the rollback role, the others the deploy role).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.engine import facts, lifecycle, machine, policy, progressive, rollout_stops
from bot.engine.context import StepContext
from bot.engine.lifecycle import LIFECYCLE, Blocked, Event
from bot.engine.machine import STATE_TEXT, State
from bot.engine.outbox import note
from bot.engine.plan import Stage
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.requests import Control
from bot.mrkdwn import code_or
from bot.store.db import Sessions
from bot.store.models import Deployment


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
            ctx = StepContext(session, self.providers[dep.service], now, 0.0, self.policy)
            stages = progressive.stages_of(ctx, dep)
            stage = stages[dep.stage] if dep.stage < len(stages) else None
            event = lifecycle.normalise(Event(cmd.action), stage, dep)
            if lifecycle.state_refusal(dep, event) is not None:
                return _not_now(dep, Event(cmd.action), stage)
            allowed = await self.policy.may(user, LIFECYCLE[event].role, dep.env)
            if not allowed.allowed:
                return allowed.reason
            blocked = lifecycle.refusal(dep, event, stage)
            if blocked is not None:
                return _refusal(dep, blocked, stage)
            answer = await self._apply(ctx, dep, event, stages, stage, user, cmd.action)
            await session.commit()
        return answer

    async def _find(self, session: AsyncSession, cmd: Control) -> Deployment | str:
        if cmd.deployment_id is not None:
            dep = await session.get(Deployment, cmd.deployment_id)
            return dep or f"Deployment #{cmd.deployment_id} does not exist; nothing changed."
        assert cmd.service and cmd.env
        dep = await policy.in_flight(session, cmd.service, cmd.env)
        return dep or f"No rollout of {cmd.service} on {cmd.env} is in progress."

    async def _apply(self, ctx: StepContext, dep: Deployment, event: Event,
                     stages: list[Stage], stage: Stage | None, user: str, asked: str) -> str:
        if event is Event.ABORT:
            await rollout_stops.roll_back(ctx, dep, f"aborted by <@{user}>")
            return f"Rolling back deployment #{dep.id}."
        if event is Event.PAUSE:
            rollout_stops.pause(ctx, dep, f"Paused by <@{user}>. Resume or "
                              "Promote to continue, Abort to roll back.", actor=user)
            return f"Paused deployment #{dep.id}."
        if event is Event.RESUME:
            return _resume(ctx, dep, stage, user)
        if lifecycle.waits_in_deploy(dep):
            return _go_on(ctx, dep, user)
        if State(dep.state) is State.PAUSED:
            machine.transition(ctx.session, dep, State.VERIFYING, actor=user, now=ctx.now,
                               detail=f"{asked} by <@{user}>", action=asked)
            dep.paused_reason = None
        note(ctx.session, dep, facts.Pressed(by=user, action=asked), now=ctx.now)
        await progressive.advance_stage(ctx, dep, stages, by=user)
        if asked == "resume":
            return f"Resumed deployment #{dep.id}: past the manual gate."
        return f"Promoted deployment #{dep.id} to the next step."


def _not_now(dep: Deployment, asked: Event, stage: Stage | None) -> str:
    """The state does not allow it: say what does apply, if anything."""
    state = State(dep.state)
    can = [e.value for e in lifecycle.enabled_events(dep, stage)
           if e not in (Event.APPROVE, Event.REJECT)]  # those are the approvers' buttons
    hint = f" Now you can: {', '.join(can)}." if can else ""
    return (f"Deployment #{dep.id} is {STATE_TEXT[state].lower()}; {asked.value} does not "
            f"apply now.{hint} Nothing changed.")


def _refusal(dep: Deployment, blocked: Blocked, stage: Stage | None) -> str:
    """Promote only skips a wait; Roll back only while the old version still runs."""
    if blocked is Blocked.NOT_WAITING:
        doing = stage.label() if stage else "finishing"
        if State(dep.state) is State.PAUSED:
            return (f"Deployment #{dep.id} is paused at {doing}, which Promote cannot skip: "
                    "press Resume to go on, and promote once it is waiting. Nothing changed.")
        return (f"Deployment #{dep.id} is busy with {doing}; promote once it is waiting. "
                "Nothing changed.")
    old = code_or(dep.previous_version, "the old version")
    return (f"Too late to roll back deployment #{dep.id} with Abort: {old} is being "
            f"retired now. Once this finishes, use `/rollback {dep.service} {dep.env}` "
            "to deploy it again. Nothing changed.")


def _go_on(ctx: StepContext, dep: Deployment, user: str) -> str:
    """Promote at the deploy target's own wait: back to DEPLOYING, where the next poll
    asks the target to go on (``target_reports.wait_for_human``). ``paused_reason`` stays:
    it names the wait promoted past (cleared in ``step_deploying`` once the run ends;
    a rollback before that keeps it only from a wait: ``begin_rollback``)."""
    machine.transition(ctx.session, dep, State.DEPLOYING, actor=user, now=ctx.now,
                       detail=f"promote by <@{user}>", action="promote")
    note(ctx.session, dep, facts.Pressed(by=user, action="promote"), now=ctx.now)
    dep.next_action_at = ctx.now
    dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.deploy_timeout)
    return f"Promoted deployment #{dep.id}: the deploy goes on past the wait."


def _resume(ctx: StepContext, dep: Deployment, stage: Stage | None, user: str) -> str:
    """Re-enter the current stage where it stopped: checks run, a traffic change started
    before the pause is polled. Only an analysis starts over (a pause breaks its series)."""
    promoting = stage is not None and stage.kind in ("window", "promote")
    machine.transition(ctx.session, dep, State.PROMOTING if promoting else State.VERIFYING,
                       actor=user, now=ctx.now, detail=f"resume by <@{user}>", action="resume")
    note(ctx.session, dep, facts.Pressed(by=user, action="resume"), now=ctx.now)
    dep.next_action_at, dep.paused_reason = ctx.now, None
    if stage is not None and stage.kind == "bake":
        dep.stage_started_at, dep.analysis_state, dep.last_check_at = ctx.now, "", None
        return f"Resumed deployment #{dep.id}: the current step starts over."
    return f"Resumed deployment #{dep.id} at {stage.label() if stage else 'its last step'}."
