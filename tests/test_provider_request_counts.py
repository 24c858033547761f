"""Prometheus and the HTTP checks go through the shared HTTP client (``integrations.http``
``new_client``), like every other provider: each request is counted in ``/metrics``
under its provider label, and logged by path only (no query string, no headers, so no
token). Unit-level with the options' transport, then through a running bot."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client import generate_latest

from bot.metrics import Metrics
from integrations.http import HttpOptions
from integrations.http_check import HttpCheckConfig, run_check
from integrations.metrics import MetricsError
from integrations.prometheus import PrometheusProvider
from integrations.prometheus_http import PrometheusConfig
from tests.conftest import serving
from tests.test_deploy_flow import finished
from tests.test_strategies import check, config, health  # noqa: F401  (fixture)

SECRET = "s3cret-token-value"
VECTOR = {"status": "success", "data": {"resultType": "vector", "result": [
    {"metric": {}, "value": [1700000000.0, "0.25"]}]}}
Handler = Any


def count(metrics: Metrics, provider: str, method: str, outcome: str) -> float:
    found = metrics.registry.get_sample_value(
        "shipbot_provider_requests_total",
        {"provider": provider, "method": method, "outcome": outcome})
    return found or 0.0


def options(metrics: Metrics, handler: Handler) -> HttpOptions:
    return HttpOptions(observe=metrics.count_provider_request,
                       transport=httpx.MockTransport(handler))


def prometheus(metrics: Metrics, handler: Handler) -> PrometheusProvider:
    provider = PrometheusProvider(
        PrometheusConfig(url="http://prom.example:9090/prom", bearer_token_env="PROM_TOKEN"),
        environ={"PROM_TOKEN": SECRET}, options=options(metrics, handler))
    provider.RETRY_WAIT_SECONDS = 0
    return provider


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "integrations.http"]


async def test_a_prometheus_query_is_counted_and_logged_without_its_query(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="integrations.http")
    metrics, seen = Metrics(), []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=VECTOR)

    value = await prometheus(metrics, answer).query(
        'sum(rate(http_requests_total{job="api"}[5m]))', at=datetime(2026, 11, 25, tzinfo=UTC))

    assert value == 0.25
    [request] = seen
    assert request.headers["authorization"] == f"Bearer {SECRET}"  # sent, never shown
    assert request.url.path == "/prom/api/v1/query" and "query" in request.url.params
    assert count(metrics, "prometheus", "GET", "2xx") == 1
    assert ('shipbot_provider_requests_total{method="GET",outcome="2xx",provider="prometheus"}'
            ' 1.0') in generate_latest(metrics.registry).decode()
    assert logged(caplog) == ["prometheus GET /prom/api/v1/query -> 200"]
    assert SECRET not in caplog.text and "rate(" not in caplog.text


async def test_prometheus_retries_and_failures_are_each_counted() -> None:
    metrics, answers = Metrics(), [httpx.Response(503, text="overloaded"),
                                   httpx.Response(200, json=VECTOR)]
    assert await prometheus(metrics, lambda _r: answers.pop(0)).query("up") == 0.25
    assert (count(metrics, "prometheus", "GET", "5xx"),
            count(metrics, "prometheus", "GET", "2xx")) == (1, 1)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with pytest.raises(MetricsError) as failed:
        await prometheus(metrics, refuse).query("up")
    assert str(failed.value) == ("could not reach Prometheus at http://prom.example:9090/prom: "
                                 "Connection refused")
    assert count(metrics, "prometheus", "GET", "error") == 3  # every attempt, no answer


async def test_an_http_check_is_counted_and_logged_without_its_query(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="integrations.http")
    metrics = Metrics()
    config = HttpCheckConfig(name="health", url="https://{env}.example.com/healthz?key="
                             f"{SECRET}&version={{version}}", bearer_token_env="CHECK_TOKEN")

    result = await run_check(config, service="api", env="staging", version="v1.2.3",
                             environ={"CHECK_TOKEN": SECRET},
                             options=options(metrics, lambda _r: httpx.Response(200)))

    assert result.passed, result.detail
    assert count(metrics, "http_check", "GET", "2xx") == 1
    assert logged(caplog) == ["http_check GET /healthz -> 200"]
    assert SECRET not in caplog.text and "v1.2.3" not in caplog.text


async def test_an_http_check_counts_every_attempt_with_its_outcome() -> None:
    metrics, answers = Metrics(), [httpx.Response(503), httpx.Response(200)]
    config = HttpCheckConfig(name="health", url="https://x.example.com/healthz", method="HEAD",
                             retries=1, retry_interval_seconds=0)
    assert (await run_check(config, service="api", env="dev", version="1",
                            options=options(metrics, lambda _r: answers.pop(0)))).passed
    assert (count(metrics, "http_check", "HEAD", "5xx"),
            count(metrics, "http_check", "HEAD", "2xx")) == (1, 1)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    result = await run_check(config, service="api", env="dev", version="1",
                             options=options(metrics, refuse))
    assert result.detail == ("HEAD https://x.example.com/healthz: could not connect "
                             "([Errno 111] Connection refused) after 2 attempts")
    assert count(metrics, "http_check", "HEAD", "error") == 2


async def test_a_running_bots_checks_and_prometheus_show_in_its_metrics(
        launch, tmp_path, health) -> None:  # noqa: F811
    """The runtime hands its HttpOptions to the steps' context and the metrics provider."""
    async def api(request: web.Request) -> web.Response:
        return web.json_response(VECTOR)

    app = web.Application()
    app.router.add_get("/api/v1/query", api)
    async with serving(app) as port:
        shipbot = config(tmp_path, {"kind": "rolling", "checks": [check(health)]})
        shipbot.metrics = PrometheusConfig(url=f"http://127.0.0.1:{port}")
        bot = await launch(shipbot)
        await bot.driver.command("api staging v1.0.0")
        [dep] = await finished(bot, 1)
        assert dep.state == "succeeded", dep.detail
        provider = bot.bot.runner.metrics_provider
        assert provider is not None and await provider.query("up") == 0.25

    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert ('shipbot_provider_requests_total{method="GET",outcome="2xx",'
            'provider="http_check"} 1.0') in metrics
    assert ('shipbot_provider_requests_total{method="GET",outcome="2xx",'
            'provider="prometheus"} 1.0') in metrics
