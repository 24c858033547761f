"""Two replicas on one PostgreSQL, each with its own state directory (two pods, no shared
volume): a long build runs once, a dead replica's run is taken over, a long step keeps
its lease, and a SIGTERM-style stop hands everything back at once.

Real bots on loopback (LocalBot), one fake Slack, short leases (SHIPBOT_LEASE_SECONDS,
read from the environment like in production) and tests/scripts/step.py as the build.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlmodel import select

from bot.clock import as_utc
from bot.config import ShipbotConfig
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.engine.machine import State
from bot.engine.runner import LEASE, Runner
from bot.store.models import Deployment, Replica
from integrations.base import JobSpec, RunState, RunStatus
from tests.conftest import FakeClock, eventually, make_config, serving, step
from tests.test_rollout_controls import actions_run, canary, running_action, slow
from tests.test_runner_safety import QUIET, get, insert, no_ci, thread_notes
from tests.test_strategies import config as strategy_config

pytest_plugins = ["tests.postgres_fixture"]

LEASE_SECONDS = 1.2  # a loaded 2-core CI machine stalls the loop for tenths of a second
BUILD_SECONDS = 4.0  # more than three lease periods
Launch = Callable[..., Awaitable[LocalBot]]


@pytest.fixture
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPBOT_LEASE_SECONDS", str(LEASE_SECONDS))
    monkeypatch.setenv("SHIPBOT_SHUTDOWN_GRACE_SECONDS", "1")


@pytest.fixture
async def replica(tmp_path: Path, migrated_postgres_url: str, quiet: FakeSlack,
                  short_leases: None) -> AsyncIterator[Launch]:
    """Start a replica ``name`` on the shared database, with its own state directory."""
    bots: list[LocalBot] = []

    async def launch(config: ShipbotConfig, name: str, **kwargs: Any) -> LocalBot:
        bot = LocalBot(config, database_url=migrated_postgres_url, state_dir=tmp_path / name,
                       fake_slack=quiet, tick_seconds=0.1, **kwargs)
        await bot.start()
        bots.append(bot)
        return bot

    yield launch
    for bot in bots:
        await bot.stop()


def long_build(tmp_path: Path) -> ShipbotConfig:
    return make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_SLEEP=BUILD_SECONDS,
                                         STEP_MARK=tmp_path / "build-started"))


def runs(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def only_deployment(bot: LocalBot) -> Deployment:
    async with bot.bot.sessions() as session:
        [dep] = (await session.exec(select(Deployment))).all()
        return dep


async def finished(bot: LocalBot) -> Deployment:
    async def check() -> Deployment | None:
        dep = await only_deployment(bot)
        return dep if dep.finished_at is not None else None

    return await eventually(check, timeout=30)


def step_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "bot.engine.runner" and r.levelno >= logging.WARNING]


def crash(bot: LocalBot) -> None:
    """As if the pod died: no more ticks, wake-ups or heartbeats, nothing released (a step
    under way may still finish, as one a moment before the crash would have)."""
    bot.bot.scheduler.shutdown(wait=False)
    runner = bot.bot.runner
    runner._draining = True  # claims nothing more, and hands nothing back
    if runner.wakeups is not None:
        runner.wakeups.cancel()


async def test_two_replicas_finish_a_long_build_exactly_once(
        replica: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = long_build(tmp_path)
    first, _second = await replica(config, "pod-a"), await replica(config, "pod-b")

    await first.driver.command("api dev v1.4.2")
    dep = await finished(first)

    assert dep.state == "succeeded", dep.detail
    assert runs(tmp_path / "ci.log") == [["api", "dev", "v1.4.2"]]
    assert runs(tmp_path / "deploy.log") == [["api", "dev", "v1.4.2"]]
    assert step_failures(caplog) == []
    assert not any("took over" in t for t in await thread_notes(first, dep.id or 0))


async def test_a_replica_that_dies_mid_build_is_taken_over_and_the_build_repeated(
        replica: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The command provider cannot see a run on another machine: it runs it again."""
    config = long_build(tmp_path)
    bots = [await replica(config, "pod-a"), await replica(config, "pod-b")]
    await bots[0].driver.command("api dev v1.4.2")

    async def building() -> list[LocalBot]:  # the one whose disk holds the build's run
        if (await only_deployment(bots[0])).state != State.BUILDING:
            return []
        return [b for b in bots if (b.state_dir / "ci").is_dir()]

    [dead] = await eventually(building)
    [alive] = [b for b in bots if b is not dead]
    crash(dead)
    dep = await finished(alive)

    assert dep.state == "succeeded", dep.detail
    assert runs(tmp_path / "ci.log") == [["api", "dev", "v1.4.2"]] * 2  # once more, only
    assert runs(tmp_path / "deploy.log") == [["api", "dev", "v1.4.2"]]
    notes = await thread_notes(alive, dep.id or 0)
    assert sum("took over and starts the build again" in t for t in notes) == 1, notes
    assert step_failures(caplog) == []


