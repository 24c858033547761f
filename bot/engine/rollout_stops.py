"""How a rollout stops short: paused for a human, rolled back, or calling for help.

Split from ``progressive`` (which moves a rollout forward): every exit here says what
happened, what comes next and what the people in the channel can do.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.clock import as_utc, human_duration
from bot.engine import builds, facts, lifecycle, machine
from bot.engine.machine import State
from bot.engine.outbox import note
from bot.engine.providers import job
from bot.mrkdwn import code_or, escape
from bot.store.models import Deployment, Outbox
from integrations.base import IntegrationError, RunState

if TYPE_CHECKING:
    from datetime import datetime

    from sqlmodel.ext.asyncio.session import AsyncSession

    from bot.engine.context import StepContext

log = logging.getLogger(__name__)


def _pause_timeout(ctx: StepContext, dep: Deployment) -> timedelta:
    return ctx.policy.config.strategy_for(dep.service, dep.env, dep.strategy).pause_timeout


def pause(ctx: StepContext, dep: Deployment, reason: str, actor: str = "shipbot", *,
          analysis: facts.Undecided | None = None) -> None:
    """Hold the rollout where it is until a human decides, or roll back at the deadline.
    ``reason`` (mrkdwn) is the card's; ``analysis``, when the canary analysis could not
    decide, tells the thread why."""
    deadline = ctx.now + _pause_timeout(ctx, dep)
    machine.transition(ctx.session, dep, State.PAUSED, actor=actor, now=ctx.now,
                       detail=reason, action="pause")
    dep.paused_reason, dep.next_action_at = reason, deadline
    note(ctx.session, dep, facts.Paused(why=reason, analysis=analysis, deadline=deadline,
                                        service=dep.service, env=dep.env), now=ctx.now)


async def step_paused(ctx: StepContext, dep: Deployment) -> None:
    """At the pause deadline, roll back. A pause pressed after the runner picked the row as
    due (before it read it here) has a later deadline: then this is not due, and waits."""
    if dep.next_action_at is not None and as_utc(dep.next_action_at) > ctx.now:
        return
    if lifecycle.waits_in_deploy(dep) and await _went_on(ctx, dep):
        return
    waited = human_duration(_pause_timeout(ctx, dep).total_seconds())
    await roll_back(ctx, dep, f"paused for {waited} with no decision")


async def _went_on(ctx: StepContext, dep: Deployment) -> bool:
    """At the deadline of a target's own wait, ask the deploy run first: no longer waiting
    there (promoted outside Shipbot, e.g. ``kubectl argo rollouts promote``), a person
    decided; follow the run again (``step_deploying``) rather than undo their choice."""
    assert dep.deploy_run_id is not None
    status = await ctx.providers.target.poll(dep.deploy_run_id)
    if status.state is RunState.RUNNING and status.waiting is not None and \
            escape(status.waiting) == dep.paused_reason:
        return False
    where = status.position or status.detail
    machine.transition(ctx.session, dep, State.DEPLOYING, actor="shipbot", now=ctx.now,
                       detail=f"went on without Shipbot: {escape(where)}", action="went_on")
    note(ctx.session, dep, facts.TargetWentOn(position=where), now=ctx.now)
    dep.paused_reason, dep.next_action_at = None, ctx.now
    dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.deploy_timeout)
    return True


async def roll_back(ctx: StepContext, dep: Deployment, why: str, *,
                    lines: tuple[facts.Line, ...] = (), detail: str = "") -> None:
    """Automatic rollback: say what failed and the numbers, then undo through the target.
    A traffic change still running is stopped first (by the runner, on the replica that
    started it: ``stop_run``), so it cannot finish after the undo."""
    if dep.action_run_id is not None:
        dep.stop_run = f"target:{dep.action_run_id}"
    begin_rollback(ctx.session, dep, ctx.now, why, lines=lines, detail=detail)
    if dep.stop_run:
        dep.next_action_at = dep.next_action_at or ctx.now


async def stop_left_run(ctx: StepContext, dep: Deployment) -> None:
    """Stop the run a cancel or abort left going (``stop_run``). The runner calls this on
    the replica that started the run, before the deployment's next step."""
    assert dep.stop_run is not None
    kind, _, run_id = dep.stop_run.partition(":")
    dep.stop_run = None
    provider = ctx.providers.ci if kind == "ci" else ctx.providers.target
    if provider is None:
        return
    try:
        await provider.cancel(run_id)
    except IntegrationError as exc:
        log.warning("deployment %s: stopping %s failed: %s", dep.id, run_id, exc)
        if kind == "target":
            note(ctx.session, dep, facts.StopFailed(error=str(exc)), now=ctx.now)


def begin_rollback(session: AsyncSession, dep: Deployment, now: datetime, why: str, *,
                   lines: tuple[facts.Line, ...] = (), detail: str = "") -> None:
    """The database half of a rollback (state, thread message); the runner's next step
    (``step_rolling_back``) talks to the target. Usable where no target is at hand."""
    if dep.kind == "rollback":
        _keep_rollback(session, dep, now, why, lines=lines, detail=detail)
        return
    if not lifecycle.waits_in_deploy(dep):  # kept only from a wait inside the deploy run
        dep.paused_reason = None  # (``step_rolling_back``: the deploy never finished)
    machine.transition(session, dep, State.ROLLING_BACK, actor="shipbot", now=now,
                       detail=f"Rolling back: {why}.")
    dep.action_run_id, dep.next_action_at = None, now
    note(session, dep, facts.RollingBack(service=dep.service, env=dep.env, why=why,
                                         results=lines, output=detail), now=now)


