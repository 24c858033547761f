"""`/deploy` through the whole app to an Argo Rollout: signed Slack requests in, a fake
Rollouts API on loopback (tests/fake_argo.py, its controller moving one step per read),
Slack messages, database rows and the requests Argo received out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.config import ShipbotConfig, parse_config
from bot.store.models import Deployment
from tests.conftest import eventually, make_config, serving
from tests.fake_argo import FakeArgo
from tests.test_buttons_and_queries import buttons
from tests.test_deploy_flow import card_text, deployments, finished
from tests.test_strategies import card_says, said

CLEAR = {"status": {"pauseConditions": None}}
CANARY = {"kind": "canary", "steps": [5, 25, 50, 100], "interval": 0.3, "pause_timeout": "1h"}


@pytest.fixture
async def argo(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeArgo, str]]:
    fake = FakeArgo()
    monkeypatch.setenv("K8S_TOKEN", fake.token)
    async with serving(fake.app()) as port:
        yield fake, f"http://127.0.0.1:{port}"


def argo_config(tmp_path: Path, server: str, strategy: dict[str, Any],
                analysis: str = "shipbot") -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    api = data["services"]["api"]
    api["ci"] = None
    api["deploy"] = {"provider": "argo_rollouts", "namespace": "prod", "rollout": "api",
                     "container": "api", "image": "registry.example.com/api:{version}",
                     "analysis": analysis, "timeout_seconds": 60,
                     "cluster": {"server": server, "token_env": "K8S_TOKEN"}}
    api["strategy"] = strategy
    return parse_config(data)


def clears(fake: FakeArgo) -> int:
    return sum(1 for _, _, body in fake.writes() if body == CLEAR)


async def test_a_canary_walks_the_rollouts_steps_and_mirrors_them(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, CANARY))
    await bot.driver.command("api staging v2.0.0")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert fake.image() == "registry.example.com/api:v2.0.0"
    assert fake.status["stableRS"] == fake.status["currentPodHash"]
    assert clears(fake) == 3  # past the pauses at 5 %, 25 % and 50 %: never one twice
    [image_patch] = [b for _, kind, b in fake.writes() if kind.endswith("json-patch+json")]
    assert image_patch[1]["value"] == "registry.example.com/api:v2.0.0"

    thread = await said(bot, "is live on staging")
    analysis = [t for t in thread if "Analysis api-" in t]
    assert len(analysis) == 1 and ": Successful*" in analysis[0]
    assert "success-rate: Successful, measured [0.995], [0.991], [0.997]" in analysis[0]
    positions = [t for t in thread if t.startswith(":round_pushpin:")]
    assert positions == [
        ":round_pushpin: Argo step 2/8, canary weight 5 %, Paused",
        ":round_pushpin: Argo step 4/8, canary weight 25 %, Paused",
        ":round_pushpin: Argo step 7/8, canary weight 50 %, Paused",
        ":round_pushpin: Argo step 8/8, canary weight 100 %, Healthy: the rollout is complete"]


async def test_a_failed_analysisrun_rolls_back_and_names_the_metric(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    fake.set_steps([{"setWeight": 5}, {"pause": {}}, {"setWeight": 25},
                    {"analysis": {"templates": [{"templateName": "success-rate"}]}},
                    {"pause": {}}, {"setWeight": 50}, {"pause": {}}])
    bot = await launch(argo_config(tmp_path, server, CANARY))
    await bot.driver.command("api staging fail-2.0")
    [dep] = await finished(bot)
    assert dep.state == "rolled_back", dep.detail
    assert fake.status["abort"] is True
    assert fake.status["canary"]["weights"]["canary"]["weight"] == 0
    thread = await said(bot, "Rolled back")
    [why] = [t for t in thread if "Rolling back" in t]
    assert "shift 25% of traffic failed: Argo AnalysisRun api-" in why
    assert "success-rate: Failed, measured [0.995], [0.412]" in why
    assert any("Analysis api-" in t and "Failed" in t for t in thread)


async def test_a_restart_mid_canary_goes_on_without_skipping_a_step(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    # Each weight holds 4 s: long enough for the card to show it on a loaded machine.
    config = argo_config(tmp_path, server, {**CANARY, "interval": 4})
    first = await launch(config)
    await first.driver.command("api staging v2.0.0")

    async def at_25() -> Deployment | None:
        [dep] = await deployments(first)
        return dep if fake.status.get("currentStepIndex") == 4 and dep.stage >= 3 \
            else None

    await eventually(at_25, timeout=60)  # slow under a loaded CI machine
    card = await card_says(first, "Argo step 4/8, canary weight 25 %, Paused")
    assert "canary: ~5%~ ▸ *25%* ▸ 50% ▸ 100%" in card_text(card)
    await first.stop()
    second = await launch(config)  # on the same Slack
    [dep] = await finished(second)
    assert dep.state == "succeeded", dep.detail
    assert clears(fake) == 3
    starts = [b for _, _, b in fake.writes() if "deploy-key" in str(b)]
    assert len(starts) == 1  # the image was set once


async def test_analysis_argo_turns_argos_pauses_into_shipbot_pauses(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, {"kind": "rolling"}, "argo"))
    await bot.driver.command("api staging v2.0.0")
    for step in (2, 4, 7):
        card = await card_says(bot, f"Argo waits at step {step}/8")
        assert [b["text"]["text"] for b in buttons(card)] == ["Promote", "Roll back"]
        promote = buttons(card)[0]
        await bot.driver.click(promote["action_id"], promote["value"], user="U0BOB")
        await eventually(_moved_past(fake, step))
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert clears(fake) == 3
    assert "Succeeded" in card_text(await card_says(bot, "Succeeded"))
    thread = await said(bot, "is live on staging")
    assert any("Analysis api-" in t and "Successful" in t for t in thread)


async def test_analysis_argo_abort_at_a_pause_aborts_the_rollout(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, {"kind": "rolling"}, "argo"))
    await bot.driver.command("api staging v2.0.0")
    card = await card_says(bot, "Argo waits at step 2/8")
    roll_back = buttons(card)[1]
    await bot.driver.click(roll_back["action_id"], roll_back["value"], user="U0BOB")
    [dep] = await finished(bot)
    assert dep.state == "rolled_back", dep.detail
    assert fake.status["abort"] is True and clears(fake) == 0
    assert fake.writes()[-1][2] == {"status": {"abort": True}}


def _moved_past(fake: FakeArgo, step: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return bool(fake.status.get("currentStepIndex", 0) > step)

    return check


async def test_a_strategy_the_rollout_cannot_run_is_refused_before_anything_starts(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, CANARY))
    answer = (await bot.driver.command("api staging v2.0.0 --strategy rolling")).json()["text"]
    assert answer.startswith("`--strategy rolling` is not possible for api: the argo_rollouts "
                             "target drives a canary Rollout step by step")
    assert answer.endswith("Nothing was started.")
    assert await deployments(bot) == [] and fake.writes() == []


async def test_analysis_argo_a_failed_analysisrun_fails_the_deploy_with_its_reason(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, {"kind": "rolling"}, "argo"))
    await bot.driver.command("api staging fail-2.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail.startswith("Deploy failed: Argo AnalysisRun api-")
    assert "success-rate: Failed, measured [0.995], [0.412]" in dep.detail
    assert fake.status["abort"] is True  # Argo itself moved traffic back to stable
    thread = await said(bot, "Deploy failed")
    assert any("Analysis api-" in t and "Failed" in t for t in thread)


async def test_analysis_argo_roll_back_after_a_promote_by_hand_says_abort_cannot(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    """Shipbot waits at an Argo pause; an SRE runs `kubectl argo rollouts promote --full`;
    then someone presses Roll back. Abort cannot bring v1 back: the thread says so,
    instead of "staging is back on v1" while v2 serves."""
    fake, server = argo
    bot = await launch(argo_config(tmp_path, server, {"kind": "rolling"}, "argo"))
    await bot.driver.command("api staging v2.0.0")
    card = await card_says(bot, "Argo waits at step 2/8")
    fake.status["promoteFull"] = True  # by hand, outside Shipbot
    fake.reconcile()
    roll_back = buttons(card)[1]
    await bot.driver.click(roll_back["action_id"], roll_back["value"], user="U0BOB")
    [dep] = await finished(bot)
    assert dep.state == "rollback_failed", dep.detail
    assert "back on" not in dep.detail
    assert {"status": {"abort": True}} not in [b for _, _, b in fake.writes()]
    thread = await said(bot, "Rollback failed")
    [failed] = [t for t in thread if "Rollback failed" in t]
    assert "Argo had already promoted registry.example.com/api:v2.0.0 fully" in failed
    assert "abort cannot move traffic back; roll back with `/rollback`" in failed


async def test_analysis_argo_promoted_by_hand_at_a_wait_is_followed_not_rolled_back(
        launch, tmp_path: Path, argo: tuple[FakeArgo, str]) -> None:
    """At the pause deadline Shipbot first asks Argo: promoted by hand meanwhile, the
    deploy goes on (a person decided), and nothing is aborted or rolled back."""
    fake, server = argo
    strategy = {"kind": "rolling", "pause_timeout": "3s"}
    bot = await launch(argo_config(tmp_path, server, strategy, "argo"))
    await bot.driver.command("api staging v2.0.0")
    await card_says(bot, "Argo waits at step 2/8")
    fake.status["promoteFull"] = True  # kubectl argo rollouts promote --full
    fake.reconcile()
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert {"status": {"abort": True}} not in [b for _, _, b in fake.writes()]
    assert fake.image() == "registry.example.com/api:v2.0.0"
    thread = await said(bot, "is live on staging")
    [went_on] = [t for t in thread if "without Shipbot" in t]
    assert went_on.startswith(":fast_forward: The deploy went on past its wait without "
                              "Shipbot (promoted outside it): Argo step 8/8")
    assert not any("Rolling back" in t for t in thread)
