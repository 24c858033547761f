"""The read commands' queries, rewritten for a long history, answer as before.

`/deploy status` reads what runs on each slot from ``SlotVersion``, which the state
machine writes as a deployment succeeds. Whatever the history (failures, rollbacks,
cancellations, rollback deployments, work in flight), it must show exactly what the
aggregate it replaced showed: each slot's highest-id deployment in state ``succeeded``.
`/deploy audit` merges two queries where it had one with OR."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, func, select, update

from bot.config import parse_config
from bot.engine import machine, slot_versions
from bot.engine.deploys import DeployService
from bot.engine.guards import GuardService
from bot.engine.machine import IN_FLIGHT, InvalidTransition, State
from bot.engine.policy import Policy
from bot.engine.requests import Audit, History, Status
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import AuditEvent, Deployment, SlotVersion
from bot.store.writers import WriterQueue
from tests.test_policy import Members

pytest_plugins = ["tests.postgres_fixture"]

S = State
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
ENVS = {"api": ["dev", "staging", "production"], "web": ["dev", "staging", "production"],
        "idle": ["dev", "production"]}  # idle: configured, never deployed
# How a deployment ends: the states it goes through after REQUESTED.
PATHS: dict[str, list[State]] = {
    "rolling": [S.QUEUED, S.BUILDING, S.DEPLOYING, S.SUCCEEDED],
    "canary": [S.QUEUED, S.DEPLOYING, S.VERIFYING, S.PROMOTING, S.SUCCEEDED],
    "approved": [S.AWAITING_APPROVAL, S.QUEUED, S.DEPLOYING, S.SUCCEEDED],
    "failed": [S.QUEUED, S.BUILDING, S.FAILED],
    "rolled back": [S.QUEUED, S.DEPLOYING, S.VERIFYING, S.ROLLING_BACK, S.ROLLED_BACK],
    "rollback failed": [S.QUEUED, S.DEPLOYING, S.ROLLING_BACK, S.ROLLBACK_FAILED],
    "cancelled": [S.QUEUED, S.CANCELLED],
    "rejected": [S.AWAITING_APPROVAL, S.REJECTED],
    "expired": [S.AWAITING_APPROVAL, S.EXPIRED],
    "in flight": [S.QUEUED, S.DEPLOYING, S.PAUSED],
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def sessions(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Sessions]:
    url = (f"sqlite:///{tmp_path}/status.db" if request.param == "sqlite"
           else request.getfixturevalue("migrated_postgres_url"))
    engine = create_engine(url)
    await create_schema(engine)
    yield session_factory(engine)
    await engine.dispose()


def policy_of() -> Policy:
    return Policy(parse_config({
        "environments": {"dev": {}, "staging": {}, "production": {"approval": False}},
        "services": {name: {"channel": f"#deploys-{name}", "environments": envs,
                            "deploy": {"provider": "command", "argv": ["true"]}}
                     for name, envs in ENVS.items()},
    }), Members(set()))


def service_of(sessions: Sessions) -> DeployService:
    return DeployService(sessions, policy_of(), {}, lambda: NOW)


async def deploy(sessions: Sessions, n: int, service: str, env: str, path: list[State],
                 kind: str = "deploy") -> int:
    """One deployment through the machine, as the runner moves it (succeed included)."""
    at = NOW + timedelta(minutes=n)
    async with sessions() as session:
        dep = await machine.create(session, Deployment(
            request_key=f"k{n}", service=service, env=env, version=f"v{n}", kind=kind,
            requester=f"U0{n}", state="", channel="#d", created_at=at, updated_at=at),
            actor="U0BOB", now=at)
        for to in path:
            if to is S.SUCCEEDED:
                await machine.succeed(session, dep, actor="shipbot", now=at)
            else:
                machine.transition(session, dep, to, actor="shipbot", now=at)
        await session.commit()
        assert dep.id is not None
        return dep.id


async def random_history(sessions: Sessions, seed: int, count: int) -> None:
    """``count`` finished deployments over every slot (and a slot Shipbot is not
    configured for), then one in flight on about half of the slots."""
    rng = random.Random(seed)
    slots = [(s, e) for s, envs in ENVS.items() if s != "idle" for e in envs]
    slots.append(("retired", "dev"))
    ends = [name for name in PATHS if name != "in flight"]
    for n in range(count):
        name = rng.choice(ends)
        kind = "rollback" if name in ("rolling", "failed") and rng.random() < 0.3 else "deploy"
        await deploy(sessions, n, *rng.choice(slots), PATHS[name], kind=kind)
    for n, slot in enumerate(rng.sample(slots, len(slots) // 2), start=count):
        await deploy(sessions, n, *slot, PATHS["in flight"][:rng.randrange(4)])


async def old_status(sessions: Sessions, service: str | None = None
                     ) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    """What `/deploy status` computed before SlotVersion: max(id) of each slot's successes."""
    newest = select(Deployment.service, Deployment.env, func.max(Deployment.id)).where(
        col(Deployment.state) == S.SUCCEEDED).group_by(col(Deployment.service),
                                                        col(Deployment.env))
    running = select(Deployment.service, Deployment.env, Deployment.id).where(
        col(Deployment.state).in_([s.value for s in IN_FLIGHT]))
    async with sessions() as session:
        current = {(s, e): i for s, e, i in (await session.exec(newest)).all()}
        moving = {(s, e): i for s, e, i in (await session.exec(running)).all()}
    return {(s, e): (current.get((s, e)), moving.get((s, e)))
            for s, envs in ENVS.items() if service in (None, s) for e in envs}


