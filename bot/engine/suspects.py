"""Which deployment most likely caused an alert, and which version a rollback restores.

Only deployments that succeeded count: they are what runs on the environment. A
failed one reports in its own thread, and the version that ran before it is still
the last succeeded one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from bot.clock import as_utc
from bot.engine.machine import State
from bot.store.models import Deployment


def _succeeded(service: str, env: str) -> SelectOfScalar[Deployment]:
    return (select(Deployment)
            .where(Deployment.service == service, Deployment.env == env,
                   Deployment.state == State.SUCCEEDED,
                   col(Deployment.finished_at).is_not(None))
            .order_by(col(Deployment.finished_at).desc(), col(Deployment.id).desc()))


async def suspect_and_before(session: AsyncSession, service: str, env: str,
                             started_at: datetime, window: timedelta
                             ) -> tuple[Deployment | None, str | None]:
    """``suspect`` and ``version_before`` of it in one query (the alert hot path): the
    latest successes up to the alert, newest first."""
    stmt = _succeeded(service, env).where(col(Deployment.created_at) <= started_at).limit(25)
    recent = list((await session.exec(stmt)).all())
    if not recent or as_utc(recent[0].finished_at) < started_at - window:  # type: ignore[arg-type]
        return None, None
    found = recent[0]
    before = next((d.version for d in recent[1:] if d.version != found.version), None)
    if before is None and len(recent) == 25:
        before = await version_before(session, found)
    return found, before


async def slot(session: AsyncSession, service: str, env: str
               ) -> tuple[Deployment | None, Deployment | None]:
    """What runs there (the last success) and what is in flight there, in one query."""
    stmt = (select(Deployment)
            .where(Deployment.service == service, Deployment.env == env,
                   or_(col(Deployment.active_slot).is_not(None),
                       Deployment.state == State.SUCCEEDED))
            .order_by(col(Deployment.active_slot).is_(None), col(Deployment.finished_at).desc(),
                      col(Deployment.id).desc())
            .limit(2))
    rows = (await session.exec(stmt)).all()
    running = next((d for d in rows if d.state == State.SUCCEEDED), None)
    return running, next((d for d in rows if d.active_slot), None)


async def version_before(session: AsyncSession, dep: Deployment) -> str | None:
    """The last version that succeeded on the same environment before ``dep`` finished."""
    assert dep.finished_at is not None
    stmt = _succeeded(dep.service, dep.env).where(
        col(Deployment.finished_at) < as_utc(dep.finished_at),
        col(Deployment.version) != dep.version).limit(1)
    earlier = (await session.exec(stmt)).first()
    return earlier.version if earlier else None


async def ever_succeeded(session: AsyncSession, service: str, env: str, version: str) -> bool:
    stmt = _succeeded(service, env).where(Deployment.version == version).limit(1)
    return (await session.exec(stmt)).first() is not None
