"""One function per in-flight state: look at the world, move the deployment on.

Each step is idempotent: work it starts is keyed by deployment and step, so a
step repeated after a crash finds the run it started instead of starting another.
A step whose run was forgotten (its replica is gone: ``bot.engine.replicas``) starts
it again under the same key.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import as_utc, human_duration
from bot.engine import (
    builds,
    changes,
    facts,
    machine,
    progressive,
    quality,
    rollout_stops,
    target_reports,
)
from bot.engine.context import StepContext
from bot.engine.machine import State
from bot.engine.outbox import note, refresh_approval
from bot.engine.providers import job
from bot.mrkdwn import escape
from bot.store.models import Deployment
from integrations.base import RunState, RunStatus


async def last_succeeded_version(session: AsyncSession, service: str, env: str) -> str | None:
    stmt = (
        select(Deployment.version)
        .where(Deployment.service == service, Deployment.env == env,
               Deployment.state == State.SUCCEEDED)
        .order_by(col(Deployment.finished_at).desc())
        .limit(1)
    )
    return (await session.exec(stmt)).first()


async def step_requested(ctx: StepContext, dep: Deployment) -> None:
    ci = ctx.providers.ci
    if dep.version is None:
        dep.version = await ci.latest_version(dep.service) if ci else None
        if dep.version is None:
            machine.transition(
                ctx.session, dep, State.FAILED, actor="shipbot", now=ctx.now,
                detail=f"No version given and CI knows no build of {dep.service}. "
                f"Name one: `/deploy {dep.service} {dep.env} v1.2.3`.",
            )
            return
        note(ctx.session, dep, facts.LatestVersion(version=dep.version), now=ctx.now)
    dep.previous_version = await last_succeeded_version(ctx.session, dep.service, dep.env)
    refused = await changes.check(ctx, dep)
    if refused:
        machine.transition(ctx.session, dep, State.CANCELLED, actor="shipbot", now=ctx.now,
                           detail=refused)  # check() told the thread
        return
    if dep.approvals_required:
        rules = ctx.policy.env(dep.env).approval_rules
        assert rules is not None
        machine.transition(ctx.session, dep, State.AWAITING_APPROVAL, actor="shipbot",
                           now=ctx.now)
        dep.approval_expires_at = ctx.now + rules.expires_after
        dep.next_action_at = dep.approval_expires_at
        refresh_approval(ctx.session, dep, now=ctx.now)
        return
    machine.transition(ctx.session, dep, State.QUEUED, actor="shipbot", now=ctx.now)
    dep.next_action_at = ctx.now


async def step_awaiting_approval(ctx: StepContext, dep: Deployment) -> None:
    """Nothing waits forever: an unanswered request expires at its due time."""
    assert dep.approval_expires_at is not None
    if ctx.now < as_utc(dep.approval_expires_at):
        dep.next_action_at = dep.approval_expires_at
        return
    waited = human_duration((ctx.now - as_utc(dep.created_at)).total_seconds())
    machine.transition(ctx.session, dep, State.EXPIRED, actor="shipbot", now=ctx.now,
                       detail=f"No decision within {waited}; nothing was deployed.")
    refresh_approval(ctx.session, dep, now=ctx.now)
    note(ctx.session, dep, facts.RequestExpired(
        requester=dep.requester, received=dep.approvals_received,
        required=dep.approvals_required, service=dep.service, env=dep.env,
        version=dep.version), now=ctx.now)


async def step_queued(ctx: StepContext, dep: Deployment) -> None:
    # A lock or freeze may have started while this waited; rollbacks restore what ran here.
    if not dep.hotfix and dep.kind != "rollback":
        blocked = await ctx.policy.gates(ctx.session, dep, ctx.now)
        if not blocked.allowed:
            machine.transition(ctx.session, dep, State.CANCELLED, actor="shipbot", now=ctx.now,
                               detail=blocked.reason)
            note(ctx.session, dep, facts.StoppedBeforeStart(why=blocked.reason), now=ctx.now)
            return
    if not await quality.passed(ctx, dep):  # the commit's required checks
        return
    ci = ctx.providers.ci
    reuse = dep.kind != "deploy" or ctx.providers.build_once
    built = await builds.earlier(ctx.session, dep) if ci and reuse else None
    if built is not None:
        builds.adopt(dep, built)  # the same artifact as where this version ran before
        if dep.kind == "deploy":
            note(ctx.session, dep, facts.BuildReused(
                version=dep.version, built_in=built.env, built_by=built.built_by,
                artifact=dep.artifact), now=ctx.now)
    if ci is None or dep.kind != "deploy" or built is not None:
        await start_deploy(ctx, dep)  # rollbacks and redeploys: built before
        return
    dep.ci_run_id = await ci.start(job(dep, "build"))
    machine.transition(ctx.session, dep, State.BUILDING, actor="shipbot", now=ctx.now,
                       detail=f"build {dep.ci_run_id}")
    dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.ci_timeout)
    note(ctx.session, dep, facts.BuildStarted(version=dep.version), now=ctx.now)
    ctx.later(dep)


async def step_building(ctx: StepContext, dep: Deployment) -> None:
    assert ctx.providers.ci is not None
    if dep.ci_run_id is None:  # taken over from a replica that is gone
        dep.ci_run_id = await ctx.providers.ci.start(job(dep, "build"))
        ctx.later(dep)
        return
    status = await ctx.providers.ci.poll(dep.ci_run_id)
    if status.url and status.url != dep.ci_url:
        if dep.ci_url is None and status.state is RunState.RUNNING:  # a link to follow it
            note(ctx.session, dep, facts.BuildRunning(link=status.url), now=ctx.now)
        dep.ci_url = status.url
    if status.state is RunState.RUNNING:
        await _still_running(ctx, dep, status, "build")
        return
    if status.state is RunState.FAILED:
        await _fail(ctx, dep, "build", status)
        return
    builds.record(dep, status)
    note(ctx.session, dep, facts.BuildPassed(detail=status.detail, output=status.output_tail,
                                             link=status.url), now=ctx.now)
    await start_deploy(ctx, dep)


async def start_deploy(ctx: StepContext, dep: Deployment) -> None:
    await _start_deploy_run(ctx, dep)
    machine.transition(ctx.session, dep, State.DEPLOYING, actor="shipbot", now=ctx.now,
                       detail=f"deploy {dep.deploy_run_id}")
    dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.deploy_timeout)
    note(ctx.session, dep, facts.Deploying(version=dep.version, env=dep.env,
                                           rollback=dep.kind == "rollback"), now=ctx.now)
    ctx.later(dep)


async def _start_deploy_run(ctx: StepContext, dep: Deployment) -> None:
    dep.deploy_run_id = await ctx.providers.start_deploy(job(dep, "deploy"),
                                                        rollback=dep.kind == "rollback")


async def step_deploying(ctx: StepContext, dep: Deployment) -> None:
    if dep.deploy_run_id is None:  # taken over from a replica that is gone
        await _start_deploy_run(ctx, dep)
        ctx.later(dep)
        return
    status = await ctx.providers.target.poll(dep.deploy_run_id)
    if status.state is RunState.RUNNING and status.waiting:  # the target waits for a human
        await target_reports.wait_for_human(ctx, dep, status)
        return
    if status.state is RunState.RUNNING:
        target_reports.show_position(ctx, dep, status)
        await _still_running(ctx, dep, status, "deploy")
        return
    dep.paused_reason = None  # the run ended: a wait promoted past in it is over
    if dep.action_run_id is None:  # the first poll that saw it end (health comes next)
        target_reports.report(ctx, dep, status)
    if status.state is RunState.FAILED:
        await _fail(ctx, dep, "deploy", status)
        return
    if dep.kind != "rollback" and ctx.providers.health is not None and \
            not await _healthy(ctx, dep):
        return
    await progressive.begin(ctx, dep, status.output_tail)


async def _healthy(ctx: StepContext, dep: Deployment) -> bool:
    """Wait for the target to report the new version healthy before any check or traffic;
    unhealthy (or not healthy by the deploy deadline) rolls back."""
    target, probe = ctx.providers.target, ctx.providers.health
    if dep.action_run_id is None:
        assert probe is not None  # step_deploying asks only targets that report health
        dep.action_run_id = await probe.health(job(dep, "health"))
        note(ctx.session, dep, facts.AwaitingHealth(version=dep.version, env=dep.env),
             now=ctx.now)
        ctx.later(dep)
        return False
    health = await target.poll(dep.action_run_id)
    late = dep.step_deadline_at is not None and ctx.now >= as_utc(dep.step_deadline_at)
    if health.state is RunState.RUNNING and not late:
        ctx.later(dep)
        return False
    if health.state is RunState.SUCCEEDED:
        note(ctx.session, dep, facts.Healthy(version=dep.version, env=dep.env,
                                             output=health.output_tail), now=ctx.now)
        return True
    if not late:
        dep.action_run_id = None  # the probe ended; a late one is stopped by roll_back
    why = "not healthy before the deploy deadline" if late else \
        f"unhealthy ({escape(health.detail)})"
    await rollout_stops.roll_back(ctx, dep, f"`{dep.version}` is {why}",
                         detail=health.output_tail or "")
    return False


async def _still_running(ctx: StepContext, dep: Deployment, status: RunStatus,
                         what: Literal["build", "deploy"]) -> None:
    if dep.step_deadline_at and ctx.now >= as_utc(dep.step_deadline_at):
        run_id = dep.ci_run_id if what == "build" else dep.deploy_run_id
        provider = ctx.providers.ci if what == "build" else ctx.providers.target
        if provider and run_id:
            await provider.cancel(run_id)
        await _fail(ctx, dep, what, status, timed_out=True)
        return
    ctx.later(dep)


async def _fail(ctx: StepContext, dep: Deployment, step: Literal["build", "deploy"],
                status: RunStatus, *, timed_out: bool = False) -> None:
    reason = (f"The {step} did not finish in time and was stopped." if timed_out
              else f"{step.capitalize()} failed: {escape(status.detail)}.")
    during_deploy = State(dep.state) is State.DEPLOYING
    machine.transition(ctx.session, dep, State.FAILED, actor="shipbot", now=ctx.now,
                       detail=reason)
    note(ctx.session, dep, facts.RunFailed(
        step=step, timed_out=timed_out, detail=status.detail, during_deploy=during_deploy,
        service=dep.service, env=dep.env, version=dep.version,
        previous_version=dep.previous_version, output=status.output_tail, link=status.url),
        now=ctx.now)


STEPS = {
    State.REQUESTED: step_requested,
    State.AWAITING_APPROVAL: step_awaiting_approval,
    State.VERIFYING: progressive.step_rollout,
    State.PROMOTING: progressive.step_rollout,
    State.ROLLING_BACK: rollout_stops.step_rolling_back,
    State.PAUSED: rollout_stops.step_paused,
    State.QUEUED: step_queued,
    State.BUILDING: step_building,
    State.DEPLOYING: step_deploying,
}
