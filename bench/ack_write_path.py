"""Where a `/deploy` ack's CPU goes on the write path, and what batching acks would save.

    PYTHONPATH=. .venv/bin/python bench/ack_write_path.py [--acks 1000]

Prints the CPU per ack (this process, its driver thread included) of:

1. the product: ``CommandHandlers.on_text`` for ``/deploy <svc> staging v1`` in-process
   (parse, inbox, policy reads, the ORM insert of the deployment with its audit event,
   card outbox row and inbox receipt), engine stopped, one ack at a time: the baseline;
2. a sketch of the same reads and writes as SQLAlchemy Core statements in one transaction;
3. that sketch for 5, 10 and 20 acks in one transaction (IN-list reads, multi-row inserts):
   what a group commit of concurrent acks would cost per ack.

The sketches are statements only (no policy, no redaction, no replies): a bound on what
the database part of an ack can cost, not a second implementation. SQLite, one-hop driver.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from bench.ack_latency import bench_settings
from bot.config import parse_config
from bot.devtools.local import LocalBot
from bot.engine.machine import IN_FLIGHT
from bot.store import models  # noqa: F401  (registers the tables)
from commands.handlers import Invocation

DEP, AUDIT, OUTBOX, INBOX, LOCK, FREEZE = (SQLModel.metadata.tables[name] for name in (
    "deployment", "auditevent", "outbox", "inboundrequest", "lock", "freeze"))
RUNNING = [s.value for s in IN_FLIGHT]


def deployment_row(key: str, service: str, env: str, now: datetime) -> dict[str, object]:
    return {"request_key": key, "service": service, "env": env, "version": "v1",
            "requester": "U0BENCH", "state": "requested", "active_slot": f"{service}/{env}",
            "detail": "", "created_at": now, "updated_at": now, "next_action_at": now,
            "step_attempts": 0, "many_commits_ok": False, "channel": "C0BENCH",
            "hotfix": False, "approvals_required": 0, "approvals_received": 0,
            "row_version": 1}


async def sketch(engine: AsyncEngine, services: Sequence[str], env: str = "staging") -> None:
    """The reads and writes of ``len(services)`` acks in one transaction."""
    now = datetime.now(UTC)
    keys = {uuid.uuid4().hex: service for service in services}
    async with engine.begin() as conn:
        await conn.execute(sa.select(INBOX.c.key).where(INBOX.c.key.in_(keys)))
        await conn.execute(sa.select(DEP.c.service, DEP.c.id, DEP.c.state).where(
            DEP.c.service.in_(services), DEP.c.env == env, DEP.c.state.in_(RUNNING)))
        await conn.execute(sa.select(LOCK.c.id, LOCK.c.service).where(
            LOCK.c.env == env, LOCK.c.released_at.is_(None),
            sa.or_(LOCK.c.expires_at.is_(None), LOCK.c.expires_at > now)))
        await conn.execute(sa.select(FREEZE.c.id).where(
            FREEZE.c.lifted_at.is_(None), FREEZE.c.ends_at > now))
        ids = (await conn.execute(
            sa.insert(DEP).returning(DEP.c.id, sort_by_parameter_order=True),
            [deployment_row(k, s, env, now) for k, s in keys.items()])).scalars().all()
        slots = list(zip(ids, keys.values(), strict=True))
        await conn.execute(sa.insert(AUDIT), [
            {"deployment_id": i, "service": s, "env": env, "actor": "U0BENCH",
             "action": "requested", "to_state": "requested", "detail": "", "at": now}
            for i, s in slots])
        await conn.execute(sa.insert(OUTBOX), [{"deployment_id": i, "kind": "card",
                                           "created_at": now} for i in ids])
        await conn.execute(sa.insert(INBOX), [
            {"key": k, "kind": "slash", "user": "U0BENCH", "payload": "{}",
             "received_at": now, "reply": "ok", "done_at": now, "told_at": now,
             "attempts": 1} for k in keys])


async def cpu_per_ack(acks: int, batch: int, ack: Callable[[list[str]], Awaitable[None]],
                      names: Callable[[int], str]) -> float:
    """ms of CPU per ack, ``batch`` acks at a time."""
    began, done = time.process_time(), 0
    for start in range(0, acks - batch + 1, batch):
        await ack([names(n) for n in range(start, start + batch)])
        done += batch
    return (time.process_time() - began) / done * 1000


async def run(acks: int) -> None:
    services = [f"svc{n:04d}" for n in range(acks + 40)]
    tmp = Path(tempfile.mkdtemp(prefix="shipbot-bench-"))
    bot = LocalBot(parse_config(bench_settings(services)), state_dir=tmp / "state",
                   database_url=f"sqlite:///{tmp}/shipbot.db")
    async with bot:
        shipbot = bot.bot
        shipbot.scheduler.pause()  # the ack alone: no engine work behind it
        for task in list(shipbot._tasks):
            task.cancel()
        shipbot.service.on_change = lambda: None

        async def product(names: list[str]) -> None:
            for name in names:
                reply = await shipbot.handlers.on_text(
                    f"{name} staging v1", Invocation("U0BENCH", uuid.uuid4().hex))
                assert "is on its way" in reply.text, reply.text

        async def together(names: list[str]) -> None:
            await asyncio.gather(*(product([name]) for name in names))

        await cpu_per_ack(20, 1, product, lambda n: services[acks + n])  # warm-up
        base = await cpu_per_ack(acks // 2, 1, product, lambda n: services[n])
        print(f"product ack (ORM, one at a time):   {base:6.3f} ms CPU per ack  (baseline)")
        at_once = await cpu_per_ack(acks // 2, 20, together,
                                    lambda n: services[acks // 2 + n])
        print(f"product ack (ORM, 20 at once):      {at_once:6.3f} ms CPU per ack  "
              f"({at_once / base:.2f}x the baseline)")
        engine = shipbot.db
        async def sketched(names: list[str]) -> None:
            await sketch(engine, names)

        for batch in (1, 5, 10, 20):
            per = await cpu_per_ack(acks, batch, sketched, functools.partial(
                "sketch{}-{:05d}".format, batch))
            how = "one transaction per ack" if batch == 1 else f"{batch} acks per transaction"
            print(f"sketch, Core, {how:<26} {per:6.3f} ms CPU per ack  "
                  f"({per / base:.2f}x the baseline)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--acks", type=int, default=1000)
    asyncio.run(run(parser.parse_args().acks))


if __name__ == "__main__":
    main()