async def new_status(sessions: Sessions, service: str | None = None
                     ) -> dict[tuple[str, str], tuple[int | None, int | None]]:
    slots = await service_of(sessions).status(Status(service=service), ENVS)
    return {(s.service, s.env): (s.current.id if s.current else None,
                                 s.in_progress.id if s.in_progress else None) for s in slots}


@pytest.mark.parametrize("seed", [1, 2])
async def test_status_shows_what_the_old_aggregate_showed(sessions: Sessions, seed: int):
    await random_history(sessions, seed, count=80)

    expected = await old_status(sessions)
    assert await new_status(sessions) == expected
    async with sessions() as session:  # and it shows what that deployment was
        for slot in await service_of(sessions).status(Status(), ENVS):
            if slot.current is not None:
                dep = await session.get(Deployment, slot.current.id)
                assert dep is not None
                assert tuple(slot.current) == (dep.id, dep.version, dep.requester, dep.state,
                                                 dep.created_at, dep.finished_at)
    assert await new_status(sessions, "api") == await old_status(sessions, "api")
    # The history is varied enough to mean something: slots with and without a success,
    # with work in flight, and successes that are not a slot's last deployment.
    currents = [c for c, _ in expected.values()]
    assert None in currents and any(c is not None for c in currents)
    assert any(m is not None for _, m in expected.values())
    assert expected[("idle", "dev")] == (None, None)


async def test_a_rollback_deployment_is_what_runs_a_rolled_back_one_is_not(sessions):
    """Only state ``succeeded`` counts, as before: a rollback deployment that succeeded
    runs there; a deployment undone (rolled back) leaves the previous success current."""
    first = await deploy(sessions, 1, "api", "dev", PATHS["rolling"])
    await deploy(sessions, 2, "api", "dev", PATHS["rolled back"])
    assert (await new_status(sessions, "api"))[("api", "dev")] == (first, None)
    back = await deploy(sessions, 3, "api", "dev", PATHS["rolling"], kind="rollback")
    await deploy(sessions, 4, "api", "dev", PATHS["failed"])
    assert (await new_status(sessions, "api"))[("api", "dev")] == (back, None)


