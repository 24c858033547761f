"""What a person sees when a build or deploy step fails the hard way: killed by a signal,
over its deadline, or its run files left corrupt by a crash."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.engine.providers import STEP_GRACE_SECONDS
from integrations.command_wrapper import process_fingerprint
from tests.conftest import FakeClock, eventually, make_config, step
from tests.test_deploy_flow import delivered, finished

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage


def last_reply(card: dict) -> str:
    return card["replies"][-1]["text"]


async def test_a_deploy_killed_by_a_signal_says_which(make_bot, tmp_path: Path) -> None:
    config = make_config(tmp_path, deploy=step(tmp_path / "deploy.log",
                                               STEP_SIGNAL=int(signal.SIGKILL)))
    bot = await make_bot(config)
    await bot.driver.command("api staging v3.1.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail == "Deploy failed: was killed by SIGKILL."
    card = await delivered(bot, "#deploys-api", replies=4)
    assert last_reply(card).startswith(":x: *Deploy failed: was killed by SIGKILL.*")


async def test_a_build_over_its_deadline_is_stopped_and_nothing_deployed(
        make_bot, tmp_path: Path) -> None:
    config = make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_SLEEP=60, timeout=1,
                                           STEP_MARK=tmp_path / "ci-started"))
    bot = await make_bot(config)
    await bot.driver.command("api staging v3.2.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    card = await delivered(bot, "#deploys-api", replies=2)
    assert last_reply(card) == (
        ":x: *Build failed: timed out after 1 s and was stopped.* staging was not touched; "
        "it has nothing deployed by Shipbot yet. To retry: `/deploy api staging v3.2.0`.")
    assert not (tmp_path / "deploy.log").exists()


async def test_a_run_whose_files_a_crash_left_corrupt_fails_with_a_reason(
        make_bot, tmp_path: Path) -> None:
    """The machine crashed mid-build: the supervisor is gone, its result half-written."""
    config = make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_SLEEP=60,
                                           STEP_MARK=tmp_path / "ci-started"))
    bot = await make_bot(config)
    await bot.driver.command("api staging v3.3.0")
    await eventually(lambda: asyncio.sleep(0, (tmp_path / "ci-started").exists()))
    [rundir] = [p.parent for p in (tmp_path / "state").glob("ci/*/spec.json")]
    # The program may start before its supervisor has written its pid down.
    await eventually(lambda: asyncio.sleep(0, (rundir / "child.pid").exists()))
    supervisor = int((rundir / "pid").read_text().split()[0])
    program = int((rundir / "child.pid").read_text().split()[0])
    os.kill(supervisor, signal.SIGKILL)
    (rundir / "result.json").write_text('{"exit_code": 0, "timed_o')  # torn write
    (rundir / "spec.json").write_text("{not json")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    card = await delivered(bot, "#deploys-api", replies=2)
    assert last_reply(card).startswith(
        ":x: *Build failed: the runner stopped without reporting a result (was the machine "
        "restarted?).* staging was not touched")
    assert not (tmp_path / "deploy.log").exists()
    # the orphaned build was stopped too (dead, or a zombie: None)
    await eventually(lambda: asyncio.sleep(0, process_fingerprint(program) is None))


@pytest.mark.parametrize("what", ["build", "deploy"])
async def test_a_step_past_the_bots_own_deadline_is_cancelled(
        make_bot, tmp_path: Path, what: str) -> None:
    """The bot's clock passes the step's deadline while the program still runs (the
    supervisor's own timer lost, e.g. the bot was down meanwhile): the bot cancels it."""
    mark = tmp_path / "started"
    slow = step(tmp_path / f"{what}.log", STEP_SLEEP=60, STEP_MARK=mark, timeout=30)
    if what == "build":
        config = make_config(tmp_path, ci=slow)
    else:
        data = make_config(tmp_path, deploy=slow).model_dump(mode="json")
        data["services"]["api"]["ci"] = None
        config = parse_config(data)
    clock = FakeClock()
    bot = await make_bot(config, clock=clock)
    await bot.driver.command("api staging v3.4.0")
    await eventually(lambda: asyncio.sleep(0, mark.exists()))
    clock.advance(seconds=30 + STEP_GRACE_SECONDS + 1)  # its timeout, and the grace after
    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail == f"The {what} did not finish in time and was stopped."
    card = await delivered(bot, "#deploys-api", replies=2)
    assert f"The {what} did not finish in time and was stopped." in last_reply(card)
    # The program was cancelled: its supervisor records that once the program has exited.
    await eventually(lambda: asyncio.sleep(0, any((tmp_path / "state").glob("**/result.json"))))
    [result] = (tmp_path / "state").glob("**/result.json")
    assert json.loads(result.read_text())["error"] == "cancelled"
