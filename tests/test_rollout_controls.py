"""Pause, Resume, Promote and Abort never skip a step nor race the target.

End to end like tests/test_rollout_safety.py: signed commands and clicks, the real command
target (tests/scripts/step.py, or a small script for a slow or failing traffic action),
and assertions on the rows, the thread and what the target ran.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from commands.actions import ActionId
from integrations.base import RunState
from tests.conftest import FakeClock, eventually
from tests.test_buttons_and_queries import buttons, ephemerals_to
from tests.test_deploy_flow import card_text, deployments, finished
from tests.test_rollout_safety import gated_canary
from tests.test_strategies import (
    Health,
    a_few_ticks,
    actions_run,
    blue_green,
    blue_is_live,
    card_says,
    check,
    config,
    health,
    in_rollback_window,
    said,
)

__all__ = ["health"]  # the HTTP check fixture, shared with tests/test_strategies.py

# A traffic action that logs like step.py, then takes SECONDS and exits with CODE.
SLOW = ("import json, os, sys, time; argv = sys.argv[1:-2]; "
        "open(os.environ['STEP_LOG'], 'a').write(json.dumps(argv) + '\\n'); "
        "time.sleep(float(sys.argv[-2])); sys.exit(int(sys.argv[-1]))")


def slow(action: str, seconds: float, code: int = 0) -> list[str]:
    extra = ["{weight}"] if action == "set_weight" else []
    return [sys.executable, "-c", SLOW, action, "{service}", *extra, str(seconds), str(code)]


def with_argv(cfg: ShipbotConfig, **argv: list[str]) -> ShipbotConfig:
    data = cfg.model_dump(mode="json")
    data["services"]["api"]["deploy"].update({f"{k}_argv": v for k, v in argv.items()})
    return parse_config(data)


def canary(tmp_path: Path, **argv: list[str]) -> ShipbotConfig:
    return with_argv(config(tmp_path, {"kind": "canary", "steps": [5, 100], "interval": 0.3,
                                       "pause_timeout": "1h"}, traffic=True), **argv)


async def running_action(bot: LocalBot, tmp_path: Path, action: list[str]) -> str:
    """Wait until the target runs ``action`` and the row knows its run; return the run."""
    async def started() -> str | None:
        [dep] = await deployments(bot)
        return dep.action_run_id if action in actions_run(tmp_path) and dep.action_run_id \
            else None

    return await eventually(started)


async def answer(bot: LocalBot, text: str) -> str:
    return (await bot.driver.command(text, user="U0BOB")).json()["text"]


async def test_resume_polls_the_traffic_change_it_paused_in(launch, tmp_path) -> None:
    """Paused while the shift to 5% runs: Resume waits for that shift (here it fails, so
    the canary rolls back) instead of skipping to the analysis at 5%."""
    bot = await launch(canary(tmp_path, set_weight=slow("set_weight", 1.5, code=4)))
    await bot.driver.command("api dev v2.0.0")
    shift = await running_action(bot, tmp_path, ["set_weight", "api", "5"])
    assert await answer(bot, "pause api dev") == "Paused deployment #1."
    assert await answer(bot, "promote api dev") == (
        "Deployment #1 is paused at shift 5% of traffic, which Promote cannot skip: press "
        "Resume to go on, and promote once it is waiting. Nothing changed.")

    assert await answer(bot, "resume api dev") == "Resumed deployment #1 at shift 5% of traffic."
    [dep] = await deployments(bot)
    assert (dep.state, dep.stage, dep.action_run_id) == ("verifying", 0, shift)
    assert await answer(bot, "promote api dev") == (
        "Deployment #1 is busy with shift 5% of traffic; promote once it is waiting. "
        "Nothing changed.")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path) == [["api", "dev", "v2.0.0"], ["set_weight", "api", "5"],
                                     ["abort", "api"]]
    thread = await said(bot, "Rolled back in")
    assert any("shift 5% of traffic failed: exited with code 4" in t for t in thread)


async def test_resume_runs_the_checks_it_paused_in(launch, tmp_path, health: Health) -> None:
    """Paused while the post-deploy checks run: Resume runs them again (they fail, so the
    canary is removed) instead of shifting users to a canary that never passed them."""
    health.status, health.delay = 503, 1.0
    cfg = config(tmp_path, {"kind": "canary", "steps": [5, 100], "interval": 0.3,
                            "checks": [check(health, retries=0)]}, traffic=True)
    bot = await launch(cfg)
    await bot.driver.command("api dev v2.0.0")
    await eventually(lambda: _asked(health))
    assert await answer(bot, "pause api dev") == "Paused deployment #1."
    await bot.next_tick()  # the tick running the checks ended (unheeded), and one more
    [dep] = await deployments(bot)
    assert (dep.state, dep.stage) == ("paused", 0), dep.detail

    health.delay = 0
    assert await answer(bot, "resume api dev") == "Resumed deployment #1 at post-deploy checks."
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path) == [["api", "dev", "v2.0.0"], ["abort", "api"]]
    assert health.hits["/healthz"] == 2
    thread = await said(bot, "Rolled back in")
    assert any("post-deploy checks failed" in t for t in thread)


async def _asked(health: Health) -> bool:
    return health.hits["/healthz"] > 0


async def test_abort_stops_the_traffic_change_still_running(launch, tmp_path) -> None:
    """Abort while the shift to 5% runs: that run is cancelled before the abort starts,
    so it cannot finish after the rollback and leave traffic on the new version."""
    bot = await launch(canary(tmp_path, set_weight=slow("set_weight", 30)))
    await bot.driver.command("api dev v2.0.0")
    shift = await running_action(bot, tmp_path, ["set_weight", "api", "5"])
    assert await answer(bot, "abort api dev") == "Rolling back deployment #1."
    target = bot.bot.providers["api"].target

    async def stopped() -> bool:
        status = await target.poll(shift)
        return status.state is not RunState.RUNNING and status.detail == "was cancelled"

    await eventually(stopped, timeout=5)
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path)[-1] == ["abort", "api"]


async def test_no_roll_back_once_the_old_version_is_being_retired(
        launch, tmp_path, health: Health) -> None:
    """Blue-green after the window: retiring blue has started. Abort would report "back on
    v1.0.0" while v1.0.0 goes away, so it is refused and the card offers no Roll back."""
    clock = FakeClock()
    cfg = with_argv(blue_green(tmp_path, health), promote=slow("promote", 2))
    bot = await launch(cfg, clock=clock)
    await blue_is_live(bot)
    await bot.driver.command("api staging v2.0.0")
    window = buttons(await in_rollback_window(bot))
    assert [b["text"]["text"] for b in window] == ["Promote", "Roll back"]
    stale = window[1]  # Roll back, on the window's card

    clock.advance(minutes=11)
    await eventually(lambda: _retiring(bot, tmp_path))
    card = await card_says(bot, "`v1.0.0` is retired; to go back later, `/rollback api "
                           "staging`.")
    assert buttons(card) == []
    await bot.driver.click(stale["action_id"], stale["value"], user="U0BOB")
    [refusal] = await ephemerals_to(bot, "U0BOB")
    assert refusal == ("Too late to roll back deployment #2 with Abort: `v1.0.0` is being "
                       "retired now. Once this finishes, use `/rollback api staging` to deploy "
                       "it again. Nothing changed.")
    _, dep = await finished(bot, 2)
    assert dep.state == "succeeded", dep.detail
    assert ["abort", "api"] not in actions_run(tmp_path)
    assert "Succeeded" in card_text(await card_says(bot, "Succeeded"))


