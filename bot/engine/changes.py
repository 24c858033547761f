"""What a deployment ships: the commits between the running and the new version.

Read once, before approval, from the CI provider when it can compare versions; shown in
the approval request and on the card, and checked against the environment's
``max_commits``: a deploy that ships more is refused unless its requester overrode the
limit (``--allow-many-commits``), which is said in the thread, announced and audited.
"""

from __future__ import annotations

import logging

from bot.engine import facts, machine
from bot.engine.context import StepContext
from bot.engine.outbox import announce, note
from bot.mrkdwn import count
from bot.store.models import Deployment
from integrations.base import IntegrationError

log = logging.getLogger(__name__)


async def check(ctx: StepContext, dep: Deployment) -> str | None:
    """Record the commits ``dep`` ships; when they are too many, tell its thread and
    return the sentence refusing it (the card's outcome).

    Without a limit, a provider error only costs the changelog. With one, the limit cannot
    be checked without the list, so the error propagates and the runner tries again (then
    fails the deployment with the provider's message)."""
    source, before = ctx.providers.changes, dep.previous_version
    if source is None or not before or not dep.version or before == dep.version:
        return None
    limit = ctx.policy.env(dep.env).max_commits
    try:
        found = await source.compare(before, dep.version)
    except IntegrationError as exc:
        if limit is not None:
            raise
        log.warning("deployment %s: no changelog: %s", dep.id, exc)
        return None
    dep.changes = found.model_dump_json()
    if limit is None or found.total <= limit:
        return None
    ships = count(found.total, "commit")
    many = facts.ManyCommits(service=dep.service, previous_version=before, version=dep.version,
                             env=dep.env, commits=found.total, limit=limit,
                             overridden_by=dep.requester if dep.many_commits_ok else None)
    if not dep.many_commits_ok:
        note(ctx.session, dep, many, now=ctx.now)
        return (f":no_entry: {dep.service} `{before}` → `{dep.version}` ships {ships}, more "
                f"than {dep.env} takes at once ({limit}). Nothing was deployed. Deploy a "
                "version in between, or run `/deploy "
                f"{dep.service} {dep.env} {dep.version} --allow-many-commits` (announced and "
                "audited).")
    note(ctx.session, dep, many, now=ctx.now)
    announce(ctx.session, ctx.policy.config.announce_channel, many, now=ctx.now)
    machine.record(ctx.session, service=dep.service, env=dep.env, actor=dep.requester,
                   action="override_max_commits", now=ctx.now, deployment_id=dep.id,
                   detail=f"{found.total} commits, limit {limit}")
    return None
