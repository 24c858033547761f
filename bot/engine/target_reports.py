"""What a deploy target says about its own rollout, and a target that waits for a human.

Some targets run a rollout of their own (Argo Rollouts: steps, weights, AnalysisRuns).
Their runs report where that rollout stands (``RunStatus.position``: the card shows it),
the checks they ran that ended (``findings``: each goes to the thread), and, while a
deploy run waits for a person (``waiting``: an Argo ``pause: {}`` step), the engine
pauses the deployment with that reason. Promote there (``controls``) returns it to
DEPLOYING; the next poll sees the same wait and calls the target's ``promote`` to go on
past it (keyed by the wait, so a repeat after a restart does not skip the next one).
Abort rolls back through the target's ``abort`` (``rollout_stops.step_rolling_back``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from bot.engine import facts
from bot.engine.machine import IN_FLIGHT, State
from bot.engine.outbox import note
from bot.engine.providers import job
from bot.engine.rollout_stops import pause
from bot.mrkdwn import escape
from bot.store.models import Deployment, Outbox
from integrations.base import Finding, RunStatus

if TYPE_CHECKING:
    from bot.engine.context import StepContext

POSITION = ":round_pushpin: "  # marks a detail that is the target's position, for the card


def report(ctx: StepContext, dep: Deployment, status: RunStatus) -> None:
    """Each of the target's own checks that ended, in the thread."""
    for found in status.findings:
        note(ctx.session, dep, _analysis(found), now=ctx.now)


def _analysis(found: Finding) -> facts.TargetAnalysis:
    outcome: facts.Outcome = "unknown" if found.passed is None else \
        "pass" if found.passed else "fail"
    return facts.TargetAnalysis(
        name=found.name, phase=found.phase, outcome=outcome, message=found.message,
        results=tuple(facts.Line(outcome=outcome, text=line) for line in found.lines))


def show_position(ctx: StepContext, dep: Deployment, status: RunStatus) -> None:
    """Keep the card's line on where the target's rollout stands up to date."""
    if not status.position:
        return
    said = POSITION + escape(status.position)
    if dep.detail != said:
        dep.detail = said
        ctx.session.add(Outbox(deployment_id=dep.id, kind="card", created_at=ctx.now))


def position_of(dep: Deployment) -> str | None:
    """The target's last reported position while the deployment is in flight."""
    if State(dep.state) in IN_FLIGHT and dep.detail.startswith(POSITION):
        return dep.detail.removeprefix(POSITION)
    return None


async def wait_for_human(ctx: StepContext, dep: Deployment, status: RunStatus) -> None:
    """Pause for the wait the deploy run reports, or, when a person already pressed
    Promote at this very wait, ask the target to go on past it."""
    assert status.waiting is not None
    reason = escape(status.waiting)
    if dep.paused_reason == reason:
        digest = hashlib.sha256(status.waiting.encode()).hexdigest()[:8]
        await ctx.providers.need_traffic().promote(job(dep, f"continue-{digest}"))
        ctx.later(dep)
        return
    report(ctx, dep, status)
    pause(ctx, dep, reason)
