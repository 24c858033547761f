"""The GitHub Deployments mirror on several replicas (pods on one database, no shared
disk): each runs a ``MirrorDelivery`` loop over the same ``mirrorevent`` rows, and GitHub
must still get one Deployment per Shipbot deployment and each status once, in order.
A replica that dies holding a claim is taken over once its lease has run out, and the
Deployment it had created before dying is found by its key, not created again.

Two ``MirrorDelivery`` instances, each with its own engine, writer queue and provider
(as two processes have), on SQLite and on a real PostgreSQL, against the fake GitHub.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlmodel import col, select

from bot.engine.mirror_delivery import MirrorDelivery
from bot.engine.providers import ServiceProviders
from bot.engine.replicas import release_dead_leases
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import Deployment, MirrorEvent
from bot.store.writers import WriterQueue
from integrations.github_deployments import GitHubDeployments, GitHubDeploymentsConfig
from integrations.http import HttpOptions
from tests.conftest import FakeClock, eventually
from tests.fake_github import FakeGitHub
from tests.test_deploy_flow import finished
from tests.test_github_actions import TOKEN
from tests.test_github_deploy_flow import github  # noqa: F401  (fixture)
from tests.test_github_deployments import mirror_rows, mirrored_config
from tests.test_replicas import replica, short_leases  # noqa: F401  (fixtures)

pytest_plugins = ["tests.postgres_fixture"]

LEASE = timedelta(seconds=30)
STEPS = ["queued", "deploying", "verifying", "succeeded"]  # each deployment's statuses
STATES = {"queued": "queued", "deploying": "in_progress", "verifying": "in_progress",
          "succeeded": "success"}
Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


@dataclass
class Pod:
    """One replica's delivery loop, its database engine and what it sent to GitHub."""

    delivery: MirrorDelivery
    sessions: Sessions
    sent: list[str]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shipbot.db"
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def gh() -> FakeGitHub:
    return FakeGitHub(token=TOKEN)


def interleaving(gh: FakeGitHub, sent: list[str]) -> Handler:
    """GitHub over a network: the other replica runs while a request is on its way."""

    async def handle(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.002)
        response = gh.handler(request)
        sent.append(f"{request.method} {request.url.path}")
        await asyncio.sleep(0.002)
        return response

    return handle


@pytest.fixture
async def pods(database_url: str, clock: FakeClock, gh: FakeGitHub
               ) -> AsyncIterator[Callable[..., Awaitable[Pod]]]:
    """Start replica ``name``: its own engine, writer queue and GitHub client."""
    engines = []

    async def start(name: str, handler: Callable[[FakeGitHub, list[str]], Handler]
                    = interleaving) -> Pod:
        engine = create_engine(database_url)
        engines.append(engine)
        await create_schema(engine)
        sent: list[str] = []
        mirror = GitHubDeployments(
            GitHubDeploymentsConfig(repository="acme/api"),
            options=HttpOptions(transport=httpx.MockTransport(handler(gh, sent))),
            environ={"GITHUB_TOKEN": TOKEN})
        providers = {"api": ServiceProviders(ci=None, target=None,  # type: ignore[arg-type]
                                             ci_timeout=0, deploy_timeout=0, mirror=mirror)}
        sessions = session_factory(engine)
        delivery = MirrorDelivery(sessions, providers, clock, WriterQueue(database_url),
                                  owner=f"{name}/1", lease=LEASE)
        return Pod(delivery, sessions, sent)

    yield start
    for engine in engines:
        await engine.dispose()


async def queue_deployments(pod: Pod, clock: FakeClock, count: int) -> list[int]:
    """``count`` deployments whose statuses all wait for the mirror, as the engine left
    them (the card is posted, so the first status need not wait for its link)."""
    ids = []
    async with pod.sessions() as session:
        for n in range(count):
            now = clock()
            dep = Deployment(request_key=f"k{n}", service="api", env="staging",
                             version=f"v1.{n}", requester="U1", state="succeeded",
                             channel="#deploys-api", card_channel="C0DEPLOYS",
                             card_ts=f"1700000000.00010{n}", created_at=now, updated_at=now)
            session.add(dep)
            await session.flush()
            assert dep.id is not None
            ids.append(dep.id)
            for step in STEPS:
                session.add(MirrorEvent(deployment_id=dep.id, state=STATES[step],
                                        description=f"Shipbot #{dep.id}: {step}",
                                        created_at=now))
        await session.commit()
    return ids


async def rows(pod: Pod) -> list[MirrorEvent]:
    async with pod.sessions() as session:
        return list((await session.exec(select(MirrorEvent).order_by(
            col(MirrorEvent.id)))).all())