async def step_rolling_back(ctx: StepContext, dep: Deployment) -> None:
    target = ctx.providers.target
    if dep.action_run_id is None:
        if dep.kind == "rollback":  # never undo a rollback: that restores the bad version
            why = (dep.detail or "").removeprefix("Rolling back: ").rstrip(".")
            _keep_rollback(ctx.session, dep, ctx.now, why or "its checks failed")
            return
        # The stable version still runs (canary, blue-green, or a deploy run that waited
        # for a human and never finished, e.g. at an Argo pause): move traffic back. A
        # rollback begun anywhere else (a deploy run that finished, even one promoted past
        # a wait) has no pause reason left (``begin_rollback``): the earlier version again.
        unfinished = dep.stage_started_at is None and dep.paused_reason is not None and \
            dep.deploy_run_id is not None and ctx.providers.traffic is not None
        if dep.strategy != "rolling" or unfinished:
            dep.action_run_id = await ctx.providers.need_traffic().abort(job(dep, "abort"))
        elif dep.previous_version:  # rolling replaced it: deploy it again (or native undo)
            ran = await builds.earlier(ctx.session, dep, dep.previous_version)
            undo = job(dep, "undo").model_copy(update={  # the build that ran there before
                "version": dep.previous_version, "artifact": ran and ran.artifact})
            dep.action_run_id = await ctx.providers.start_deploy(undo, rollback=True)
        else:
            _nothing_to_go_back_to(ctx, dep)
            return
        ctx.later(dep)
        return
    status = await target.poll(dep.action_run_id)
    if status.state is RunState.RUNNING:
        ctx.later(dep)
        return
    ok = status.state is RunState.SUCCEEDED
    before = code_or(dep.previous_version, "the previous version")
    seconds = (ctx.now - as_utc(dep.updated_at)).total_seconds()
    machine.transition(
        ctx.session, dep, State.ROLLED_BACK if ok else State.ROLLBACK_FAILED, actor="shipbot",
        now=ctx.now, detail=f"{dep.env} is back on {before}." if ok else
        f"The rollback failed: {escape(status.detail)}. {dep.env} needs a human now.")
    note(ctx.session, dep, facts.RolledBack(
        service=dep.service, env=dep.env, version=dep.version,
        previous_version=dep.previous_version, seconds=seconds, output=status.output_tail)
        if ok else rollback_failed(dep, escape(status.detail), status.output_tail), now=ctx.now)
    if ok and json.loads(dep.analysis_log or "[]"):
        ctx.session.add(Outbox(deployment_id=dep.id, kind="chart", created_at=ctx.now))


def rollback_failed(dep: Deployment, reason: str, output: str = "") -> facts.RollbackFailed:
    """``reason`` is mrkdwn (its untrusted parts escaped): the card shows it too."""
    return facts.RollbackFailed(reason=reason, service=dep.service, env=dep.env,
                                version=dep.version, previous_version=dep.previous_version,
                                output=output)


def _nothing_to_go_back_to(ctx: StepContext, dep: Deployment) -> None:
    """A rolling deploy replaced the only version Shipbot knows of: a human decides."""
    machine.transition(ctx.session, dep, State.ROLLBACK_FAILED, actor="shipbot", now=ctx.now,
                       detail=f"No earlier version of {dep.service} on {dep.env} to go back to; "
                       f"it runs `{dep.version}`.")
    note(ctx.session, dep, facts.NothingToGoBackTo(service=dep.service, env=dep.env,
                                                   version=dep.version), now=ctx.now)


def _keep_rollback(session: AsyncSession, dep: Deployment, now: datetime, why: str, *,
                   lines: tuple[facts.Line, ...] = (), detail: str = "") -> None:
    """A rollback that fails its checks stays: undoing it would put back the version it
    replaced, the one an alert or a human blamed. A human decides what comes next."""
    if State(dep.state) is not State.ROLLING_BACK:  # the machine ends rollbacks from there
        machine.transition(session, dep, State.ROLLING_BACK, actor="shipbot", now=now,
                           detail=f"Rollback to {dep.version} stopped: {why}.")
    bad = code_or(dep.previous_version, "the version it replaced")
    fix = f"`/deploy {dep.service} {dep.env} <fixed version> --hotfix`"
    what = f"The rollback to `{dep.version}` " + (
        "did not pass its checks" if lines else "stopped before its checks passed")
    machine.transition(
        session, dep, State.ROLLBACK_FAILED, actor="shipbot", now=now,
        detail=f"{what} ({why}); {dep.env} runs `{dep.version}` anyway. Shipbot does not "
        f"undo a rollback (that would put back {bad}): fix forward with {fix}.")
    note(session, dep, facts.RollbackKept(
        service=dep.service, env=dep.env, version=dep.version,
        previous_version=dep.previous_version, why=why, results=lines, output=detail), now=now)
