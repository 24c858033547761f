"""Rolling, blue-green and the strategy overrides, end to end with HTTP checks.

Every test drives the bot through its signed Slack requests, lets the real command
target run tests/scripts/step.py, asks a real HTTP server on loopback for the checks,
and asserts on what people see: the deployment's row, the actions the target ran, the
thread and the card.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from commands.actions import ActionId
from tests.conftest import STEP, FakeClock, eventually, make_config, serving, step
from tests.test_buttons_and_queries import buttons
from tests.test_deploy_flow import card_text, deployments, finished


@dataclass
class Health:
    """A service's /healthz on loopback: answers as told and counts what it was asked."""

    url: str = ""
    status: int = 200
    body: str = "ok: all good"
    hits: Counter[str] = field(default_factory=Counter)
    versions: list[str] = field(default_factory=list)
    delay: float = 0.0  # seconds before answering


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    state = Health()

    async def healthz(request: web.Request) -> web.Response:
        state.hits[request.path] += 1
        state.versions.append(request.query.get("version", ""))
        await asyncio.sleep(state.delay)
        return web.Response(status=state.status, text=state.body)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    async with serving(app) as port:
        state.url = f"http://127.0.0.1:{port}"
        yield state


def check(health: Health, **overrides: Any) -> dict[str, Any]:
    return {"name": "healthz", "url": health.url + "/healthz?version={version}",
            "expect_status": [200], "body_contains": "ok", "timeout_seconds": 2,
            "retries": 2, "retry_interval_seconds": 0.05, **overrides}


def traffic_target(tmp_path: Path) -> dict[str, Any]:
    """The command target with set_weight / promote / abort, logging each action."""
    deploy = step(tmp_path / "deploy.log")
    for action in ("set_weight", "promote", "abort"):
        extra = ["{weight}"] if action == "set_weight" else []
        deploy[f"{action}_argv"] = [sys.executable, STEP, action, "{service}", *extra]
    return deploy


def config(tmp_path: Path, strategy: dict[str, Any], *, traffic: bool = False,
           **service: Any) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    api = data["services"]["api"]
    api["ci"] = None
    api["deploy"] = traffic_target(tmp_path) if traffic else step(tmp_path / "deploy.log")
    api["strategy"] = strategy
    api.update(service)
    return parse_config(data)


def actions_run(tmp_path: Path) -> list[list[str]]:
    log = tmp_path / "deploy.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def a_few_ticks(bot: LocalBot) -> None:
    """Wait until the runner has looked at the due deployments a few times (whole ticks
    that started after this call), so "nothing happened" means the runner declined."""
    await bot.next_tick(turns=3)


async def said(bot: LocalBot, words: str, index: int = -1) -> list[str]:
    """Wait until the thread has a message containing ``words``; return the thread."""
    async def check() -> list[str] | None:
        roots = bot.slack.messages("#deploys-api")
        if not roots:
            return None
        replies = [r["text"] for r in roots[index]["replies"]]
        return replies if any(words in t for t in replies) else None

    return await eventually(check)


async def card_says(bot: LocalBot, words: str, index: int = -1) -> dict:
    async def check() -> dict | None:
        roots = bot.slack.messages("#deploys-api")
        return roots[index] if roots and words in card_text(roots[index]) else None

    return await eventually(check)


# --- rolling -------------------------------------------------------------------------


