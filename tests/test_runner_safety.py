"""The runner's claim, give-up and pool limits: what keeps a race, a step that keeps
failing, or a slow target from leaving a deployment half-done or the bot stuck.

A whole Shipbot on loopback (the ``make_bot`` fixture) with the scheduler's tick far
away: each test ticks the real runner itself, or lets a command wake it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, func, select

from bot.clock import as_utc
from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from bot.engine import replicas
from bot.engine import runner as runner_module
from bot.engine.giving_up import MAX_STEP_ATTEMPTS
from bot.engine.machine import State
from bot.engine.requests import Cancel
from bot.engine.runner import Runner
from bot.slack.notes import words_of
from bot.store.db import create_engine, create_schema, session_factory
from bot.store.models import Deployment, Outbox
from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from tests.conftest import FakeClock, eventually, make_config
from tests.test_deploy_flow import finished
from tests.test_strategies import actions_run, config, said

pytest_plugins = ["tests.postgres_fixture"]

Launch = Callable[..., Awaitable[LocalBot]]
QUIET = 3600.0  # the scheduler's tick: never, within a test


def no_ci(tmp_path: Path) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    data["services"]["api"]["ci"] = None
    return parse_config(data)


async def insert(bot: LocalBot, **fields: Any) -> int:
    """A deployment row as the engine would have left it (state, stage, run ids)."""
    now = bot.clock()
    row: dict[str, Any] = dict(
        request_key=f"k-{time.monotonic_ns()}", service="api", env="dev", version="v2",
        previous_version="v1", requester="U0ALICE", state=State.REQUESTED,
        channel="#deploys-api", created_at=now, updated_at=now, active_slot="api/dev",
        next_action_at=now)
    row.update(fields)
    async with bot.bot.sessions() as session:
        dep = Deployment(**row)
        session.add(dep)
        await session.commit()
        assert dep.id is not None
        return dep.id


async def get(bot: LocalBot, dep_id: int) -> Deployment:
    async with bot.bot.sessions() as session:
        dep = await session.get(Deployment, dep_id)
        assert dep is not None
        return dep


async def thread_notes(bot: LocalBot, dep_id: int) -> list[str]:
    """The deployment's thread messages queued so far, in words."""
    async with bot.bot.sessions() as session:
        rows = (await session.exec(
            select(Outbox).where(Outbox.deployment_id == dep_id, Outbox.kind == "thread")
            .order_by(col(Outbox.id)))).all()
    return [words_of(row)[0] for row in rows]


# --- A: the claim against a person's change -------------------------------------------


async def test_a_cancel_racing_the_claim_never_cancels_a_deploy_being_started(
        make_bot: Launch, tmp_path: Path) -> None:
    """The cancel reads the row, the runner claims it and calls the target, then the
    cancel commits: it must look again (and see the step running), not say "Nothing was
    changed" while the deploy starts."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    dep_id = await insert(bot, state=State.QUEUED)
    target = bot.bot.providers["api"].target
    started, release = asyncio.Event(), asyncio.Event()
    real_start, real_may = target.start, bot.bot.policy.may
    ticks: list[asyncio.Task[int]] = []

    async def slow_start(job: JobSpec, *args: Any, **kwargs: Any) -> str:
        started.set()
        await release.wait()  # the deploy target is being called right now
        return await real_start(job, *args, **kwargs)

    async def may(*args: Any) -> Any:  # between the cancel's read and its write
        if not ticks:
            ticks.append(asyncio.create_task(bot.bot.runner.tick()))
            await started.wait()
        return await real_may(*args)

    target.start = slow_start  # type: ignore[method-assign]
    bot.bot.policy.may = may  # type: ignore[method-assign]
    answer = await bot.bot.service.cancel(Cancel(service="api", env="dev"), "U0BOB")
    release.set()
    assert await ticks[0] == 1
    dep = await get(bot, dep_id)
    assert answer.startswith("The deployment is in the middle of a step; nothing was "
                             "cancelled."), answer
    assert dep.state == "deploying", dep.detail
    assert dep.lease_owner is None


async def test_the_claim_bumps_the_row_version_and_leases_only_due_in_flight_rows(
        make_bot: Launch, tmp_path: Path) -> None:
    """Between the tick's look at the due rows and its claim, a person may pause (a later
    deadline) or end a deployment: the claim must not lease it and run its step early."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    runner, now = bot.bot.runner, bot.clock()
    due = await insert(bot, state=State.QUEUED)
    paused = await insert(bot, state=State.PAUSED, strategy="canary", env="staging",
                          active_slot="api/staging", next_action_at=now + timedelta(minutes=30))
    cancelled = await insert(bot, state=State.CANCELLED, env="production", active_slot=None)
    before = (await get(bot, due)).row_version
    assert await runner._claim([due, paused, cancelled]) == [due]
    claimed = await get(bot, due)
    assert claimed.lease_owner == runner.owner
    assert claimed.row_version == (before or 0) + 1  # a reader from before must look again
    assert (await get(bot, paused)).lease_owner is None
    assert (await get(bot, cancelled)).lease_owner is None