@pytest.fixture
async def slow_health() -> AsyncIterator[dict[str, Any]]:
    """A /healthz answering 503 a few times (a version warming up), then 200; counts hits.
    ``open`` cleared makes it hang instead (a check that would run for a minute)."""
    opened = asyncio.Event()
    opened.set()
    state: dict[str, Any] = {"hits": 0, "failures": 3, "open": opened}

    async def healthz(request: web.Request) -> web.Response:
        state["hits"] += 1
        await state["open"].wait()
        ok = state["hits"] > state["failures"]
        return web.Response(status=200 if ok else 503, text="ok" if ok else "warming up")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    async with serving(app) as port:
        state["url"] = f"http://127.0.0.1:{port}/healthz"
        yield state


def checked(tmp_path: Path, health: dict[str, Any], interval: float) -> ShipbotConfig:
    check = {"name": "healthz", "url": health["url"], "timeout_seconds": 60, "retries": 5,
             "retry_interval_seconds": interval}
    return strategy_config(tmp_path, {"kind": "rolling", "checks": [check]})


async def test_a_check_retrying_for_several_leases_is_not_run_again_by_the_other(
        replica: Launch, tmp_path: Path, slow_health: dict[str, Any],
        caplog: pytest.LogCaptureFixture) -> None:
    config = checked(tmp_path, slow_health, interval=LEASE_SECONDS)  # 3 retries: 3 leases
    first, _second = await replica(config, "pod-a"), await replica(config, "pod-b")

    await first.driver.command("api dev v2")
    dep = await finished(first)

    assert dep.state == "succeeded", dep.detail
    assert slow_health["hits"] == 4  # three 503s and the 200, asked by one replica only
    notes = await thread_notes(first, dep.id or 0)
    assert sum("Post-deploy checks passed" in t for t in notes) == 1, notes
    assert any("after 4 attempts" in t for t in notes), notes
    assert step_failures(caplog) == []


async def test_a_slow_provider_call_keeps_its_lease(
        make_bot: Launch, tmp_path: Path, short_leases: None) -> None:
    """A deploy target taking longer than the lease to answer: the other runner must not
    claim the deployment and call the target a second time."""
    clock = FakeClock()
    bot = await make_bot(no_ci(tmp_path), tick_seconds=3600, clock=clock)
    other = Runner(bot.bot.sessions, bot.bot.providers, clock, bot.bot.metrics,
                   bot.bot.policy, owner="shipbot-other-replica", poll_seconds=0.1,
                   writers=bot.bot.writers)
    dep_id = await insert(bot, state=State.QUEUED)
    target = bot.bot.providers["api"].target
    calls: list[str] = []
    release = asyncio.Event()

    async def slow_start(job: JobSpec, *args: Any, **kwargs: Any) -> str:
        calls.append(job.key)
        await release.wait()  # the target's API takes its time
        return "run-1"

    target.start = slow_start  # type: ignore[method-assign]
    tick = asyncio.create_task(bot.bot.runner.tick())
    await eventually(lambda: asyncio.sleep(0, calls))
    clock.advance(seconds=LEASE.total_seconds() + 1)  # past any lease taken before the call

    async def renewed() -> bool:
        lease_until = (await get(bot, dep_id)).lease_until
        return lease_until is not None and as_utc(lease_until) > clock()

    assert await eventually(renewed)
    assert await other._claim([dep_id]) == []
    release.set()
    assert await tick == 1
    dep = await get(bot, dep_id)
    assert (dep.state, dep.deploy_run_id, len(calls)) == ("deploying", "run-1", 1)


