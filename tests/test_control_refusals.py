"""Rollout controls that do not apply to the deployment's state say so and change nothing."""

from __future__ import annotations

import asyncio

from tests.conftest import eventually
from tests.test_buttons_and_queries import slow_build_bot
from tests.test_deploy_flow import deployments


async def test_controls_during_a_build_change_nothing(make_bot, tmp_path) -> None:
    bot = await slow_build_bot(make_bot, tmp_path)
    await bot.driver.command("api staging v6.0.0")
    await eventually(lambda: asyncio.sleep(0, (tmp_path / "ci-started").exists()))

    async def building() -> bool:
        return [d.state for d in await deployments(bot)] == ["building"]

    await eventually(building)
    for action in ("pause", "resume", "promote", "abort"):
        text = (await bot.driver.command(f"{action} api staging")).json()["text"]
        assert text == (f"Deployment #1 is building; {action} does not apply now. "
                        "Now you can: cancel. Nothing changed."), text
    await bot.next_tick()  # the runner has had its turn since
    [dep] = await deployments(bot)
    assert (dep.state, dep.finished_at) == ("building", None)
