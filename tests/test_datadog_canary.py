"""Canary rollouts judged on Datadog numbers, through the whole app: a fake Datadog API on
loopback serves per-track series for the track and version each query names."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.config import ShipbotConfig, parse_config
from tests.conftest import STEP, eventually, make_config, serving, step
from tests.fake_datadog import API_KEY, APP_KEY, FakeDatadog
from tests.test_deploy_flow import finished

SCOPE = "{service:{service},track:{track},version:{version}}"
ERRORS = f"sum:trace.http.request.errors{SCOPE}.as_count()"
HITS = f"sum:trace.http.request.hits{SCOPE}.as_count()"


@pytest.fixture
async def datadog(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeDatadog, str]]:
    monkeypatch.setenv("DD_API_KEY", API_KEY)
    monkeypatch.setenv("DD_APP_KEY", APP_KEY)
    fake = FakeDatadog()
    async with serving(fake.app()) as port:
        yield fake, f"http://127.0.0.1:{port}"


def canary_config(tmp_path: Path, base_url: str) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    deploy = step(tmp_path / "deploy.log")
    for action in ("set_weight", "promote", "abort"):
        extra = ["{weight}"] if action == "set_weight" else []
        deploy[f"{action}_argv"] = [sys.executable, STEP, action, "{service}", *extra]
    data["services"]["api"].update(deploy=deploy, ci=None, strategy={
        "kind": "canary", "steps": [50, 100], "interval": "8s",
        "analysis": {"window": "5s", "resolution": "1s", "check_every": "2s", "metrics": [
            {"name": "error_rate", "label": "error rate", "unit": "ratio",
             "query": f"{ERRORS} / {HITS}", "judge": "threshold", "max_increase": 0.01,
             "consecutive_error_limit": 2},
            {"name": "errors", "label": "errors (sequential)", "judge": "sequential",
             "requests_query": HITS, "errors_query": ERRORS, "min_requests": 500},
        ]}})
    data["metrics"] = {"provider": "datadog", "base_url": base_url, "timeout_seconds": 5}
    return parse_config(data)


def actions_run(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "deploy.log").read_text().splitlines()]


def thread(bot: Any) -> list[str]:
    return [r["text"] for r in bot.slack.messages("#deploys-api")[0]["replies"]]


async def test_healthy_canary_on_datadog_is_promoted(
        make_bot, tmp_path: Path, datadog: tuple[FakeDatadog, str]) -> None:
    fake, base_url = datadog
    fake.set_traffic("baseline", rps=200, error_rate=0.001, version="v2.0.0")
    fake.set_traffic("canary", rps=200, error_rate=0.001, version="v2.0.0")
    bot = await make_bot(canary_config(tmp_path, base_url))
    await bot.driver.command("api staging v2.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "50"] in ran and ran[-1] == ["promote", "api"]

    async def reported() -> str | None:
        return next((t for t in thread(bot) if t.startswith("*Step 50% canary — pass*")), None)

    report = await eventually(reported)
    assert "error rate" in report and "errors (sequential)" in report
    queries = fake.queries()
    assert ("sum:trace.http.request.errors{service:api,track:canary,version:v2.0.0}"
            ".as_count() / sum:trace.http.request.hits{service:api,track:canary,"
            "version:v2.0.0}.as_count()") in queries
    assert any("track:baseline" in q for q in queries)
    # The sequential judge's counts all start at the step's start: one origin per track.
    count_starts = {(r.url.params["query"], r.url.params["from"]) for r in fake.requests
                    if r.url.params["query"] == HITS.replace("{service}", "api").replace(
                        "{track}", "canary").replace("{version}", "v2.0.0")}
    assert len(count_starts) == 1, count_starts
    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert 'method="GET",outcome="2xx",provider="datadog"' in metrics
    for secret in (API_KEY, APP_KEY):
        assert secret not in json.dumps(bot.slack.messages("#deploys-api"))


async def test_bad_canary_on_datadog_is_rolled_back_with_the_numbers(
        make_bot, tmp_path: Path, datadog: tuple[FakeDatadog, str]) -> None:
    fake, base_url = datadog
    fake.set_traffic("baseline", rps=200, error_rate=0.001, version="v2.0.1")
    fake.set_traffic("canary", rps=200, error_rate=0.05, version="v2.0.1")
    bot = await make_bot(canary_config(tmp_path, base_url))
    await bot.driver.command("api staging v2.0.1")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "100"] not in ran
    assert ran[-1] == ["abort", "api"]

    async def rolled_back() -> list[str] | None:
        texts = thread(bot)
        return texts if any("Rolled back in" in t for t in texts) else None

    texts = await eventually(rolled_back)
    why = next(t for t in texts if "Rolling back api on staging" in t)
    assert "canary analysis failed at 50%" in why and "error rate" in why
    assert "5" in why and "%" in why  # the canary's 5 % against the baseline's 0.1 %


async def test_wrong_keys_leave_the_canary_paused_with_the_reason(
        make_bot, tmp_path: Path, datadog: tuple[FakeDatadog, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, base_url = datadog
    fake.set_traffic("baseline", rps=200, error_rate=0.001)
    fake.set_traffic("canary", rps=200, error_rate=0.001)
    monkeypatch.setenv("DD_APP_KEY", "revoked-" + "0" * 32)
    bot = await make_bot(canary_config(tmp_path, base_url))
    await bot.driver.command("api staging v2.0.2")

    async def paused() -> list[str] | None:
        roots = bot.slack.messages("#deploys-api")
        return thread(bot) if roots and "Paused" in json.dumps(roots[0]["blocks"]) else None

    texts = await eventually(paused, timeout=40)
    assert any("inconclusive" in t for t in texts)
    assert ["set_weight", "api", "100"] not in actions_run(tmp_path)
    assert "revoked-" not in json.dumps(bot.slack.messages("#deploys-api"))
