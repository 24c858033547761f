"""Canary judges on real traffic, through the whole app and a real Prometheus: a warm-up
that forgives a cold start's latency but never an error burst, sparse canaries that get
more time instead of a pause, evidence pooled across steps with the size of the shift in
the thread, and metrics in shadow mode that say what they would have done."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from bot.config import ShipbotConfig
from tests.conftest import eventually
from tests.test_baseline_window import ERRORS, REQUESTS
from tests.test_deploy_flow import deployments, finished
from tests.test_latency_analysis import LATENCY, thread_of
from tests.test_progressive import actions_run, canary_config

pytest_plugins = ["tests.prometheus_fixture"]


def config(tmp_path: Path, url: str, metric: dict[str, Any], *, steps: list[int] | None = None,
           interval: str = "8s", **analysis: Any) -> ShipbotConfig:
    return canary_config(tmp_path, url, interval=interval, steps=steps or [50, 100], analysis={
        "window": "5s", "resolution": "1s", "check_every": "1s", "metrics": [metric],
        **analysis})


def latency(**extra: Any) -> dict[str, Any]:
    return {"name": "latency", "label": "latency", "unit": "seconds", "judge": "sequential",
            "histogram_query": LATENCY, "min_requests": 200, **extra}


def errors(**extra: Any) -> dict[str, Any]:
    return {"name": "errors", "label": "error rate", "unit": "ratio", "judge": "sequential",
            "requests_query": REQUESTS, "errors_query": ERRORS, "min_requests": 150, **extra}


async def done(bot: Any, timeout: float = 90) -> Any:
    async def check() -> Any:
        deps = await deployments(bot)
        return deps[0] if deps and deps[0].finished_at is not None else None

    try:
        return await eventually(check, timeout=timeout)
    except AssertionError:
        [dep] = await deployments(bot)
        thread = [r["text"] for r in bot.slack.messages("#deploys-api")[0]["replies"]]
        raise AssertionError(f"{dep.state} at stage {dep.stage}: {thread}") from None


async def bake_started(bot: Any, stage: int = 1) -> None:
    async def check() -> bool:
        return any(d.stage >= stage for d in await deployments(bot))

    await eventually(check, timeout=30)


@pytest.mark.parametrize(("warmup", "state"), [("9s", "succeeded"), ("0s", "rolled_back")])
async def test_a_cold_start_is_forgiven_during_the_warm_up(
        make_bot: Any, tmp_path: Path, prometheus: Any, warmup: str, state: str) -> None:
    # The canary is 10x slower until its caches are warm, 1.5 s into the step: the warm-up
    # (9 s, its first 3 s quiet) sees it getting faster and holds its verdict.
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=200, latency_ms=40)
    exporter.set_traffic("canary", rps=200, latency_ms=400)
    bot = await make_bot(config(tmp_path, prometheus.url, latency(), interval="18s",
                                warmup=warmup))
    await bot.driver.command("api staging v3.0.0")
    await bake_started(bot)
    await asyncio.sleep(1.5)
    exporter.set_traffic("canary", rps=200, latency_ms=40)
    dep = await done(bot)
    assert dep.state == state, dep.analysis_log
    if state == "succeeded":
        assert ["promote", "api"] in actions_run(tmp_path)
        log = json.loads(dep.analysis_log)
        assert log[0]["metrics"]["latency"]["canary"] is None  # the first check: warming up


async def test_a_canary_slow_and_not_getting_faster_fails_inside_the_warm_up(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=200, latency_ms=40)
    exporter.set_traffic("canary", rps=200, latency_ms=400)
    bot = await make_bot(config(tmp_path, prometheus.url, latency(), interval="20s",
                                warmup="9s"))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    checks = json.loads(dep.analysis_log)
    assert checks[0]["metrics"]["latency"]["canary"] is None  # the quiet first third
    assert len(checks) < 9  # failed before the warm-up's end
    thread = await thread_of(bot, "Rolled back in")
    why = next(t for t in thread if "Rolling back api on staging" in t)
    assert "fails (warming up, and not getting faster)" in why


async def test_an_error_burst_is_caught_during_the_warm_up(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=300, error_rate=0.005)
    exporter.set_traffic("canary", rps=300, error_rate=0.08)
    bot = await make_bot(config(tmp_path, prometheus.url, errors(), interval="20s",
                                warmup="10s"))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    checks = json.loads(dep.analysis_log)
    assert checks[-1]["verdict"] == "fail" and len(checks) < 10  # inside the warm-up


@pytest.mark.parametrize(("extension", "outcome"), [("30s", "extend"), ("0s", "pause")])
async def test_a_sparse_canary_gets_the_time_its_traffic_needs(
        make_bot: Any, tmp_path: Path, prometheus: Any, extension: str, outcome: str) -> None:
    # 25 canary requests a second: a 4-second step sees ~100 of the 150 a pass needs.
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=25, error_rate=0.01)
    exporter.set_traffic("canary", rps=25, error_rate=0.01)
    bot = await make_bot(config(tmp_path, prometheus.url, errors(), interval="4s",
                                max_extension=extension))
    await bot.driver.command("api staging v3.0.0")
    if outcome == "extend":
        [dep] = await finished(bot, 1)
        assert dep.state == "succeeded", dep.detail
        thread = await thread_of(bot, "is live on")
        assert not any("Paused" in t for t in thread)
    else:
        thread = await eventually(lambda: paused_thread(bot), timeout=30)
    [note] = [t for t in thread if t.startswith(":turtle:")]
    assert re.search(r"Not enough traffic to decide at 50% \(error rate\): \d+ canary requests "
                     r"judged, \d+ more needed, at \d+ canary req/s ~\d+ s\.", note), note
    assert ("extending the step (up to 30 s) instead of pausing" in note) is (
        outcome == "extend")
    assert ("longer than the step may be extended: pausing" in note) is (outcome == "pause")


async def paused_thread(bot: Any) -> list[str] | None:
    roots = bot.slack.messages("#deploys-api")
    thread = [r["text"] for r in roots[0]["replies"]] if roots else []
    return thread if any("Paused" in t for t in thread) else None


async def test_evidence_pools_across_steps_and_the_thread_gives_the_shift_with_its_ci(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=100, error_rate=0.01)
    exporter.set_traffic("canary", rps=100, error_rate=0.01)
    bot = await make_bot(config(tmp_path, prometheus.url, errors(min_requests=100),
                                steps=[25, 50, 100], interval="4s"))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    thread = await thread_of(bot, "is live on")
    reports = [t for t in thread if t.startswith("*Step ")]
    assert [r.split(" — ")[0] for r in reports] == ["*Step 25% canary", "*Step 50% canary"]
    seen = [int(re.search(r"in ([\d,]+) canary requests", r)[1].replace(",", ""))  # type: ignore[index]
            for r in reports]
    assert seen[1] > 1.6 * seen[0]  # the 50 % step judged both steps' requests
    assert all(re.search(r"error rate [\d.]+% vs [\d.]+% \([+−][\d.]+ pp, 95% CI "
                         r"\[[+−][\d.]+, [+−][\d.]+\]\)", r) for r in reports), reports


@pytest.mark.measure_subprocesses  # the `shipbot judges report` it runs counts for coverage
async def test_a_metric_in_shadow_mode_reports_but_never_rolls_back(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("baseline", rps=300, error_rate=0.005)
    exporter.set_traffic("canary", rps=300, error_rate=0.04)
    bot = await make_bot(config(tmp_path, prometheus.url, errors(mode="shadow")))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    assert ["promote", "api"] in actions_run(tmp_path)
    thread = await thread_of(bot, "is live on")
    shadow = [t for t in thread if t.startswith(":ghost:")]
    assert len(shadow) == 1 and re.match(
        r":ghost: \*Shadow:\* errors would have rolled back the 50% canary; it is in shadow "
        r"mode, so nothing was done\. error rate [\d.]+% vs [\d.]+% .* — fails: canary error "
        r"rate is higher \(.*\)$", shadow[0]), shadow
    report = await judges_report(tmp_path)
    assert re.search(r"errors\s+1\s+1 \(100%\)\s+0\s+0\s+0", report), report


async def judges_report(tmp_path: Path) -> str:
    """Run the real CLI: `shipbot judges report --days 30`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "SHIPBOT_"))}
    env["DATABASE_URL"] = f"sqlite:///{tmp_path}/shipbot.db"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", "judges", "report", "--days", "30",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    return out.decode()