async def test_a_runner_whose_lease_ran_out_does_not_release_the_next_holders(
        make_bot: Launch, tmp_path: Path) -> None:
    clock = FakeClock()
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET, clock=clock)
    first = bot.bot.runner
    second = Runner(bot.bot.sessions, bot.bot.providers, clock, bot.bot.metrics,
                    bot.bot.policy, owner="shipbot-other-replica", poll_seconds=0.1,
                    writers=bot.bot.writers)
    dep_id = await insert(bot, state=State.QUEUED)
    assert await first._claim([dep_id]) == [dep_id]
    clock.advance(seconds=runner_module.LEASE.total_seconds() + 1)  # a step ran too long
    assert await second._claim([dep_id]) == [dep_id]
    await first._release(dep_id)  # the first one's step ends: stale, it lets go
    assert (await get(bot, dep_id)).lease_owner == "shipbot-other-replica"


async def test_a_step_whose_lease_was_taken_over_says_so_in_the_log(
        make_bot: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The loop stalled past the lease and another replica claimed the deployment: the
    step's side effects may now happen twice, which an operator must be able to see."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    dep_id = await insert(bot, state=State.QUEUED, lease_owner="me",  # not due: ours alone
                          next_action_at=bot.clock() + timedelta(hours=1))
    lease = timedelta(seconds=0.3)

    async def renewed() -> datetime | None:
        until = (await get(bot, dep_id)).lease_until
        return as_utc(until) if until is not None else None

    def lost() -> list[str]:
        return [r.getMessage() for r in caplog.records if "lost" in r.getMessage()]

    async with replicas.renewing(bot.bot.sessions, bot.bot.writers, bot.clock, lease,
                                 dep_id, "me"):
        assert await eventually(renewed) > bot.clock() - lease
        async with bot.bot.sessions() as session:  # another replica claims it
            dep = await session.get(Deployment, dep_id)
            assert dep is not None
            dep.lease_owner = "shipbot-other-replica"
            session.add(dep)
            await session.commit()
        await eventually(lambda: asyncio.sleep(0, lost()))
    assert lost() == [f"the lease on deployment {dep_id} was lost: another replica took the "
                      "work over, which may now be done twice"]


# --- B: giving up after MAX_STEP_ATTEMPTS --------------------------------------------


