"""Mann-Whitney (Kayenta) canaries on a real Prometheus: a weighted score decides.

Two metrics, error rate and p99 latency, each judged by Mann-Whitney U on the points
of the step's window; the score is the weighted share of passing metrics, with pass 95
and marginal 75 (Kayenta's defaults). A canary slower at p99 but with the same errors
scores 50 and is rolled back; an identical canary scores 100 and is promoted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bot.config import ShipbotConfig
from tests.test_deploy_flow import finished
from tests.test_latency_analysis import thread_of
from tests.test_progressive import ERROR_RATE, actions_run, canary_config

pytest_plugins = ["tests.prometheus_fixture"]

P99 = ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{'
       'service="{service}",track="{track}"}[{window}])))')


def kayenta_config(tmp_path: Path, prometheus_url: str) -> ShipbotConfig:
    metric: dict[str, Any] = {"judge": "mann-whitney", "min_samples": 4,
                              "allowed_increase": 0.2}
    return canary_config(tmp_path, prometheus_url, interval="8s", analysis={
        "window": "3s", "resolution": "1s", "check_every": "2s",
        "metrics": [
            {"name": "errors", "label": "error rate", "unit": "ratio", "query": ERROR_RATE,
             **metric},
            {"name": "p99", "label": "p99 latency", "unit": "seconds", "query": P99,
             **metric},
        ]})


async def test_slower_canary_scores_50_and_is_rolled_back(make_bot, tmp_path, prometheus):
    prometheus.exporter.set_traffic("baseline", rps=200, error_rate=0.01, latency_ms=40)
    prometheus.exporter.set_traffic("canary", rps=200, error_rate=0.01, latency_ms=400)
    bot = await make_bot(kayenta_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v4.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "100"] not in ran and ran[-1] == ["abort", "api"]

    thread = await thread_of(bot, "Rolled back in")
    why = next(t for t in thread if "Rolling back api on staging" in t)
    assert ":white_check_mark: error rate 1% vs 1% — passes" in why
    assert re.search(r":x: p99 latency 49\d ms vs 49.8 ms — fails: canary higher \(worse\) by "
                     r"\d+%, more than the 20% allowed", why), why
    assert "canary analysis failed at 50% (score 50/100 is below 75)" in why


async def test_identical_canary_scores_100_and_is_promoted(make_bot, tmp_path, prometheus):
    for track in ("baseline", "canary"):
        prometheus.exporter.set_traffic(track, rps=200, error_rate=0.01, latency_ms=40)
    bot = await make_bot(kayenta_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v4.0.1")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    assert actions_run(tmp_path)[-1] == ["promote", "api"]

    thread = await thread_of(bot, "is live on staging")
    report = next(t for t in thread if t.startswith("*Step 50% canary — pass*"))
    assert "(score 100)" in report
    assert "p99 latency 49.8 ms vs 49.8 ms — passes: no significant difference" in report
