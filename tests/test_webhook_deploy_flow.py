"""`/deploy`, `/rollback` and a blue-green switch through the whole app with a webhook
deploy target: a fake deployer on loopback verifies each request's HMAC signature and
records what it was asked; the thread and the database say what users see."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import parse_config
from bot.devtools.local import LocalBot
from tests.conftest import FakeClock, eventually, make_config, serving
from tests.fake_deployer import FakeDeployer
from tests.test_deploy_flow import finished

SECRET = "whsec-" + "E" * 30


@pytest.fixture
async def deployer(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeDeployer, str]]:
    monkeypatch.setenv("DEPLOYER_HMAC", SECRET)
    fake = FakeDeployer(secret=SECRET)
    async with serving(fake.app()) as port:
        yield fake, f"http://127.0.0.1:{port}"


def webhook(base: str) -> dict[str, Any]:
    return {"provider": "webhook", "url": f"{base}/api/deploys",
            "signature": {"secret_env": "DEPLOYER_HMAC"},
            "status_url_field": "links.status", "status_field": "state",
            "message_field": "result.message", "link_field": "links.html", "id_field": "id",
            "cancel_url": f"{base}/api/runs/{{id}}/cancel",
            "rollback_url": f"{base}/api/rollbacks", "set_weight_url": f"{base}/api/weights",
            "promote_url": f"{base}/api/promotions", "abort_url": f"{base}/api/aborts",
            "timeout_seconds": 60}


async def thread(bot: LocalBot, words: str) -> list[str]:
    """The replies of the deployment card whose thread says ``words``, once it does."""
    async def check() -> list[str] | None:
        for root in bot.slack.messages("#deploys-api"):
            texts = [r["text"] for r in root["replies"]]
            if any(words in t for t in texts):
                return texts
        return None

    return list(await eventually(check))


async def test_deploy_then_rollback_through_the_webhook(
        launch, tmp_path: Path, deployer: tuple[FakeDeployer, str]) -> None:
    fake, base = deployer
    bot = await launch(make_config(tmp_path, deploy=webhook(base)))
    for n, version in enumerate(("v1.4.1", "v1.4.2"), start=1):
        await bot.driver.command(f"api staging {version}")
        [*_, dep] = await finished(bot, n)
        assert dep.state == "succeeded", dep.detail
    first = fake.started("deploy")[0]
    assert first.body["version"] == "v1.4.1" and first.body["service"] == "api"
    assert first.key.startswith("deployment-1-") and first.key == first.body["key"]
    texts = await thread(bot, "v1.4.2 is live on staging")
    assert any(t.startswith(":rocket: Deploying `v1.4.2` to staging") for t in texts)

    await bot.driver.command("api staging", command="/rollback")
    deps = await finished(bot, 3)
    assert (deps[2].kind, deps[2].version, deps[2].state) == ("rollback", "v1.4.1",
                                                             "succeeded")
    [rollback] = fake.started("rollback")
    assert rollback.body["version"] == "v1.4.1"
    assert len(fake.started("deploy")) == 2  # the native undo, not a third deploy
    assert fake.refused == []  # every request carried a good signature
    sent = json.dumps([c.params for c in bot.slack.calls_to("chat.postMessage")])
    assert SECRET not in sent


async def test_a_failed_run_shows_the_deployers_message(
        launch, tmp_path: Path, deployer: tuple[FakeDeployer, str]) -> None:
    _, base = deployer
    bot = await launch(make_config(tmp_path, deploy=webhook(base)))
    await bot.driver.command("api staging fail-2.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert "the deployer reports failed: pods for fail-2.0 never became ready" in (
        dep.detail or "")
    await thread(bot, "pods for fail-2.0 never became ready")
    [card] = bot.slack.messages("#deploys-api")
    assert "<https://deployer.example.com/runs/run-1|Open the run>" in json.dumps(
        card["replies"])  # the deployer's page for the run (link_field)


async def test_a_run_without_an_id_past_its_deadline_is_not_cancelled_blindly(
        launch, tmp_path: Path, deployer: tuple[FakeDeployer, str]) -> None:
    """The answer has a status URL but no run_id: stopping the run at the deadline posts
    nothing (never to .../runs/None/cancel) and the deployment says why."""
    fake, base = deployer
    clock = FakeClock()
    bot = await launch(make_config(tmp_path, deploy={**webhook(base), "id_field": "run_id"}),
                         clock=clock)
    await bot.driver.command("api staging slow-1.0")
    await eventually(lambda: _polled(fake))
    for _ in range(8):  # past the deadline, then through the step's retries
        clock.advance(minutes=5)
        await asyncio.sleep(0.3)
    [dep] = await finished(bot)
    assert dep.state == "failed", dep.state
    said = "the receiver's answer had no id, so Shipbot cannot cancel the run"
    await thread(bot, said)
    assert [r.url.path for r in fake.requests if r.method == "POST"] == ["/api/deploys"]
    assert not fake.runs["run-1"].cancelled


async def _polled(fake: FakeDeployer) -> bool:
    return any(r.method == "GET" for r in fake.requests)


async def test_blue_green_switches_traffic_with_set_weight(
        launch, tmp_path: Path, deployer: tuple[FakeDeployer, str]) -> None:
    fake, base = deployer
    data = make_config(tmp_path, deploy=webhook(base)).model_dump(mode="json")
    data["services"]["api"]["ci"] = None
    data["services"]["api"]["strategy"] = {"kind": "blue-green", "rollback_window": "10m"}
    clock = FakeClock()
    bot = await launch(parse_config(data), clock=clock)
    await bot.driver.command("api staging v1.0.0 --strategy rolling")
    await finished(bot, 1)
    await bot.driver.command("api staging v2.0.0")
    await thread(bot, "rollback window")
    [switch] = fake.started("set_weight")
    assert switch.body["weight"] == 100 and switch.body["version"] == "v2.0.0"
    clock.advance(minutes=11)
    _, dep = await finished(bot, 2)
    assert dep.state == "succeeded", dep.detail
    assert [r.kind for r in fake.runs.values()] == ["deploy", "deploy", "set_weight",
                                                    "promote"]


async def test_a_canary_through_the_webhook_survives_a_restart_and_rolls_back(
        launch, tmp_path: Path, deployer: tuple[FakeDeployer, str]) -> None:
    """The bot stops mid-canary and a new one carries on: no traffic step is sent twice
    (each idempotency key is POSTed once); Abort mid-canary rolls back through abort_url."""
    fake, base = deployer
    data = make_config(tmp_path, deploy=webhook(base)).model_dump(mode="json")
    data["services"]["api"]["ci"] = None
    data["services"]["api"]["strategy"] = {"kind": "canary", "steps": [20, 50, 100],
                                           "interval": "1s"}
    config = parse_config(data)
    bot = await launch(config)
    await bot.driver.command("api staging v1.0.0 --strategy rolling")
    await finished(bot, 1)
    await bot.driver.command("api staging v2.0.0")
    await eventually(lambda: asyncio.sleep(0, fake.started("set_weight")))  # mid-canary
    await bot.stop()
    bot = await launch(config)
    _, dep = await finished(bot, 2)
    assert dep.state == "succeeded", dep.detail
    assert [r.body["weight"] for r in fake.started("set_weight")] == [20, 50, 100]
    assert len(fake.started("promote")) == 1
    posted = [r.headers["idempotency-key"] for r in fake.requests if r.method == "POST"
              and "idempotency-key" in r.headers]
    assert len(posted) == len(set(posted)), posted  # nothing sent twice across the restart

    await bot.driver.command("api staging v3.0.0")
    await eventually(lambda: asyncio.sleep(0, len(fake.started("set_weight")) > 3))
    await bot.driver.command("abort api staging")
    *_, bad = await finished(bot, 3)
    assert bad.state == "rolled_back", bad.detail
    [abort] = fake.started("abort")
    assert abort.body["version"] == "v3.0.0"
