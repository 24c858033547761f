"""What interval each judge sees. Both tracks are judged over the same interval: a
baseline whose pods have served for days is compared with the canary on what it served
since the step started, not over its whole life (a real Prometheus, the sequential judge
on counters, the whole app); the threshold judge measures the last interval, as Argo
Rollouts and Flagger do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import ShipbotConfig
from bot.config_delivery import AnalysisConfig
from bot.engine.measure import measure
from bot.store.models import Deployment
from integrations.metrics import CumulativeCounters, Sample
from integrations.promql import render_query
from tests.test_deploy_flow import finished
from tests.test_latency_analysis import thread_of
from tests.test_progressive import actions_run, canary_config

pytest_plugins = ["tests.prometheus_fixture"]

SELECTOR = 'service="{service}",track="{track}"'
REQUESTS = f"sum(http_requests_total{{{SELECTOR}}})"
ERRORS = f'sum(http_requests_total{{{SELECTOR},code=~"5.."}})'


def counts_config(tmp_path: Path, prometheus_url: str, **metric: Any) -> ShipbotConfig:
    """A 50 % -> 100 % canary judged on its error rate by the sequential test."""
    spec = {"name": "errors", "label": "error rate", "unit": "ratio", "judge": "sequential",
            "requests_query": REQUESTS, "errors_query": ERRORS, "min_requests": 300,
            **metric}
    return canary_config(tmp_path, prometheus_url, interval="6s", analysis={
        "window": "5s", "resolution": "1s", "check_every": "1s", "metrics": [spec]})


async def test_a_long_lived_healthy_baseline_does_not_fail_a_canary_as_good_as_it(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    # A day of baseline traffic with almost no errors, then a bad hour for everyone:
    # the canary serves exactly what the baseline serves now.
    exporter = prometheus.exporter
    exporter.record("baseline", requests=2_000_000, errors=200)
    exporter.set_traffic("baseline", rps=300, error_rate=0.03)
    exporter.set_traffic("canary", rps=300, error_rate=0.03)
    await prometheus.wait_for_points('sum(http_requests_total{track="baseline"}) > 1e6', 1)
    bot = await make_bot(counts_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    assert ["promote", "api"] in actions_run(tmp_path)


async def test_a_canary_worse_than_the_baseline_now_is_still_caught(
        make_bot: Any, tmp_path: Path, prometheus: Any) -> None:
    exporter = prometheus.exporter
    exporter.record("baseline", requests=2_000_000, errors=100_000)  # a bad day, 5 %
    exporter.set_traffic("baseline", rps=300, error_rate=0.005)
    exporter.set_traffic("canary", rps=300, error_rate=0.04)  # 8x the baseline now
    await prometheus.wait_for_points('sum(http_requests_total{track="baseline"}) > 1e6', 1)
    bot = await make_bot(counts_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    thread = await thread_of(bot, "Rolled back in")
    why = next(t for t in thread if "Rolling back api on staging" in t)
    assert "canary analysis failed at 50%" in why


class RangeLog(CumulativeCounters):
    """A MetricsProvider that records each range query's interval and answers one point."""

    render_query = staticmethod(render_query)

    def __init__(self) -> None:
        self.ranges: list[tuple[str, datetime, datetime]] = []

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> list[Sample]:
        self.ranges.append((query, start, end))
        return [Sample(end, 0.01)]

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        raise AssertionError("no counters here")

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        raise AssertionError("no histograms here")


def analysis_of(*metrics: dict[str, Any], **settings: Any) -> AnalysisConfig:
    return AnalysisConfig.model_validate({"check_every": "30s", "metrics": list(metrics),
                                          **settings})


DEP = Deployment(request_key="k", service="api", env="staging", version="2.0.0",
                 previous_version="1.0.0", requester="U1", state="verifying",
                 channel="#deploys-api", created_at=datetime.now(UTC),
                 updated_at=datetime.now(UTC))


@pytest.mark.parametrize(("settings", "seconds"), [({}, 30), ({"measurement_window": "2m"}, 120)])
async def test_threshold_measures_the_last_interval_not_the_step_so_far(
        settings: dict[str, Any], seconds: int) -> None:
    # A start-up transient early in a long step must not weigh on every later check.
    analysis = analysis_of({"name": "err", "judge": "threshold", "query": 'q{track="{track}"}',
                            "max": 0.05},
                           {"name": "lat", "judge": "mann-whitney", "query": 'm{track="{track}"}'},
                           **settings)
    provider = RangeLog()
    step_start = datetime(2026, 12, 5, 7, 0, tzinfo=UTC)
    now = step_start + timedelta(minutes=10)
    await measure(provider, analysis, DEP, step_start, now)
    starts = {query: start for query, start, end in provider.ranges}
    assert starts['q{track="canary"}'] == starts['q{track="baseline"}'] == \
        now - timedelta(seconds=seconds)
    assert starts['m{track="canary"}'] == starts['m{track="baseline"}'] == step_start
    early = now - timedelta(seconds=10)  # the window never reaches back before the step
    provider.ranges.clear()
    await measure(provider, analysis, DEP, early, now)
    assert {start for _, start, _ in provider.ranges} == {early}
