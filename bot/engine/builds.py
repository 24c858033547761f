"""Build once, promote the artifact: a version built for one environment is what the next
environments get, never a rebuild that may differ (a moved tag, a newer base image).

A deployment whose build passed records what it produced (``artifact``, ``commit_sha``)
and ``built_by`` = its own id; a later deployment of the same service and version adopts
that record instead of building, and its deploy step is given the same artifact.
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.store.models import Deployment
from integrations.base import RunStatus


def record(dep: Deployment, status: RunStatus) -> None:
    """The build of ``dep`` passed: remember what it produced."""
    dep.artifact, dep.commit_sha, dep.built_by = status.artifact, status.commit, dep.id


async def earlier(session: AsyncSession, dep: Deployment,
                  version: str | None = None) -> Deployment | None:
    """The newest other deployment of the same service whose build of ``version`` (default:
    the deployment's own) passed, whatever became of its deploy afterwards."""
    stmt = (select(Deployment)
            .where(Deployment.service == dep.service,
                   Deployment.version == (version or dep.version),
                   col(Deployment.built_by).is_not(None), Deployment.id != dep.id)
            .order_by(col(Deployment.id).desc()).limit(1))
    return (await session.exec(stmt)).first()


def adopt(dep: Deployment, build: Deployment) -> None:
    """Deploy the build ``build`` ran (or adopted) instead of building again."""
    dep.artifact, dep.commit_sha, dep.built_by = build.artifact, build.commit_sha, build.built_by
    dep.ci_url = dep.ci_url or build.ci_url
