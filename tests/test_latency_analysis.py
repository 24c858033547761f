"""Latency canaries judged by the sequential test on histogram buckets from a real Prometheus.

The buckets travel the whole path users rely on: PromQL template -> ``query_buckets`` ->
``measure`` -> the sequential judge -> rollback or promotion, and the thread says why.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.config import ConfigError, ShipbotConfig
from bot.config_delivery import AnalysisConfig
from bot.engine.analysis import Verdict
from bot.engine.analysis.judge import judge_metric
from bot.engine.measure import measure
from bot.store.models import Deployment
from integrations.metrics import CumulativeCounters, MetricsError, Sample
from integrations.promql import render_query
from tests.conftest import eventually
from tests.test_deploy_flow import finished
from tests.test_progressive import ERROR_RATE, actions_run, canary_config

pytest_plugins = ["tests.prometheus_fixture"]

LATENCY = ('sum by (le) (http_request_duration_seconds_bucket{service="{service}",'
           'track="{track}"})')


def latency_config(tmp_path: Path, prometheus_url: str, **metric: Any) -> ShipbotConfig:
    """A 50 % -> 100 % canary judged only on latency, checked every second."""
    spec = {"name": "latency", "label": "latency", "unit": "seconds", "judge": "sequential",
            "histogram_query": LATENCY, "min_requests": 200, **metric}
    return canary_config(tmp_path, prometheus_url, interval="5s", analysis={
        "window": "5s", "resolution": "1s", "check_every": "1s", "metrics": [spec]})


async def thread_of(bot: Any, done: str) -> list[str]:
    """The deployment thread's texts once a message containing ``done`` is in it."""
    async def check() -> list[str] | None:
        thread = [r["text"] for r in bot.slack.messages("#deploys-api")[0]["replies"]]
        return thread if any(done in t for t in thread) else None

    return await eventually(check)


async def test_slow_canary_is_rolled_back_on_latency(make_bot, tmp_path, prometheus) -> None:
    prometheus.exporter.set_traffic("baseline", rps=200, latency_ms=40)
    prometheus.exporter.set_traffic("canary", rps=200, latency_ms=400)
    bot = await make_bot(latency_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v3.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "50"] in ran
    assert ["set_weight", "api", "100"] not in ran and ["promote", "api"] not in ran
    assert ran[-1] == ["abort", "api"]

    thread = await thread_of(bot, "Rolled back in")
    why = next(t for t in thread if "Rolling back api on staging" in t)
    assert "canary analysis failed at 50%" in why
    assert "latency p50 375 ms vs 37.5 ms" in why  # interpolated within the buckets
    assert "canary latency is stochastically larger" in why
    assert "safe to roll back now" in why


async def test_canary_as_fast_as_baseline_is_promoted(make_bot, tmp_path, prometheus) -> None:
    prometheus.exporter.set_traffic("baseline", rps=200, latency_ms=40)
    prometheus.exporter.set_traffic("canary", rps=200, latency_ms=40)
    bot = await make_bot(latency_config(tmp_path, prometheus.url))
    await bot.driver.command("api staging v3.0.1")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    ran = actions_run(tmp_path)
    assert ["set_weight", "api", "50"] in ran and ["set_weight", "api", "100"] in ran
    assert ran[-1] == ["promote", "api"]

    thread = await thread_of(bot, "is live on staging")
    report = next(t for t in thread if t.startswith("*Step 50% canary — pass*"))
    # Every request is in the 25-50 ms bucket, so p50 interpolates to its middle.
    assert "latency p50 37.5 ms vs 37.5 ms" in report
    assert "passes: no regression detected so far" in report


def test_sequential_metrics_take_counters_or_a_histogram(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    analysis = latency_config(tmp_path, url).strategy_for("api", "staging").analysis
    assert analysis is not None and analysis.metrics[0].histogram_query == LATENCY
    with pytest.raises(ConfigError, match=r"requests_query and errors_query "
                       r"\(error rate\) or histogram_query \(latency\)"):
        latency_config(tmp_path, url, histogram_query=None)
    with pytest.raises(ConfigError, match="not both; use two metrics"):
        latency_config(tmp_path, url, requests_query="sum(x)", errors_query="sum(y)")
    with pytest.raises(ConfigError, match="histogram_query is only for judge: sequential"):
        latency_config(tmp_path, url, judge="threshold", max_relative=1.2, query=ERROR_RATE)
    with pytest.raises(ConfigError, match=r"\{trak\}"):
        latency_config(tmp_path, url, histogram_query='sum by (le) (x{track="{trak}"})')


class FakeBuckets(CumulativeCounters):
    """A MetricsProvider answering ``query_buckets`` per track; records the queries."""

    render_query = staticmethod(render_query)

    def __init__(self, start: datetime | None = None,
                 at_start: dict[str, dict[float, float]] | None = None,
                 **per_track: dict[float, float] | MetricsError) -> None:
        self.per_track, self.start, self.at_start = per_track, start, at_start or {}
        self.queries: list[tuple[str, datetime | None]] = []

    async def query_range(self, query: str, start: datetime, end: datetime,
                          step: float) -> list[Sample]:
        raise AssertionError("a histogram metric needs no range query")

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        raise AssertionError("a histogram metric needs no counters")

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        self.queries.append((query, at))
        track = "canary" if 'track="canary"' in query else "baseline"
        answer = self.at_start.get(track, {}) if at == self.start else self.per_track[track]
        if isinstance(answer, MetricsError):
            raise answer
        return answer


async def test_measure_takes_the_buckets_increase_over_the_step_and_keeps_no_data_as_none(
) -> None:
    analysis = AnalysisConfig.model_validate({"metrics": [{
        "name": "latency", "judge": "sequential", "unit": "seconds",
        "histogram_query": 'sum by (le) (x_bucket{track="{track}"}[{window}])'}]})
    dep = Deployment(request_key="k", service="api", env="staging", version="2.0.0",
                     previous_version="1.0.0", requester="U1", state="verifying",
                     channel="#deploys-api", created_at=datetime.now(UTC),
                     updated_at=datetime.now(UTC))
    end = datetime.now(UTC)
    start = end - timedelta(seconds=30)
    # The baseline served long before the step; the canary had no series at its start.
    provider = FakeBuckets(start, {"baseline": {0.1: 1000.2, math.inf: 1001.0}},
                           canary={0.1: 9.6, math.inf: 10.4},
                           baseline={0.1: 1003.0, math.inf: 1004.0})
    series = (await measure(provider, analysis, dep, start, end))["latency"]
    assert series is not None
    # 10.4 requests, 0.8 of them slower than 0.1 s: whole ones, the slow count rounded
    assert series.canary_histogram == {0.1: 9, math.inf: 10}
    assert series.baseline_histogram == {0.1: 3, math.inf: 3}
    baseline = 'sum by (le) (x_bucket{track="baseline"}[1m])'
    canary = 'sum by (le) (x_bucket{track="canary"}[1m])'
    assert sorted(provider.queries) == sorted([(baseline, start), (baseline, end),
                                               (canary, start), (canary, end)])

    empty = FakeBuckets(canary={}, baseline={0.1: 3.0, math.inf: 3.0})
    series = (await measure(empty, analysis, dep, end, end))["latency"]
    assert series is not None and series.canary_histogram is None
    result, _ = judge_metric(analysis.metrics[0], series, None)
    assert result.verdict is Verdict.INCONCLUSIVE

    broken = FakeBuckets(canary=MetricsError("no le"), baseline={})
    assert (await measure(broken, analysis, dep, end, end))["latency"] is None