async def _retiring(bot: LocalBot, tmp_path: Path) -> bool:
    [_, dep] = await deployments(bot)
    return ["promote", "api"] in actions_run(tmp_path) and dep.action_run_id is not None


async def test_a_pause_racing_the_runner_waits_for_its_deadline(launch, tmp_path) -> None:
    """Pause lands after the runner picked the rollout up but before it reads the row:
    the paused rollout is not due (its deadline is 30 minutes away), so nothing happens."""
    bot = await launch(gated_canary(tmp_path))
    runner, real = bot.bot.runner, bot.bot.runner.advance
    answers: list[str] = []

    async def advance(dep_id: int, *args: Any) -> None:
        [dep] = await deployments(bot)
        if not answers and (dep.state, dep.stage) == ("verifying", 1):  # the 50% bake
            answers.append(await answer(bot, "pause api dev"))
        await real(dep_id, *args)

    runner.advance = advance  # type: ignore[method-assign]
    await bot.driver.command("api dev v2.0.0")
    await eventually(lambda: _paused(bot))
    await a_few_ticks(bot)
    assert answers == ["Paused deployment #1."]
    [dep] = await deployments(bot)
    assert dep.state == "paused", dep.detail
    assert ["abort", "api"] not in actions_run(tmp_path)
    card = await card_says(bot, "Paused")
    assert ActionId.RESUME in [b["action_id"] for b in buttons(card)]


async def _paused(bot: LocalBot) -> bool:
    [dep] = await deployments(bot)
    return dep.state in ("paused", "rolling_back", "rolled_back")