async def test_a_canary_whose_traffic_step_keeps_erroring_is_rolled_back(
        launch: Launch, tmp_path: Path) -> None:
    """The target's API is down while the canary takes 50 %: after the retries, traffic
    goes back to the stable version (not FAILED with the split left and the slot free)."""
    bot = await launch(config(tmp_path, {"kind": "canary", "steps": [50, 100],
                                         "interval": 0.3}, traffic=True))
    target = bot.bot.providers["api"].target
    weights: set[str] = set()
    real_set_weight, real_poll = target.set_weight, target.poll

    async def set_weight(job: JobSpec, weight: int) -> str:
        run_id = await real_set_weight(job, weight)
        weights.add(run_id)
        return run_id

    async def poll(run_id: str) -> RunStatus:
        if run_id in weights:
            raise IntegrationError("kubectl: the server is currently unable to handle it")
        return await real_poll(run_id)

    target.set_weight = set_weight  # type: ignore[method-assign]
    target.poll = poll  # type: ignore[method-assign]
    await bot.driver.command("api dev v2.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path)[-2:] == [["set_weight", "api", "50"], ["abort", "api"]]
    thread = await said(bot, "Rolled back in")
    assert any(f"Rolling back api on dev: the verifying step failed {MAX_STEP_ATTEMPTS} "
               "times in a row (kubectl: the server is currently unable to handle it)" in t
               for t in thread), thread


@pytest.mark.parametrize(("state", "strategy", "ends_in"), [
    (State.VERIFYING, "canary", State.ROLLING_BACK),
    (State.PROMOTING, "blue-green", State.ROLLING_BACK),
    (State.PAUSED, "canary", State.ROLLING_BACK),  # had no way out: raised every tick
    (State.VERIFYING, "rolling", State.ROLLING_BACK),  # redeploys the previous version
    (State.AWAITING_APPROVAL, "rolling", State.EXPIRED),  # had no way out either
    (State.BUILDING, "canary", State.FAILED),
    (State.DEPLOYING, "rolling", State.FAILED),
    (State.ROLLING_BACK, "canary", State.ROLLBACK_FAILED),
])
async def test_a_step_that_keeps_erroring_ends_where_nothing_is_left_half_done(
        make_bot: Launch, tmp_path: Path, state: State, strategy: str, ends_in: State) -> None:
    """The service vanished from shipbot.yml (renamed, then the bot restarted): every
    step errors. Each tick survives, and after the retries the deployment ends safely."""
    clock = FakeClock()
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET, clock=clock)
    now = clock()
    dep_id = await insert(bot, state=state, strategy=strategy, stage=1,
                          approvals_required=1, approval_expires_at=now + timedelta(hours=1),
                          ci_run_id="ci-1", deploy_run_id="run-1")
    del bot.bot.providers["api"]
    for _ in range(MAX_STEP_ATTEMPTS):
        clock.advance(minutes=2)  # past the longest backoff
        assert await bot.bot.runner.tick() == 1
    dep = await get(bot, dep_id)
    assert dep.state == ends_in, dep.detail
    assert dep.lease_owner is None
    if ends_in is State.ROLLING_BACK:  # the next tick talks to the target
        assert dep.next_action_at is not None and dep.active_slot == "api/dev"
        assert f"failed {MAX_STEP_ATTEMPTS} times in a row" in dep.detail
    else:
        assert dep.finished_at is not None and dep.active_slot is None
    notes = await thread_notes(bot, dep_id)
    if ends_in is State.EXPIRED:
        assert any("*Request expired:*" in n and "internal error (KeyError)" in n and
                   "Nothing was deployed" in n and "`/deploy api dev v2`" in n
                   for n in notes), notes
        async with bot.bot.sessions() as session:  # the approval request is re-rendered
            kinds = (await session.exec(
                select(Outbox.kind).where(Outbox.deployment_id == dep_id))).all()
        assert "approval" in kinds


async def test_an_error_while_recording_a_failed_step_does_not_stop_the_tick(
        make_bot: Launch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """If giving up fails too (a bug, a constraint), the tick still advances the others;
    the deployment is logged, pushed back and its lease freed, to be tried again later."""
    clock = FakeClock()
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET, clock=clock)
    runner = bot.bot.runner
    broken = await insert(bot, state=State.VERIFYING, strategy="canary",
                          service="web", active_slot="web/dev",
                          step_attempts=MAX_STEP_ATTEMPTS - 1)
    fine = await insert(bot, state=State.QUEUED)
    del bot.bot.providers["web"]

    def give_up(*args: Any) -> None:
        raise RuntimeError("bug while giving up")

    runner._give_up = give_up  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="bot.engine.runner"):
        assert await runner.tick() == 2
    dep = await get(bot, broken)
    assert dep.state == "verifying" and dep.lease_owner is None
    assert dep.next_action_at is not None
    assert as_utc(dep.next_action_at) > clock() + timedelta(seconds=50)
    assert any("pushed back" in r.getMessage() for r in caplog.records)
    assert (await get(bot, fine)).state == "deploying"


# --- C: connection pools ---------------------------------------------------------------