async def test_a_slot_keeps_its_newest_success_against_a_stale_read(sessions):
    """Two successes of one slot never race (one deployment at a time); should one be
    recorded from a read older than another's commit, the higher id stays current."""
    await deploy(sessions, 1, "api", "dev", PATHS["rolling"])
    mid = await deploy(sessions, 2, "api", "dev", PATHS["in flight"][:2])
    newer = await deploy(sessions, 3, "web", "dev", PATHS["rolling"])
    async with sessions() as session:
        dep = await session.get(Deployment, mid)
        assert dep is not None
        stale = await session.get(SlotVersion, ("api", "dev"))  # names the first one
        async with sessions() as other:  # meanwhile a newer success is committed
            row = await other.get(SlotVersion, ("api", "dev"))
            assert row is not None and stale is not None and row.deployment_id < mid
            copy = await other.get(SlotVersion, ("web", "dev"))
            assert copy is not None and copy.deployment_id == newer
            row.deployment_id, row.version = copy.deployment_id, copy.version
            row.requester, row.created_at = copy.requester, copy.created_at
            row.finished_at = copy.finished_at
            other.add(row)
            await other.commit()
        await machine.succeed(session, dep, actor="shipbot", now=NOW)
        await session.commit()
    async with sessions() as session:
        row = await session.get(SlotVersion, ("api", "dev"))
        assert row is not None
        assert (row.deployment_id, row.version, row.requester) == (newer, "v3", "U03")


async def succeed_the_old_way(sessions: Sessions, n: int, service: str, env: str) -> int:
    """A success recorded as code before SlotVersion did (a replica not yet upgraded)."""
    dep_id = await deploy(sessions, n, service, env, [S.QUEUED, S.DEPLOYING])
    async with sessions() as session:
        await session.exec(update(Deployment).where(col(Deployment.id) == dep_id).values(
            state=S.SUCCEEDED, active_slot=None, finished_at=NOW))
        await session.commit()
    return dep_id


async def test_successes_an_older_replica_recorded_are_mended(sessions):
    await random_history(sessions, 3, count=40)  # "idle" is left alone there
    await deploy(sessions, 89, "idle", "production", PATHS["rolling"])
    await succeed_the_old_way(sessions, 90, "idle", "production")  # the slot had a row
    await succeed_the_old_way(sessions, 91, "idle", "dev")  # its first success: no row
    expected = await old_status(sessions)
    assert await new_status(sessions) != expected

    assert await slot_versions.mend(sessions, WriterQueue("")) == 2
    assert await new_status(sessions) == expected
    assert await slot_versions.mend(sessions, WriterQueue("")) == 0


async def test_succeeded_is_reached_only_through_succeed(sessions):
    """So no path to SUCCEEDED can forget what the slot runs now."""
    dep_id = await deploy(sessions, 1, "api", "dev", [S.QUEUED, S.DEPLOYING])
    async with sessions() as session:
        dep = await session.get(Deployment, dep_id)
        assert dep is not None
        with pytest.raises(InvalidTransition, match=r"use machine\.succeed"):
            machine.transition(session, dep, S.SUCCEEDED, actor="shipbot", now=NOW)


async def test_audit_and_history_show_the_newest_rows_of_the_service(sessions):
    """Audit: the service's events and the environment-wide ones (``*``), newest first,
    as one query with OR gave them; history: the slot's or the service's newest."""
    await random_history(sessions, 3, count=30)
    async with sessions() as session:
        for n in range(6):  # environment-wide decisions, between the deployments' events
            machine.record(session, service="*", env=("dev", "production")[n % 2],
                           actor="U0CAROL", action="lock", now=NOW)
            await session.commit()
            await deploy(sessions, 100 + n, "api", "staging", PATHS["failed"])
        everything = list((await session.exec(select(AuditEvent))).all())
        deployments = list((await session.exec(select(Deployment))).all())
    guards = GuardService(sessions, policy_of(), lambda: NOW)
    for env in (None, "dev", "staging"):
        shown = [e.id for e in await guards.audit(Audit(service="api", env=env), limit=20)]
        assert shown == sorted((e.id for e in everything if e.service in ("api", "*")
                                and env in (None, e.env)), reverse=True)[:20]
        listed = [d.id for d in await service_of(sessions).history(History(service="api",
                                                                           env=env))]
        assert listed == sorted((d.id for d in deployments if d.service == "api"
                                 and env in (None, d.env)), reverse=True)[:10]