async def test_rolling_deploy_passes_its_http_checks(launch, tmp_path, health) -> None:
    bot = await launch(config(tmp_path, {"kind": "rolling", "checks": [check(health)]}))
    await bot.driver.command("api staging v1.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    assert dep.strategy == "rolling"
    assert actions_run(tmp_path) == [["api", "staging", "v1.0.0"]]  # no traffic actions
    assert health.hits["/healthz"] == 1 and health.versions == ["v1.0.0"]

    replies = await said(bot, "is live on staging")
    passed = next(t for t in replies if "Post-deploy checks passed" in t)
    assert f"healthz: GET {health.url}/healthz?version=v1.0.0 → 200" in passed
    # Checks run after the deploy and before the deployment is called live.
    assert replies.index(passed) < next(i for i, t in enumerate(replies) if "is live" in t)


@pytest.mark.parametrize(("status", "body", "why"), [
    (503, "warming up", "→ 503 (expected 200) after 3 attempts"),
    (200, "degraded: db down", "→ 200 but the body did not contain 'ok' after 3 attempts"),
])
async def test_rolling_deploy_failing_its_checks_is_rolled_back(
        launch, tmp_path, health, status, body, why) -> None:
    bot = await launch(config(tmp_path, {"kind": "rolling", "checks": [check(health)]}))
    await bot.driver.command("api staging v1.0.0")  # a good version to go back to
    [first] = await finished(bot, 1)
    assert first.state == "succeeded", first.detail
    health.hits.clear()

    health.status, health.body = status, body
    await bot.driver.command("api staging v1.1.0")
    _, dep = await finished(bot, 2)
    assert dep.state == "rolled_back", dep.detail
    assert health.hits["/healthz"] == 3  # the first try and 2 retries

    url = f"{health.url}/healthz?version=v1.1.0"
    replies = await said(bot, "Rolled back in")
    why_msg = next(t for t in replies if "Rolling back api on staging" in t)
    assert "post-deploy checks failed" in why_msg
    assert f"healthz: GET {url} {why}" in why_msg
    assert f'body: "{body}"' in why_msg  # what came back
    done = next(t for t in replies if "Rolled back in" in t)
    assert "staging is back on `v1.0.0`" in done
    assert "Fix the cause, then deploy again with `/deploy api staging v1.1.0`" in done
    # The previous version was put back through the target, and nothing else ran.
    assert actions_run(tmp_path)[-1] == ["api", "staging", "v1.0.0"]
    card = await card_says(bot, "Rolled back")
    assert "staging is back on `v1.0.0`. The thread shows what failed." in card_text(card)
    assert buttons(card) == []


async def test_first_rolling_deploy_with_failing_checks_asks_a_human(
        launch, tmp_path, health) -> None:
    health.status = 500
    bot = await launch(config(tmp_path, {"kind": "rolling",
                                           "checks": [check(health, retries=0)]}))
    await bot.driver.command("api staging v1.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rollback_failed", dep.detail
    assert health.hits["/healthz"] == 1
    assert actions_run(tmp_path) == [["api", "staging", "v1.0.0"]]  # nothing to go back to
    replies = await said(bot, "Cannot roll back")
    assert any("→ 500 (expected 200)" in t for t in replies)
    assert "Fix forward with `/deploy api staging <version>`" in replies[-1]


# --- blue-green ----------------------------------------------------------------------


def blue_green(tmp_path: Path, health: Health, **strategy: Any) -> ShipbotConfig:
    return config(tmp_path, {"kind": "blue-green", "rollback_window": "10m",
                             "checks": [check(health)], **strategy}, traffic=True)


async def blue_is_live(bot: LocalBot) -> None:
    """v1.0.0 runs on staging (deployed rolling: nothing to switch the first time)."""
    await bot.driver.command("api staging v1.0.0 --strategy rolling")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded" and dep.strategy == "rolling", dep.detail


async def in_rollback_window(bot: LocalBot) -> dict:
    card = await card_says(bot, "rollback window")
    [_, dep] = await deployments(bot)
    assert dep.state == "promoting" and dep.strategy == "blue-green"
    return card


async def test_blue_green_switches_keeps_blue_for_the_window_then_retires_it(
        launch, tmp_path, health) -> None:
    clock = FakeClock()
    bot = await launch(blue_green(tmp_path, health), clock=clock)
    await blue_is_live(bot)
    health.hits.clear()
    await bot.driver.command("api staging v2.0.0")

    card = await in_rollback_window(bot)
    assert actions_run(tmp_path)[1:] == [["api", "staging", "v2.0.0"],  # green, beside blue
                                         ["set_weight", "api", "100"]]  # the switch
    assert health.versions[-1] == "v2.0.0" and health.hits["/healthz"] == 1
    text = card_text(card)
    assert "blue-green: *100%* · rollback window until 10:10 UTC" in text
    # Promote skips the rest of the window (retires blue now); Roll back switches back.
    assert [b["text"]["text"] for b in buttons(card)] == ["Promote", "Roll back"]
    replies = await said(bot, "rollback window")
    order = [next(i for i, t in enumerate(replies) if words in t) for words in (
        "beside the current one", "Post-deploy checks passed", "Switching all traffic",
        "rollback window")]
    assert order == sorted(order)  # checks on the preview, before any traffic moves
    window = next(t for t in replies if "rollback window" in t)
    assert "`v1.0.0` stays deployed" in window and "Roll back" in window

    clock.advance(minutes=5)  # still inside the window: nothing retired yet
    await a_few_ticks(bot)
    assert ["promote", "api"] not in actions_run(tmp_path)
    assert (await deployments(bot))[-1].state == "promoting"

    clock.advance(minutes=6)
    _, dep = await finished(bot, 2)
    assert dep.state == "succeeded", dep.detail
    assert actions_run(tmp_path)[-1] == ["promote", "api"]  # blue retired
    replies = await said(bot, "is live on staging")
    assert any("Retiring `v1.0.0`" in t for t in replies)
    card = await card_says(bot, "Succeeded")
    assert buttons(card) == []


async def test_rolling_back_in_the_window_switches_traffic_back(
        launch, tmp_path, health) -> None:
    clock = FakeClock()
    bot = await launch(blue_green(tmp_path, health), clock=clock)
    await blue_is_live(bot)
    await bot.driver.command("api staging v2.0.0")
    card = await in_rollback_window(bot)

    _, roll_back = buttons(card)
    assert roll_back["action_id"] == ActionId.ABORT
    await bot.driver.click(roll_back["action_id"], roll_back["value"], user="U0BOB")
    _, dep = await finished(bot, 2)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert ran[-1] == ["abort", "api"] and ["promote", "api"] not in ran
    replies = await said(bot, "Rolled back in")
    assert any("aborted by <@U0BOB>" in t for t in replies)
    assert "staging is back on `v1.0.0`" in replies[-1]
    card = await card_says(bot, "Rolled back")
    assert "rollback window" not in card_text(card) and buttons(card) == []

    clock.advance(minutes=11)  # the window's timer must not fire after the rollback
    await a_few_ticks(bot)
    assert actions_run(tmp_path) == ran
    [_, dep] = await deployments(bot)
    assert dep.state == "rolled_back"


async def test_promote_in_the_window_retires_blue_without_waiting(
        launch, tmp_path, health) -> None:
    """The window's Promote button skips the rest of the wait: blue is retired at once."""
    clock = FakeClock()
    bot = await launch(blue_green(tmp_path, health), clock=clock)
    await blue_is_live(bot)
    await bot.driver.command("api staging v2.0.0")
    promote, _ = buttons(await in_rollback_window(bot))
    assert promote["action_id"] == ActionId.PROMOTE
    await bot.driver.click(promote["action_id"], promote["value"], user="U0BOB")
    _, dep = await finished(bot, 2)  # the clock never moved past the window's end
    assert dep.state == "succeeded", dep.detail
    assert actions_run(tmp_path)[-1] == ["promote", "api"]
    assert any("<@U0BOB> pressed Promote" in t for t in await said(bot, "pressed Promote"))


async def test_blue_green_with_failing_preview_checks_never_switches(
        launch, tmp_path, health) -> None:
    bot = await launch(blue_green(tmp_path, health))
    await blue_is_live(bot)
    health.status, health.body = 502, "bad gateway"
    await bot.driver.command("api staging v2.0.0")
    _, dep = await finished(bot, 2)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert not any(a[0] == "set_weight" for a in ran)
    assert ran[1:] == [["api", "staging", "v2.0.0"], ["abort", "api"]]  # preview removed
    replies = await said(bot, "Rolled back in")
    why = next(t for t in replies if "Rolling back api on staging" in t)
    assert "post-deploy checks failed" in why and "→ 502 (expected 200) after 3 attempts" in why
    assert "Switching all traffic" not in "\n".join(replies)


async def test_canary_checks_run_before_any_traffic_reaches_it(
        launch, tmp_path, health) -> None:
    """A canary that fails its checks never gets a single user request."""
    health.status = 503
    bot = await launch(config(tmp_path, {"kind": "canary", "steps": [5, 100], "interval": 0.3,
                                         "checks": [check(health)]}, traffic=True))
    await bot.driver.command("api staging v2.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path) == [["api", "staging", "v2.0.0"], ["abort", "api"]]
    assert health.versions == ["v2.0.0"] * 3  # the checks asked about the new version

    health.status = 200
    await bot.driver.command("api staging v2.0.1")
    _, dep = await finished(bot, 2)
    assert dep.state == "succeeded", dep.detail
    assert actions_run(tmp_path)[2:4] == [["api", "staging", "v2.0.1"],
                                          ["set_weight", "api", "5"]]
    assert health.versions[3:] == ["v2.0.1"]


# --- which strategy runs -------------------------------------------------------------


def canary_with_rolling_staging(tmp_path: Path) -> ShipbotConfig:
    """api: canary everywhere (no analysis: each step just bakes), but rolling on staging."""
    return config(tmp_path, {"kind": "canary", "steps": [50, 100], "interval": 0.3},
                  traffic=True, strategies={"staging": {"kind": "rolling"}})


def ran_since(tmp_path: Path, before: int) -> list[list[str]]:
    return actions_run(tmp_path)[before:]


async def test_environment_and_command_choose_the_strategy(launch, tmp_path) -> None:
    bot = await launch(canary_with_rolling_staging(tmp_path))

    await bot.driver.command("api dev v1.0.0")  # the service's own strategy
    [dep] = await finished(bot, 1)
    assert (dep.state, dep.strategy) == ("succeeded", "canary"), dep.detail
    assert ran_since(tmp_path, 0) == [["api", "dev", "v1.0.0"], ["set_weight", "api", "50"],
                                      ["set_weight", "api", "100"], ["promote", "api"]]
    card = await card_says(bot, "Succeeded")
    assert "canary: ~50%~ ▸ *100%*" in card_text(card)

    await bot.driver.command("api staging v1.0.0")  # the environment's override
    _, dep = await finished(bot, 2)
    assert (dep.state, dep.strategy) == ("succeeded", "rolling"), dep.detail
    assert ran_since(tmp_path, 4) == [["api", "staging", "v1.0.0"]]  # no traffic actions
    card = await card_says(bot, "Succeeded")
    assert "Rollout" not in card_text(card)

    await bot.driver.command("api dev v1.1.0 --strategy rolling")  # the command's choice
    *_, dep = await finished(bot, 3)
    assert (dep.state, dep.strategy) == ("succeeded", "rolling"), dep.detail
    assert ran_since(tmp_path, 5) == [["api", "dev", "v1.1.0"]]

    await bot.driver.command("api staging v1.1.0 --strategy canary")  # beats the env too
    await card_says(bot, "canary:")

    async def shifted() -> list[list[str]] | None:
        ran = ran_since(tmp_path, 6)
        return ran if len(ran) >= 2 else None

    [deployed, shift] = await eventually(shifted)
    assert deployed == ["api", "staging", "v1.1.0"]
    assert shift == ["set_weight", "api", "50"]  # the service's own canary steps
    answer = (await bot.driver.command("abort api staging", user="U0BOB")).json()["text"]
    assert answer == "Rolling back deployment #4."
    *_, dep = await finished(bot, 4)
    assert (dep.state, dep.strategy) == ("rolled_back", "canary"), dep.detail
    assert ran_since(tmp_path, 6)[-1] == ["abort", "api"]
