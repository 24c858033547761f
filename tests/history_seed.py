"""Past deployments written straight into the tables (tests, bench/scale.py), with what
the engine writes beside a success: each slot's ``SlotVersion`` row (``machine.succeed``).
Rows inserted without it would be invisible to `/deploy status`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import insert, text

from bot.store.db import Sessions
from bot.store.models import AuditEvent, Deployment, SlotVersion

Row = Mapping[str, Any]


def slot_versions(deployments: Sequence[Row]) -> list[dict[str, Any]]:
    """Each slot's newest success (the highest id: one slot runs one deployment at a time)."""
    newest: dict[tuple[str, str], Row] = {}
    for dep in deployments:
        slot = (dep["service"], dep["env"])
        if dep["state"] == "succeeded" and dep["id"] > newest.get(slot, {"id": 0})["id"]:
            newest[slot] = dep
    return [{"service": service, "env": env, "deployment_id": dep["id"],
             **{k: dep.get(k) for k in ("version", "requester", "created_at", "finished_at")}}
            for (service, env), dep in newest.items()]


async def insert_history(sessions: Sessions, deployments: Sequence[Row],
                         audit: Sequence[Row] = (), chunk: int = 1000) -> None:
    """Insert deployments (each with its ``id``), their audit rows and the slots' current
    versions, in short write transactions: a running bot's heartbeat goes on meanwhile."""
    tables = ((Deployment, deployments), (AuditEvent, audit),
              (SlotVersion, slot_versions(deployments)))
    async with sessions() as session:
        for table, data in tables:
            for i in range(0, len(data), chunk):
                await session.exec(insert(table).values(data[i:i + chunk]))  # type: ignore
                await session.commit()
        if session.get_bind().dialect.name == "postgresql" and deployments:
            await session.exec(text("SELECT setval('deployment_id_seq', :n)"),  # type: ignore
                               params={"n": max(d["id"] for d in deployments)})
            await session.commit()
