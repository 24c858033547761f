"""The quality gate: a commit whose required checks have not passed is not deployed.

Asked right before work starts (``steps.step_queued``), after approvals, locks and
freezes, of the service's ``CheckSource`` (its CI provider, when configured with required
checks). A refusal ends the deployment before anything ran, naming each check that
failed or is still pending, and says what to do. Rollbacks and redeploys of a version
that ran before are not gated: they restore what was already there.
"""

from __future__ import annotations

from bot.engine import facts, machine
from bot.engine.context import StepContext
from bot.engine.machine import State
from bot.engine.outbox import note
from bot.mrkdwn import escape
from bot.store.models import Deployment
from integrations.base import CheckResult, CheckState

MAX_NAMED = 5  # checks named in the sentence; the rest counted


async def passed(ctx: StepContext, dep: Deployment) -> bool:
    """True when ``dep`` may go on; else it has failed, with the reason in its thread."""
    source = ctx.providers.checks
    if source is None or dep.kind != "deploy" or dep.version is None:
        return True
    results = await source.checks(dep.version)
    failed = [r for r in results if r.state is CheckState.FAILED]
    pending = [r for r in results if r.state is CheckState.PENDING]
    if not failed and not pending:
        return True
    reason = refusal(dep.version, failed, pending)
    machine.transition(ctx.session, dep, State.FAILED, actor="shipbot", now=ctx.now,
                       detail=reason)
    link = next((r.url for r in failed + pending if r.url), None)
    note(ctx.session, dep, facts.ChecksRefused(
        reason=reason, failed=bool(failed), service=dep.service, env=dep.env,
        version=dep.version, link=link), now=ctx.now)
    return False


def refusal(version: str, failed: list[CheckResult], pending: list[CheckResult]) -> str:
    """``v1.4.2`` has not passed its required checks: `test` failed (failure), `lint` is
    pending (in progress)."""
    parts = [f"`{escape(r.name)}` failed ({escape(r.detail)})" for r in failed] + \
        [f"`{escape(r.name)}` is pending ({escape(r.detail)})" for r in pending]
    shown = parts[:MAX_NAMED]
    if len(parts) > MAX_NAMED:
        shown.append(f"and {len(parts) - MAX_NAMED} more")
    return f"`{escape(version)}` has not passed its required checks: {', '.join(shown)}."
