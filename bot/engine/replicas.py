"""Several replicas on one database, without a shared disk: who is alive, and whose run.

A provider's run may be observable only where it was started (the command provider
keeps it in the replica's state directory). So the deployment records the replica that
started the run it waits for (``run_owner``), and other replicas leave it alone while
that replica's heartbeat (a ``Replica`` row, renewed every third of the lease) is
alive. Once it has lapsed, or was given up at shutdown, another replica takes the
deployment over and starts the step again under the same idempotency key: a provider
that can find the run by its key (a CI service, or a command run on the same disk)
continues it; the command provider on another machine runs it again.

The replica id is kept in the state directory, so a process restarted on the same
disk is the same replica and continues its own runs at once. Its process holds a lock
on that directory while it lives (released by the kernel however it dies), so the next
process that gets the lock knows the previous one is dead and takes its leases back at
once instead of waiting a lease out (``release_dead_leases``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import socket
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, delete, exists, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select

from bot.clock import Clock
from bot.engine import facts
from bot.engine.machine import State
from bot.engine.outbox import note
from bot.store import leases
from bot.store.db import Sessions
from bot.store.models import Deployment, InboundRequest, MirrorEvent, Outbox, Replica
from bot.store.writers import WriterQueue

if TYPE_CHECKING:
    from bot.engine.context import StepContext

log = logging.getLogger(__name__)
ID_FILE = "replica-id"
LOCK_FILE = "replica.lock"
FORGET_AFTER = timedelta(days=1)  # rows of replicas gone this long are deleted


def identity(state_dir: Path) -> tuple[str, int | None]:
    """This process's replica id and the state directory's lock (sync: call in a thread).
    Another live process holding the lock (a misconfiguration: two pods, one directory)
    makes this one a replica of its own for its life, so neither frees the other's
    claims."""
    lock = lock_state_dir(state_dir)
    return (replica_id(state_dir), lock) if lock is not None else (_new_id(), None)


def replica_id(state_dir: Path) -> str:
    """This state directory's replica id, made on first use (sync: call in a thread)."""
    path = Path(state_dir) / ID_FILE
    with contextlib.suppress(OSError):
        found = path.read_text().strip()
        if found:
            return found
    made = _new_id()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(made + "\n")
    return made


def _new_id() -> str:
    return f"{socket.gethostname()[:40]}-{secrets.token_hex(6)}"


