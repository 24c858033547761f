"""Mending ``SlotVersion`` where a success did not go through ``machine.succeed``.

A replica still running the code before the table existed (a rolling upgrade: the new
pod migrated, the old one finishes what it runs) or a hand-made fix in SQL leaves a slot's
newest success out of the table, and `/deploy status` would show the version before it
until the slot's next success. Each replica compares the table with the history at start
and every hour, and records what is missing. The comparison is the aggregate the table
replaced (every success ever recorded): fine once an hour, not per status request.
"""

from __future__ import annotations

from sqlmodel import col, func, select

from bot.engine.machine import State, record_current
from bot.store.db import Sessions
from bot.store.models import Deployment, SlotVersion
from bot.store.writers import WriterQueue


async def mend(sessions: Sessions, writers: WriterQueue) -> int:
    """Record each slot's newest success the table lacks; how many slots were behind."""
    newest = (select(func.max(Deployment.id))
              .where(col(Deployment.state) == State.SUCCEEDED)
              .group_by(col(Deployment.service), col(Deployment.env)))
    async with sessions() as session:
        listed = {(s, e): i for s, e, i in (await session.exec(select(
            SlotVersion.service, SlotVersion.env, SlotVersion.deployment_id))).all()}
        ids = (await session.exec(select(Deployment.id, Deployment.service, Deployment.env)
                                  .where(col(Deployment.id).in_(newest)))).all()
    behind = [i for i, service, env in ids
              if i is not None and listed.get((service, env), 0) < i]
    if not behind:
        return 0
    async with writers(), sessions() as session:
        for dep in (await session.exec(select(Deployment).where(
                col(Deployment.id).in_(behind)))).all():
            await record_current(session, dep)
        await session.commit()
    return len(behind)