async def test_sigterm_hands_a_running_step_back_within_the_grace_period(
        replica: Launch, tmp_path: Path, slow_health: dict[str, Any]) -> None:
    """stop() (uvicorn's lifespan shutdown on SIGTERM) while a check hangs: it returns
    after the 1 s grace instead of waiting for the step, releases the lease and gives
    the replica up, so the other one runs the step at once."""
    slow_health["failures"] = 0
    slow_health["open"].clear()
    config = checked(tmp_path, slow_health, interval=0.1)
    first = await replica(config, "pod-a")
    await first.driver.command("api dev v2")
    await eventually(lambda: asyncio.sleep(0, slow_health["hits"]))  # the check is running
    second = await replica(config, "pod-b")

    await asyncio.wait_for(first.stop(), 15)  # far less than the hanging check

    dep = await only_deployment(second)
    assert dep.state == "verifying" and dep.lease_owner != first.bot.runner.owner
    async with second.bot.sessions() as session:
        assert await session.get(Replica, first.bot.runner.replica) is None
    slow_health["open"].set()
    dep = await finished(second)
    assert dep.state == "succeeded", dep.detail
    assert slow_health["hits"] == 2  # the step handed back, then the other replica's


async def test_stopping_gives_the_replicas_runs_to_the_others_at_once(
        replica: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A graceful stop between two polls of a build: the heartbeat is deleted, not left
    to run out, so the other replica takes the build over at its next tick."""
    config = long_build(tmp_path)
    first = await replica(config, "pod-a")
    await first.driver.command("api dev v1.4.2")

    async def building() -> bool:
        return (await only_deployment(first)).state == State.BUILDING

    await eventually(building)
    second = await replica(config, "pod-b")
    await first.stop()

    async with second.bot.sessions() as session:
        assert await session.get(Replica, first.bot.runner.replica) is None
    dep = await finished(second)
    assert dep.state == "succeeded", dep.detail
    assert len(runs(tmp_path / "ci.log")) == 2
    assert step_failures(caplog) == []


async def test_a_restarted_replica_takes_back_at_once_what_its_dead_process_held(
        make_bot: Launch, tmp_path: Path) -> None:
    """Killed mid-step, the process leaves a 60 s lease behind. The next process on the
    same state directory gets its lock, so it knows that process is dead and goes on
    now; a lease of another replica's process is left to run out."""
    config = no_ci(tmp_path)
    first = await make_bot(config, tick_seconds=QUIET)
    replica_id = first.bot.runner.replica
    later = first.clock() + LEASE
    ours = await insert(first, state=State.QUEUED, lease_owner=f"{replica_id}/dead0001",
                        lease_until=later)
    theirs = await insert(first, state=State.QUEUED, env="staging", active_slot="api/staging",
                          lease_owner="other-pod-0123456789ab/dead0002", lease_until=later)
    crash(first)
    await first.stop()  # what a SIGKILL releases: the state directory's lock

    second = await make_bot(config, tick_seconds=QUIET)
    assert second.bot.runner.replica == replica_id
    await second.bot.runner.tick()  # (the start-up wake-up may have claimed it already)

    async def moved_on() -> Deployment | None:  # claimed at once: deploying, or even done
        dep = await get(second, ours)
        return dep if dep.state in (State.DEPLOYING, State.SUCCEEDED) else None

    resumed = await eventually(moved_on, timeout=10)
    assert resumed.lease_owner != f"{replica_id}/dead0001"
    untouched = await get(second, theirs)
    assert (untouched.state, untouched.lease_owner) == (State.QUEUED,
                                                        "other-pod-0123456789ab/dead0002")


async def test_a_second_live_process_on_one_state_directory_takes_nothing_back(
        make_bot: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = no_ci(tmp_path)
    first = await make_bot(config, tick_seconds=QUIET)
    held = await insert(first, state=State.QUEUED, lease_owner=first.bot.runner.owner,
                        lease_until=first.clock() + LEASE)

    second = await make_bot(config, tick_seconds=QUIET)
    await second.bot.runner.tick()

    dep = await get(second, held)
    assert (dep.state, dep.lease_owner) == (State.QUEUED, first.bot.runner.owner)
    assert second.bot.runner.replica != first.bot.runner.replica  # one of its own
    assert any("give each replica its own SHIPBOT_STATE_DIR" in r.getMessage()
               for r in caplog.records)


async def test_stopping_during_a_scheduled_step_hands_it_back_without_a_crash_log(
        make_bot: Launch, tmp_path: Path, short_leases: None,
        caplog: pytest.LogCaptureFixture) -> None:
    """The scheduler's own tick is mid-call to the target when SIGTERM comes: the step
    gets the grace period, is handed back, and nothing is logged as a crash (the
    scheduler used to cancel the tick under the step, logging a traceback)."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=0.05)
    calls: list[str] = []

    async def hanging_start(job: JobSpec, *args: Any, **kwargs: Any) -> str:
        calls.append(job.key)
        await asyncio.Event().wait()  # the target never answers
        return "never"

    bot.bot.providers["api"].target.start = hanging_start  # type: ignore[method-assign]
    dep_id = await insert(bot, state=State.QUEUED)  # no wake-up: the scheduler's tick
    await eventually(lambda: asyncio.sleep(0, calls))

    await asyncio.wait_for(bot.stop(), 10)

    async with bot.bot.sessions() as session:  # stop() disposed the pool, not the file
        dep = await session.get(Deployment, dep_id)
    assert dep is not None and (dep.state, dep.lease_owner) == (State.QUEUED, None)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert any("handing a step still running back" in r.getMessage()
               for r in caplog.records)


async def test_a_build_is_cancelled_from_the_replica_that_did_not_start_it(
        replica: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Slack's request reaches either pod. The build's run lives on the other one's disk:
    the cancel stands at once and the person is told so, and the pod that started the
    build stops it (not "could not finish it just now", then "Nothing to cancel", while
    the build ran to its end)."""
    config = long_build(tmp_path)
    bots = [await replica(config, "pod-a"), await replica(config, "pod-b")]
    await bots[0].driver.command("api dev v1.4.2")

    async def building() -> list[LocalBot]:
        if (await only_deployment(bots[0])).state != State.BUILDING:
            return []
        return [b for b in bots if (b.state_dir / "ci").is_dir()]

    [owner] = await eventually(building)
    [other] = [b for b in bots if b is not owner]
    resp = await other.driver.command("cancel api dev")

    dep = await only_deployment(other)
    assert resp.json()["text"] == f"Cancelled deployment #{dep.id} of api to dev."
    assert dep.state == State.CANCELLED and dep.ci_run_id is not None

    async def stopped() -> RunStatus | None:
        status = await owner.bot.providers["api"].ci.poll(dep.ci_run_id)  # type: ignore[union-attr, arg-type]
        return status if status.state is not RunState.RUNNING else None

    status = await eventually(stopped, timeout=BUILD_SECONDS)  # well before it would end
    assert status.state is RunState.FAILED and "cancel" in status.detail.lower(), status

    async def stop_recorded() -> bool:  # committed once the owner's step has stopped it
        return (await only_deployment(other)).stop_run is None
    await eventually(stop_recorded)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("attempt", range(5))
async def test_two_processes_beating_for_one_replica_both_start(tmp_path: Path, attempt) -> None:
    """Two bots on one state directory (or a restart overlapping the old process) add the
    replica's heartbeat row at once: the loser renews the winner's row, no crash."""
    from bot.engine.replicas import Heartbeat
    from bot.store.db import create_engine, create_schema, session_factory
    from bot.store.writers import WriterQueue

    url = f"sqlite:///{tmp_path}/beat.db"
    engines = [create_engine(url) for _ in range(2)]
    await create_schema(engines[0])
    clock = FakeClock()
    beats = [Heartbeat(session_factory(e), clock, LEASE, WriterQueue(url), "replica-a")
             for e in engines]
    try:
        before = clock()
        await asyncio.gather(*(b.beat() for b in beats))
        async with session_factory(engines[0])() as session:
            rows = (await session.exec(select(Replica))).all()
        assert [r.id for r in rows] == ["replica-a"]
        assert before + LEASE <= as_utc(rows[0].alive_until) <= clock() + LEASE
    finally:
        for engine in engines:
            await engine.dispose()


async def test_an_abort_from_the_other_replica_stops_the_traffic_change_where_it_runs(
        replica: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Abort lands on the pod that did not start the shift to 5 %: the pod that did stops
    it before the rollback starts, so it cannot finish after the undo."""
    config = canary(tmp_path, set_weight=slow("set_weight", 30))
    bots = [await replica(config, "pod-a"), await replica(config, "pod-b")]
    await bots[0].driver.command("api dev v2.0.0")
    shift = await running_action(bots[0], tmp_path, ["set_weight", "api", "5"])
    dep = await only_deployment(bots[0])
    [owner] = [b for b in bots if b.bot.runner.replica == dep.run_owner]
    [other] = [b for b in bots if b is not owner]

    resp = await other.driver.command("abort api dev")

    assert resp.json()["text"] == "Rolling back deployment #1."
    status = await owner.bot.providers["api"].target.poll(shift)

    async def stopped() -> bool:
        nonlocal status
        status = await owner.bot.providers["api"].target.poll(shift)
        return status.state is not RunState.RUNNING

    await eventually(stopped, timeout=10)
    assert status.detail == "was cancelled", status
    dep = await finished(owner)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path)[-1] == ["abort", "api"]
    notes = await thread_notes(owner, dep.id or 0)
    assert not any("Could not stop" in t for t in notes), notes