async def until_delivered(pod: Pod, *others: Pod, rounds: int = 50) -> None:
    """Every replica delivers at once, round after round, until nothing is left."""
    for _ in range(rounds):
        await asyncio.gather(*(p.delivery.deliver_pending() for p in (pod, *others)))
        if all(r.delivered_at is not None for r in await rows(pod)):
            return
    raise AssertionError(f"not delivered: {[r for r in await rows(pod) if not r.delivered_at]}")


def told(gh: FakeGitHub, deployment: int) -> list[str]:
    """The descriptions of a GitHub deployment's statuses, in the order GitHub got them."""
    return [s["description"] for s in gh.deployment_statuses.get(deployment, [])
            if s["state"] != "inactive"]


def mirrored(gh: FakeGitHub) -> dict[int, list[str]]:
    """Shipbot deployment id -> what its GitHub Deployment was told."""
    return {d["payload"]["shipbot_deployment_id"]: told(gh, number)
            for number, d in gh.deployments.items()}


async def test_two_replicas_deliver_every_status_exactly_once_in_order(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    a, b = await pods("pod-a"), await pods("pod-b")
    ids = await queue_deployments(a, clock, 3)

    await until_delivered(a, b)

    assert len(gh.deployments) == 3  # one GitHub Deployment per Shipbot deployment
    assert mirrored(gh) == {i: [f"Shipbot #{i}: {step}" for step in STEPS] for i in ids}
    assert a.sent and b.sent  # both replicas took part
    found = await rows(a)
    assert all(r.last_error is None and r.attempts == 0 for r in found)
    assert {r.claimed_by for r in found} <= {"pod-a/1", "pod-b/1"}
    async with a.sessions() as session:
        deps = (await session.exec(select(Deployment).order_by(col(Deployment.id)))).all()
    assert {d.id: d.github_deployment_id for d in deps} == {
        n: str(number) for number, d in gh.deployments.items()
        for n in [d["payload"]["shipbot_deployment_id"]]}


async def created(gh: FakeGitHub) -> bool:
    return bool(gh.deployments)


def dies_once_github_created_it(gh: FakeGitHub, sent: list[str]) -> Handler:
    """GitHub creates the deployment, and the replica dies before it hears back."""

    async def handle(request: httpx.Request) -> httpx.Response:
        response = gh.handler(request)
        sent.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path.endswith("/deployments"):
            await asyncio.Event().wait()  # hangs until the pod is killed
        return response

    return handle


async def test_a_replica_that_dies_holding_a_claim_is_taken_over_after_the_lease(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    a = await pods("pod-a", dies_once_github_created_it)
    b = await pods("pod-b")
    [dep_id] = await queue_deployments(a, clock, 1)
    dying = asyncio.get_running_loop().create_task(a.delivery.deliver_pending())
    await eventually(lambda: created(gh))
    dying.cancel()  # the pod is gone: nothing marked, its claim left in the row
    with pytest.raises(asyncio.CancelledError):
        await dying
    [first, *_] = await rows(a)
    assert (first.claimed_by, first.delivered_at) == ("pod-a/1", None)

    assert await b.delivery.deliver_pending() == 0  # the claim is still running
    assert b.sent == []
    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await b.delivery.deliver_pending() == len(STEPS)

    assert len(gh.deployments) == 1  # found by its key, not created a second time
    assert b.sent[0] == "GET /repos/acme/api/deployments"
    assert "POST /repos/acme/api/deployments" not in b.sent
    assert mirrored(gh) == {dep_id: [f"Shipbot #{dep_id}: {step}" for step in STEPS]}
    assert all(r.delivered_at is not None and r.claimed_by == "pod-b/1"
               for r in await rows(b))


def dies_once_github_has_the_status(gh: FakeGitHub, sent: list[str]) -> Handler:
    """GitHub records the first status, and the replica dies before it hears back."""

    async def handle(request: httpx.Request) -> httpx.Response:
        response = gh.handler(request)
        sent.append(f"{request.method} {request.url.path}")
        if request.method == "POST" and request.url.path.endswith("/statuses"):
            await asyncio.Event().wait()  # hangs until the pod is killed
        return response

    return handle


async def has_status(gh: FakeGitHub) -> bool:
    return any(gh.deployment_statuses.values())


async def test_a_status_sent_by_a_replica_that_died_is_not_sent_again(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    a = await pods("pod-a", dies_once_github_has_the_status)
    b = await pods("pod-b")
    [dep_id] = await queue_deployments(a, clock, 1)
    dying = asyncio.get_running_loop().create_task(a.delivery.deliver_pending())
    await eventually(lambda: has_status(gh))
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying

    clock.advance(seconds=LEASE.total_seconds() + 1)
    assert await b.delivery.deliver_pending() == len(STEPS)

    assert mirrored(gh) == {dep_id: [f"Shipbot #{dep_id}: {step}" for step in STEPS]}
    assert b.sent[:2] == ["GET /repos/acme/api/deployments",  # found by its key
                          "GET /repos/acme/api/deployments/1/statuses"]  # queued is there
    assert b.sent.count("GET /repos/acme/api/deployments/1/statuses") == 1  # only for it


async def test_a_slow_delivery_keeps_its_claim(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    """A replica still waiting for GitHub renews its lease: the other leaves it alone."""
    go_on = asyncio.Event()

    def slow(gh: FakeGitHub, sent: list[str]) -> Handler:
        async def handle(request: httpx.Request) -> httpx.Response:
            await go_on.wait()
            return await interleaving(gh, sent)(request)
        return handle

    a = await pods("pod-a", slow)
    b = await pods("pod-b")
    # Long enough that a loaded machine's stalls (tenths of a second) never let it lapse.
    a.delivery.lease = timedelta(seconds=1.2)
    b.delivery.lease = a.delivery.lease
    [dep_id] = await queue_deployments(a, clock, 1)
    slow_task = asyncio.get_running_loop().create_task(a.delivery.deliver_pending())
    await asyncio.sleep(3.0)  # more than two leases, renewed meanwhile

    assert await b.delivery.deliver_pending() == 0
    go_on.set()
    await slow_task
    await until_delivered(a, b)
    assert b.sent == [] or "POST /repos/acme/api/deployments" not in b.sent
    assert mirrored(gh) == {dep_id: [f"Shipbot #{dep_id}: {step}" for step in STEPS]}


async def test_a_failed_attempt_backs_off_on_every_replica(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    """The backoff is the row's, not the replica's: the other one does not retry early,
    and the later statuses still wait behind the first."""
    a, b = await pods("pod-a"), await pods("pod-b")
    [dep_id] = await queue_deployments(a, clock, 1)
    gh.deployments_down = True
    assert await a.delivery.deliver_pending() == 0
    first = (await rows(a))[0]
    assert first.attempts == 1 and first.last_error and "HTTP 502" in first.last_error
    gh.deployments_down = False
    assert await b.delivery.deliver_pending() == 0  # backing off (2 s)
    clock.advance(seconds=3)
    assert await b.delivery.deliver_pending() == len(STEPS)
    assert mirrored(gh) == {dep_id: [f"Shipbot #{dep_id}: {step}" for step in STEPS]}


async def test_a_restarted_replica_takes_its_dead_process_claims_back_at_once(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    """Its state directory's lock says the earlier process is dead: no lease to wait."""
    a = await pods("pod-a", dies_once_github_created_it)
    [dep_id] = await queue_deployments(a, clock, 1)
    dying = asyncio.get_running_loop().create_task(a.delivery.deliver_pending())
    await eventually(lambda: created(gh))
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying

    restarted = await pods("pod-a")
    restarted.delivery.owner = "pod-a/2"
    await release_dead_leases(restarted.sessions, WriterQueue(""), "pod-a", "pod-a/2")
    assert await restarted.delivery.deliver_pending() == len(STEPS)
    assert len(gh.deployments) == 1
    assert mirrored(gh) == {dep_id: [f"Shipbot #{dep_id}: {step}" for step in STEPS]}



async def test_only_a_deployments_oldest_row_can_be_claimed(
        pods: Callable[..., Awaitable[Pod]], clock: FakeClock, gh: FakeGitHub) -> None:
    """A replica whose list is stale (it missed the first row) cannot send a later status
    before an earlier one: the database refuses the claim."""
    a = await pods("pod-a")
    await queue_deployments(a, clock, 1)
    first, second, *_ = await rows(a)
    assert await a.delivery._claim(second) == (False, False)
    assert await a.delivery._claim(first) == (True, False)  # nobody had sent it
    assert await a.delivery._claim(first) == (False, False)  # claimed once


async def test_two_running_bots_mirror_a_deploy_once(
        replica, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    """Two bots on one PostgreSQL (test_replicas' pods), both running the mirror loop."""
    gh, base_url = github
    config = mirrored_config(tmp_path, base_url)
    first, second = await replica(config, "pod-a"), await replica(config, "pod-b")
    await first.driver.command("api staging v1.4.2")
    [dep] = await finished(first)
    assert dep.state == "succeeded", dep.detail

    async def all_delivered() -> list[MirrorEvent] | None:
        found = await mirror_rows(second)
        return found if len(found) == 3 and all(r.delivered_at for r in found) else None

    delivered = await eventually(all_delivered)  # then no claim is left to send anything
    assert len(gh.deployments) == 1
    assert gh.states(1) == ["queued", "in_progress", "success"]
    assert {r.claimed_by.split("/")[0] for r in delivered if r.claimed_by} <= {
        first.bot.runner.replica, second.bot.runner.replica}