async def test_steps_waiting_on_a_slow_target_hold_no_postgres_connection(
        migrated_postgres_url: str, make_bot: Launch, tmp_path: Path) -> None:
    """A step gives its connection back before it calls the target: with more due
    deployments than the pool, a slash command's ack must not wait for the slowest step."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET, database_url=migrated_postgres_url)
    for i in range(50):  # more than the pool's 10 + 30
        await insert(bot, state=State.DEPLOYING, deploy_run_id=f"run-{i}",
                     active_slot=f"api/dev-{i}")

    release = asyncio.Event()
    waiting: list[str] = []

    async def slow_poll(run_id: str) -> RunStatus:  # kubectl, a webhook, a slow CLI
        waiting.append(run_id)
        await release.wait()
        return RunStatus(state=RunState.RUNNING)

    bot.bot.providers["api"].target.poll = slow_poll  # type: ignore[method-assign]
    pool: Any = bot.bot.db.pool
    tick = asyncio.create_task(bot.bot.runner.tick())
    await eventually(lambda: asyncio.sleep(0, len(waiting) == 50))  # all under way at once
    assert pool.checkedout() <= 2  # none held across the target's I/O
    async with asyncio.timeout(5), bot.bot.sessions() as session:  # what an ack does first
        await session.exec(select(func.count()).select_from(Deployment))
    assert not tick.done()
    release.set()
    assert await tick == 50


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
async def test_an_in_memory_sqlite_database_still_works(url: str) -> None:
    """Pool sizing applies to database files; an in-memory one has a single connection."""
    engine = create_engine(url)
    try:
        await create_schema(engine)
        async with session_factory(engine)() as session:
            count = await session.exec(select(func.count()).select_from(Deployment))
            assert count.one() == 0
            session.add(Outbox(kind="announce", created_at=FakeClock()()))
            await session.commit()
    finally:
        await engine.dispose()


async def test_a_step_stuck_on_its_target_does_not_hold_up_later_ticks(
        make_bot: Launch, tmp_path: Path) -> None:
    """A target that takes 30 s to answer keeps its own step waiting, nothing else: the
    next tick claims and advances what became due meanwhile."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    stuck = await insert(bot, state=State.DEPLOYING, deploy_run_id="stuck-run")
    release = asyncio.Event()
    target = bot.bot.providers["api"].target
    real_poll = target.poll

    async def poll(run_id: str) -> RunStatus:
        if run_id == "stuck-run":
            await release.wait()
            return RunStatus(state=RunState.RUNNING)
        return await real_poll(run_id)

    target.poll = poll  # type: ignore[method-assign]
    first = asyncio.create_task(bot.bot.runner.tick())
    await eventually(lambda: asyncio.sleep(0, bot.bot.runner._steps))  # stuck in its poll
    later = await insert(bot, state=State.QUEUED, env="staging", active_slot="api/staging")
    second = asyncio.create_task(bot.bot.runner.tick())

    async def moved_on() -> bool:  # deploying, or done already: the deploy is a script
        return (await get(bot, later)).state != "queued"

    await eventually(moved_on, timeout=10)  # advanced while the first step still waits
    assert not first.done() and (await get(bot, stuck)).state == "deploying"
    release.set()  # a tick ends once what was under way at its start has been advanced
    assert (await first, await second) == (1, 2)  # the second counts the one it waited for


async def test_a_step_whose_lease_lapsed_is_not_started_again_by_its_own_process(
        make_bot: Launch, tmp_path: Path) -> None:
    """The database was away long enough for a running step's lease to lapse: another
    tick of the same process must not start a second step of that deployment."""
    clock = FakeClock()
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET, clock=clock)
    await insert(bot, state=State.DEPLOYING, deploy_run_id="stuck-run")
    release, polls = asyncio.Event(), []

    async def poll(run_id: str) -> RunStatus:
        polls.append(run_id)
        await release.wait()
        return RunStatus(state=RunState.RUNNING)

    bot.bot.providers["api"].target.poll = poll  # type: ignore[method-assign]
    first = asyncio.create_task(bot.bot.runner.tick())
    await eventually(lambda: asyncio.sleep(0, polls))
    clock.advance(seconds=runner_module.LEASE.total_seconds() + 1)  # the lease lapsed
    assert await bot.bot.runner.tick(under_way=False) == 0
    assert polls == ["stuck-run"]  # one step, not two
    release.set()
    assert await first == 1


# --- D: steps start when they are due, not at the next tick -----------------------------


async def test_a_deployment_polling_its_target_is_advanced_when_due_without_a_tick(
        make_bot: Launch, tmp_path: Path) -> None:
    """A step that waits (poll the run again in 0.1 s) was due just after the tick that
    ran it, so it waited for the tick after next: nearly a whole tick on every step. The
    runner wakes at the due time of what it advanced, so a deployment goes on with no
    scheduler tick at all."""
    bot = await make_bot(no_ci(tmp_path), tick_seconds=QUIET)
    dep_id = await insert(bot, state=State.QUEUED)
    assert await bot.bot.runner.tick() == 1  # the deploy started; polled from here on

    async def done() -> bool:
        return (await get(bot, dep_id)).state == "succeeded"

    await eventually(done, timeout=30)
    assert actions_run(tmp_path) == [["api", "dev", "v2"]]  # deployed once