def lock_state_dir(state_dir: Path) -> int | None:
    """Hold the state directory's lock for this process's life; the descriptor, or None
    when another live process holds it (sync: call in a thread)."""
    Path(state_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(Path(state_dir) / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


async def release_dead_leases(sessions: Sessions, writers: WriterQueue, replica: str,
                              owner: str) -> int:
    """This replica's earlier process is dead (we hold its lock): free the deployments,
    clicks, mirror statuses and Slack messages it had claimed, so they go on now rather
    than after a lease."""
    prefix = f"{replica}/"
    async with writers(), sessions() as session:
        freed = await session.exec(update(Deployment)  # type: ignore[call-overload]
                                   .where(col(Deployment.lease_owner).startswith(
                                       prefix, autoescape=True),
                                          col(Deployment.lease_owner) != owner)
                                   .values(lease_owner=None, lease_until=None,
                                           row_version=col(Deployment.row_version) + 1))
        await session.exec(update(InboundRequest)  # type: ignore[call-overload]
                           .where(col(InboundRequest.claimed_by).startswith(
                               prefix, autoescape=True),
                                  col(InboundRequest.claimed_by) != owner)
                           .values(claim_until=None))
        for claims in (MirrorEvent, Outbox):
            await session.exec(update(claims)  # type: ignore[call-overload]
                               .where(col(claims.claimed_by).startswith(prefix, autoescape=True),
                                      col(claims.claimed_by) != owner,
                                      col(claims.delivered_at).is_(None))
                               .values(claim_until=None))
        await session.commit()
    if freed.rowcount:
        log.warning("replica %s restarted: took back %d deployment(s) its last process had "
                    "claimed", replica, freed.rowcount)
    return int(freed.rowcount or 0)


class Heartbeat:
    """This replica's row in ``Replica``: renewed while it runs, deleted when it leaves."""

    def __init__(self, sessions: Sessions, clock: Clock, lease: timedelta,
                 writers: WriterQueue, replica: str = "") -> None:
        self.sessions, self.clock, self.lease, self.writers = sessions, clock, lease, writers
        self.replica = replica

    async def beat(self) -> None:
        """Renew the row, or add it. Two processes may beat for one replica id at once (two
        bots sharing a state directory, a restart overlapping the old process): whoever
        loses the insert renews the row the other added, instead of failing to start."""
        now = self.clock()
        async with self.writers(), self.sessions() as session:
            # An upsert: two processes of one replica may start at once (merge would race).
            dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
            row = dialect.insert(Replica).values(id=self.replica, alive_until=now + self.lease)
            await session.exec(row.on_conflict_do_update(  # type: ignore[call-overload]
                index_elements=[col(Replica.id)],
                set_={"alive_until": row.excluded.alive_until}))
            await session.exec(delete(Replica).where(  # type: ignore[call-overload]
                col(Replica.alive_until) < now - FORGET_AFTER))
            await session.commit()

    async def leave(self) -> None:
        """Give this replica's runs up: another replica takes them over at its next tick."""
        async with self.writers(), self.sessions() as session:
            await session.exec(delete(Replica).where(  # type: ignore[call-overload]
                col(Replica.id) == self.replica))
            await session.commit()


def claimable(replica: str, now: object) -> ColumnElement[bool]:
    """No run, a run of ours, or one whose replica is no longer alive."""
    alive = select(Replica.id).where(col(Replica.id) == col(Deployment.run_owner),
                                     col(Replica.alive_until) > now)
    return or_(col(Deployment.run_owner).is_(None), col(Deployment.run_owner) == replica,
               ~exists(alive))


def live_run(dep: Deployment) -> str | None:
    """The id of the run the deployment waits for in its current state, if any."""
    state = State(dep.state)
    if state is State.BUILDING:
        return dep.ci_run_id
    if state is State.DEPLOYING:
        return dep.action_run_id or dep.deploy_run_id
    if state in (State.VERIFYING, State.PROMOTING, State.ROLLING_BACK, State.PAUSED):
        return dep.action_run_id
    return None


def take_over(ctx: StepContext, dep: Deployment, replica: str) -> None:
    """The replica that started this deployment's run is gone: forget the run so the step
    starts it again, under the same key (see the module docstring), and say so."""
    gone, what = dep.run_owner, _doing(dep)
    if State(dep.state) is State.BUILDING:
        dep.ci_run_id, dep.ci_url = None, None
        dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.ci_timeout)
    elif State(dep.state) is State.DEPLOYING:
        dep.deploy_run_id = dep.action_run_id = None
        dep.step_deadline_at = ctx.now + timedelta(seconds=ctx.providers.deploy_timeout)
    else:
        dep.action_run_id = None
    dep.run_owner = replica
    log.warning("deployment %s: replica %s is gone; %s takes over the %s", dep.id, gone,
                replica, what)
    note(ctx.session, dep, facts.TakenOver(what=what, gone=str(gone), replica=replica),
         now=ctx.now)


def _doing(dep: Deployment) -> str:
    state = State(dep.state)
    if state is State.BUILDING:
        return "build"
    if state is State.DEPLOYING:
        return "deploy"
    return "rollback" if state is State.ROLLING_BACK else "traffic change"


def renewing(sessions: Sessions, writers: WriterQueue, clock: Clock, lease: timedelta,
             dep_id: int, owner: str) -> contextlib.AbstractAsyncContextManager[None]:
    """Keep ``owner``'s lease on the deployment while a step runs (HTTP checks with
    retries, a slow provider call), so no other replica runs the same step meanwhile.
    The row version is left alone: the step's own commit must still succeed."""
    return leases.renewing(sessions, writers, lease, lambda: (
        update(Deployment).where(col(Deployment.id) == dep_id,
                                 col(Deployment.lease_owner) == owner)
        .values(lease_until=clock() + lease)), f"the lease on deployment {dep_id}",
        exclusive=True)
