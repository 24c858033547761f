"""Canary rollouts judged on a real Prometheus: promoted, rolled back, or paused."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, ShipbotConfig, parse_config
from bot.config_delivery import StrategyConfig
from bot.engine.plan import plan, progress_bar
from commands.actions import ActionId
from tests.conftest import STEP, eventually, make_config, step
from tests.test_buttons_and_queries import buttons
from tests.test_deploy_flow import finished

pytest_plugins = ["tests.prometheus_fixture"]

ERROR_RATE = ('sum(rate(http_requests_total{service="{service}",track="{track}",code=~"5.."}'
              '[{window}])) / sum(rate(http_requests_total{service="{service}",'
              'track="{track}"}[{window}]))')


def canary_config(tmp_path: Path, prometheus_url: str | None, **strategy: Any) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    deploy = step(tmp_path / "deploy.log")
    for action in ("set_weight", "promote", "abort"):
        extra = ["{weight}"] if action == "set_weight" else []
        deploy[f"{action}_argv"] = [sys.executable, STEP, action, "{service}", *extra]
    data["services"]["api"]["deploy"] = deploy
    data["services"]["api"]["ci"] = None
    data["services"]["api"]["strategy"] = {
        "kind": "canary", "steps": [50, 100], "interval": "8s",
        "analysis": {
            "window": "5s", "resolution": "1s", "check_every": "2s",
            "metrics": [{"name": "error_rate", "label": "error rate", "unit": "ratio",
                         "query": ERROR_RATE, "judge": "threshold", "max_increase": 0.01,
                         "consecutive_error_limit": 2}],
        },
        **strategy,
    }
    if prometheus_url:
        data["metrics"] = {"provider": "prometheus", "url": prometheus_url}
    return parse_config(data)


def actions_run(tmp_path: Path) -> list[list[str]]:
    return [json.loads(line) for line in (tmp_path / "deploy.log").read_text().splitlines()]


def test_plans() -> None:
    canary = plan(StrategyConfig(kind="canary", steps=[5, 25, "pause", 50, 100]))
    assert [s.kind for s in canary] == ["weight", "bake", "weight", "bake", "gate", "weight",
                                        "bake", "weight", "promote"]
    assert progress_bar(canary, 3) == "~5%~ ▸ *25%* ▸ 50% ▸ 100%"
    checked = plan(StrategyConfig(kind="canary", steps=[5, 100],
                                  checks=[{"name": "up", "url": "http://127.0.0.1:9/"}]))
    assert [s.kind for s in checked] == ["checks", "weight", "bake", "weight", "promote"]
    green = plan(StrategyConfig(kind="blue-green"))
    assert [s.kind for s in green] == ["weight", "window", "promote"]
    assert plan(StrategyConfig(kind="rolling")) == []


def test_canary_needs_a_target_that_splits_traffic(tmp_path: Path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["services"]["api"]["strategy"] = {"kind": "canary"}
    with pytest.raises(ConfigError, match="canary needs a deploy target that can split"):
        parse_config(data)
    with pytest.raises(ConfigError, match="canary steps must end at 100"):
        canary_config(tmp_path, "http://127.0.0.1:9", steps=[5, 50])
    with pytest.raises(ConfigError, match="configure a metrics provider"):
        canary_config(tmp_path, None)


async def test_healthy_canary_is_promoted(make_bot, tmp_path, prometheus) -> None:
    prometheus.exporter.set_traffic("baseline", rps=200, error_rate=0.001)
    prometheus.exporter.set_traffic("canary", rps=200, error_rate=0.001)
    bot = await make_bot(canary_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v2.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    ran = actions_run(tmp_path)
    assert ran[0] == ["api", "staging", "v2.0.0"]
    assert ["set_weight", "api", "50"] in ran and ["set_weight", "api", "100"] in ran
    assert ran[-1] == ["promote", "api"]

    async def chart() -> list[dict] | None:
        return bot.slack.uploads or None

    [upload] = await eventually(chart)
    assert upload["bytes"].startswith(b"\x89PNG")
    thread = [r["text"] for r in bot.slack.messages("#deploys-api")[0]["replies"]]
    report = next(t for t in thread if t.startswith("*Step 50% canary — pass*"))
    assert "error rate" in report
    card = json.dumps(bot.slack.messages("#deploys-api")[0]["blocks"], ensure_ascii=False)
    assert "canary: ~50%~ ▸ *100%*" in card


async def test_bad_canary_is_rolled_back_with_the_numbers(make_bot, tmp_path, prometheus):
    prometheus.exporter.set_traffic("baseline", rps=200, error_rate=0.001)
    prometheus.exporter.set_traffic("canary", rps=200, error_rate=0.05)
    bot = await make_bot(canary_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v2.0.1")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "100"] not in ran
    assert ran[-1] == ["abort", "api"]

    async def reported() -> list[str] | None:
        thread = [r["text"] for r in bot.slack.messages("#deploys-api")[0]["replies"]]
        return thread if any("Rolled back in" in t for t in thread) else None

    thread = await eventually(reported)
    why = next(t for t in thread if "Rolling back api on staging" in t)
    assert "canary analysis failed at 50%" in why and "error rate" in why and "%" in why


async def test_silent_canary_pauses_and_asks_a_human(make_bot, tmp_path, prometheus) -> None:
    bot = await make_bot(canary_config(tmp_path, prometheus.url))  # no traffic at all
    await bot.driver.command("api staging v2.0.2")

    async def paused() -> dict | None:
        roots = bot.slack.messages("#deploys-api")
        return roots[0] if roots and "Paused" in json.dumps(roots[0]["blocks"]) else None

    card = await eventually(paused, timeout=40)
    labels = [b["text"]["text"] for b in buttons(card)]
    assert labels == ["Promote", "Resume", "Roll back"]
    thread = [r["text"] for r in card["replies"]]
    assert any("inconclusive" in t for t in thread)
    abort = next(b for b in buttons(card) if b["action_id"] == ActionId.ABORT)
    await bot.driver.click(abort["action_id"], abort["value"], user="U0BOB")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back"
    assert actions_run(tmp_path)[-1] == ["abort", "api"]


async def test_controls_from_the_keyboard_check_state(make_bot, tmp_path) -> None:
    bot = await make_bot(canary_config(tmp_path, "http://127.0.0.1:9"))
    text = (await bot.driver.command("promote api staging")).json()["text"]
    assert text == "No rollout of api on staging is in progress."
    bad = (await bot.driver.command("api staging v1 --strategy canry")).json()["text"]
    assert "Unknown strategy 'canry'. Did you mean 'canary'?" in bad
