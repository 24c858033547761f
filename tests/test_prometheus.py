"""The Prometheus provider: API parsing against documented payloads and an end-to-end
canary scenario against a real Prometheus server (templates: tests/test_promql.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import httpx
import pytest
from pydantic import ValidationError

from integrations.base import IntegrationError
from integrations.metrics import MetricsError, MetricsProvider, Sample, Samples
from integrations.prometheus import PrometheusConfig, PrometheusProvider
from integrations.promql import render_query
from tests.test_promql import ERROR_RATIO

if TYPE_CHECKING:  # imported by pytest_plugins, so that its asserts get rewritten
    from tests.prometheus_server import PrometheusServer

pytest_plugins = ["tests.prometheus_fixture"]

T0 = datetime(2015, 7, 1, 20, 10, 30, 781000, tzinfo=UTC)
T1 = T0 + timedelta(seconds=30)

# Payloads as shown in https://prometheus.io/docs/prometheus/latest/querying/api/
DOC_MATRIX: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "job": "prometheus", "instance": "localhost:9090"},
                "values": [[1435781430.781, "1"], [1435781445.781, "1"], [1435781460.781, "1"]],
            },
            {
                "metric": {"__name__": "up", "job": "node", "instance": "localhost:9091"},
                "values": [[1435781430.781, "0"], [1435781445.781, "0"], [1435781460.781, "1"]],
            },
        ],
    },
}
DOC_VECTOR: dict[str, Any] = {
    "status": "success",
    "data": {
        "resultType": "vector",
        "result": [
            {
                "metric": {"__name__": "up", "job": "prometheus", "instance": "localhost:9090"},
                "value": [1435781451.781, "1"],
            },
            {
                "metric": {"__name__": "up", "job": "node", "instance": "localhost:9100"},
                "value": [1435781451.781, "0"],
            },
        ],
    },
}


def one_series(payload: dict[str, Any]) -> dict[str, Any]:
    """The doc payload cut down to its first series, as an aggregated query returns."""
    data = payload["data"]
    return {**payload, "data": {**data, "result": data["result"][:1]}}


def matrix(values: list[list[Any]]) -> dict[str, Any]:
    return {"status": "success",
            "data": {"resultType": "matrix", "result": [{"metric": {}, "values": values}]}}


Handler = Callable[[httpx.Request], httpx.Response]


def make_provider(handler: Handler, *, environ: dict[str, str] | None = None,
                  **config: Any) -> tuple[PrometheusProvider, list[httpx.Request]]:
    """A provider whose HTTP goes to ``handler``; also returns the requests it saw."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    cfg = PrometheusConfig.model_validate({"url": "http://prom.example:9090/", **config})
    provider = PrometheusProvider(cfg, client=client, environ=environ or {})
    provider.RETRY_WAIT_SECONDS = 0
    return provider, seen


def reply(payload: Any, status: int = 200) -> Handler:
    return lambda _request: httpx.Response(status, json=payload)


# --- protocol and value types ----------------------------------------------------------


def test_provider_satisfies_protocol_and_errors_are_integration_errors() -> None:
    provider: MetricsProvider = make_provider(reply(DOC_MATRIX))[0]
    assert provider is not None
    assert issubclass(MetricsError, IntegrationError)
    assert isinstance(Samples([Sample(T0, 1.0)]), list)


# --- parsing documented responses ------------------------------------------------------


async def test_query_range_parses_a_matrix_and_sends_the_documented_params() -> None:
    provider, seen = make_provider(reply(one_series(DOC_MATRIX)))
    samples = await provider.query_range("up", T0, T1, 15)
    assert [s.value for s in samples] == [1.0, 1.0, 1.0]
    assert samples[0].timestamp == datetime.fromtimestamp(1435781430.781, UTC)
    assert samples.skipped == 0 and samples.warnings == ()
    (request,) = seen
    assert request.method == "GET"
    assert request.url.path == "/api/v1/query_range"  # trailing slash of the url dropped
    params = request.url.params
    assert params["query"] == "up"
    assert float(params["start"]) == pytest.approx(T0.timestamp())
    assert float(params["end"]) == pytest.approx(T1.timestamp())
    assert params["step"] == "15.0" and params["timeout"] == "10.0"


async def test_instant_query_parses_vector_and_scalar() -> None:
    provider, seen = make_provider(reply(one_series(DOC_VECTOR)))
    assert await provider.query("up", at=T0) == 1.0
    assert float(seen[0].url.params["time"]) == pytest.approx(T0.timestamp())
    assert seen[0].url.path == "/api/v1/query"
    scalar = {"status": "success", "data": {"resultType": "scalar",
                                            "result": [1435781451.781, "0.25"]}}
    provider, seen = make_provider(reply(scalar))
    assert await provider.query("scalar(0.25)") == 0.25
    assert "time" not in seen[0].url.params


async def test_empty_results_are_no_data_not_errors() -> None:
    empty_matrix = {"status": "success", "data": {"resultType": "matrix", "result": []}}
    empty_vector = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert await make_provider(reply(empty_matrix))[0].query_range("x", T0, T1, 1) == []
    assert await make_provider(reply(empty_vector))[0].query("x") is None


async def test_nan_and_inf_are_skipped_but_counted() -> None:
    payload = matrix([[1, "0.5"], [2, "NaN"], [3, "+Inf"], [4, "-Inf"], [5, "0.25"]])
    samples = await make_provider(reply(payload))[0].query_range("x", T0, T1, 1)
    assert [s.value for s in samples] == [0.5, 0.25]
    assert samples.skipped == 3
    nan = {"status": "success", "data": {"resultType": "vector",
                                         "result": [{"metric": {}, "value": [1, "NaN"]}]}}
    assert await make_provider(reply(nan))[0].query("x") is None


async def test_multiple_series_must_be_aggregated() -> None:
    provider, _ = make_provider(reply(DOC_MATRIX))
    with pytest.raises(MetricsError, match=r"2 series .*must aggregate to one.*sum\(") as err:
        await provider.query_range("up", T0, T1, 15)
    assert 'job="node"' in str(err.value)
    with pytest.raises(MetricsError, match="must aggregate"):
        await make_provider(reply(DOC_VECTOR))[0].query("up")


async def test_error_response_carries_prometheus_text_and_is_not_retried() -> None:
    body = {"status": "error", "errorType": "bad_data",
            "error": 'invalid parameter "query": 1:6: parse error: unexpected "}"'}
    provider, seen = make_provider(reply(body, 400))
    with pytest.raises(MetricsError) as err:
        await provider.query_range("rate(}", T0, T1, 1)
    assert str(err.value) == (
        'Prometheus could not run the query (bad_data): '
        'invalid parameter "query": 1:6: parse error: unexpected "}"'
    )
    assert not err.value.transient
    assert len(seen) == 1


async def test_503_is_retried_briefly_then_reported() -> None:
    provider, seen = make_provider(lambda _r: httpx.Response(503, text="upstream down"))
    with pytest.raises(MetricsError, match="answered HTTP 503: upstream down") as err:
        await provider.query("up")
    assert err.value.transient
    assert len(seen) == provider.RETRY_ATTEMPTS == 3


async def test_transient_failure_then_success() -> None:
    answers = iter([httpx.Response(502), httpx.Response(200, json=one_series(DOC_VECTOR))])
    provider, seen = make_provider(lambda _r: next(answers))
    assert await provider.query("up") == 1.0
    assert len(seen) == 2


async def test_connection_errors_are_retried_read_timeouts_are_not() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    provider, seen = make_provider(refuse)
    with pytest.raises(MetricsError, match=r"could not reach Prometheus at "
                       r"http://prom.example:9090: \[Errno 111\] Connection refused"):
        await provider.query("up")
    assert len(seen) == 3

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    provider, seen = make_provider(slow, timeout_seconds=2)
    with pytest.raises(MetricsError, match="did not answer within 2s") as err:
        await provider.query("up")
    assert err.value.transient and len(seen) == 1


async def test_queries_beyond_what_prometheus_runs_at_once_wait_in_the_bot() -> None:
    """Fifty canaries judged together ask ~500 queries at once: Prometheus runs 20 at a
    time (``--query.max-concurrency``) and each one open in the bot is a task on the event
    loop that also acks slash commands (bench/canary_ack.py). The rest wait their turn."""
    limit = PrometheusProvider.MAX_IN_FLIGHT
    in_flight, most, release = 0, 0, asyncio.Event()

    async def held(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        await release.wait()
        in_flight -= 1
        return httpx.Response(200, json=one_series(DOC_VECTOR))

    provider, seen = make_provider(held)  # type: ignore[arg-type]
    queries = [asyncio.ensure_future(provider.query("up")) for _ in range(3 * limit)]
    for _ in range(20):  # every query that may start reaches Prometheus
        await asyncio.sleep(0)
    assert (in_flight, len(seen)) == (limit, limit)
    release.set()
    assert await asyncio.gather(*queries) == [1.0] * 3 * limit
    assert (most, len(seen)) == (limit, 3 * limit)


async def test_a_query_that_waits_its_whole_timeout_for_a_turn_fails_as_unreachable() -> None:
    release = asyncio.Event()

    async def held(_request: httpx.Request) -> httpx.Response:
        await release.wait()
        return httpx.Response(200, json=one_series(DOC_VECTOR))

    provider, seen = make_provider(held, timeout_seconds=0.05)  # type: ignore[arg-type]
    busy = [asyncio.ensure_future(provider.query("up"))
            for _ in range(PrometheusProvider.MAX_IN_FLIGHT)]
    for _ in range(20):  # they reach Prometheus first
        await asyncio.sleep(0)
    with pytest.raises(MetricsError, match=r"could not connect to Prometheus at "
                       r"http://prom.example:9090 \(timed out\)") as err:
        await provider.query("up")
    assert err.value.transient and len(seen) == PrometheusProvider.MAX_IN_FLIGHT
    release.set()
    assert await asyncio.gather(*busy) == [1.0] * PrometheusProvider.MAX_IN_FLIGHT


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (200, "<html>Grafana</html>", "unexpected response .*not a JSON object"),
        (200, '{"status": "success"}', "unexpected response"),
        (200, '{"status": "success", "data": {"resultType": "matrix", "result": '
              '[{"metric": {}, "values": [[1]]}]}}', r"not \[time, value\]"),
        (404, "404 page not found", "answered HTTP 404: 404 page not found"),
        (401, "Unauthorized", r"refused the request \(HTTP 401\); check bearer_token_env"),
        (422, '{"status":"error","errorType":"execution","error":"many-to-many matching"}',
         r"\(execution\): many-to-many matching"),
    ],
)
async def test_bad_answers_become_clear_errors(status: int, body: str, message: str) -> None:
    provider, _ = make_provider(lambda _r: httpx.Response(status, text=body))
    with pytest.raises(MetricsError, match=message):
        await provider.query_range("up", T0, T1, 1)


async def test_instant_query_rejects_range_vectors() -> None:
    provider, _ = make_provider(reply(one_series(DOC_MATRIX)))
    with pytest.raises(MetricsError, match=r"range vector.*\[range\] selector"):
        await provider.query("up[5m]")


async def test_warnings_are_kept() -> None:
    payload = {**one_series(DOC_MATRIX), "warnings": ["partial response: store-2 down"]}
    samples = await make_provider(reply(payload))[0].query_range("up", T0, T1, 15)
    assert samples.warnings == ("partial response: store-2 down",)


async def test_long_queries_are_posted_as_a_form() -> None:
    provider, seen = make_provider(reply(one_series(DOC_VECTOR)))
    long_query = "sum(up)" + " " * 3000
    assert await provider.query(long_query) == 1.0
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert parse_qs(request.content.decode())["query"] == [long_query]


async def test_bearer_token_comes_from_the_environment_and_never_leaks() -> None:
    token = "s3cr3t-token-value"
    provider, seen = make_provider(lambda _r: httpx.Response(401, text="nope"),
                                   environ={"PROM_TOKEN": token},
                                   bearer_token_env="PROM_TOKEN", headers={"X-Scope-OrgID": "t1"})
    with pytest.raises(MetricsError) as err:
        await provider.query("up")
    assert seen[0].headers["authorization"] == f"Bearer {token}"
    assert seen[0].headers["x-scope-orgid"] == "t1"
    assert token not in str(err.value) and token not in repr(provider.__dict__.get("_config"))

    provider, seen = make_provider(reply(DOC_VECTOR), bearer_token_env="PROM_TOKEN")
    with pytest.raises(MetricsError, match=r"PROM_TOKEN .*is not set"):
        await provider.query("up")
    assert seen == []


async def test_programming_errors_are_value_errors() -> None:
    provider, _ = make_provider(reply(DOC_MATRIX))
    with pytest.raises(ValueError, match="timezone-aware"):
        await provider.query_range("up", datetime(2024, 1, 1), T1, 1)
    with pytest.raises(ValueError, match="step"):
        await provider.query_range("up", T0, T1, 0)
    with pytest.raises(ValueError, match="before start"):
        await provider.query_range("up", T1, T0, 1)


# --- histogram buckets -----------------------------------------------------------------


def buckets_vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    """An instant vector shaped like DOC_VECTOR, e.g. the answer to ``sum by (le) (...)``."""
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": metric, "value": [1435781451.781, value]} for metric, value in series]}}


BY_LE = 'sum by (le) (http_request_duration_seconds_bucket{service="api",track="canary"})'


async def test_query_buckets_reads_one_series_per_le() -> None:
    payload = buckets_vector(({"le": "+Inf"}, "1000"), ({"le": "0.1"}, "990"),
                             ({"le": "0.05"}, "900.5"), ({"le": "1e-2"}, "12"))
    provider, seen = make_provider(reply(payload))
    buckets = await provider.query_buckets(BY_LE, at=T0)
    assert buckets == {0.01: 12.0, 0.05: 900.5, 0.1: 990.0, math.inf: 1000.0}
    assert list(buckets) == [0.01, 0.05, 0.1, math.inf]  # sorted by bound
    (request,) = seen
    assert request.url.path == "/api/v1/query"
    assert request.url.params["query"] == BY_LE
    assert float(request.url.params["time"]) == pytest.approx(T0.timestamp())
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert await make_provider(reply(empty))[0].query_buckets(BY_LE) == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (buckets_vector(({"le": "0.1"}, "5"), ({"job": "api"}, "7")),
         r'without an le label \(\{job="api"\}\); .*must keep le, e.g. sum by \(le\)'),
        (buckets_vector(({"le": "0.1", "track": "canary"}, "5"),
                        ({"le": "0.1", "track": "baseline"}, "7")),
         r"two series for le=0.1 .*track=\"baseline\".*aggregate the other labels away"),
        (buckets_vector(({"le": "+Inf"}, "5"), ({"le": "+Inf", "code": "500"}, "1")),
         r"two series for le=\+Inf"),
        (buckets_vector(({"le": "0.1"}, "NaN")), r"le=0.1 has the value nan; .*cumulative"),
        (buckets_vector(({"le": "fast"}, "5")), r"le label 'fast' is not a bucket bound"),
        (one_series(DOC_MATRIX), r"range vector.*\[range\] selector"),
        ({"status": "success", "data": {"resultType": "scalar",
                                        "result": [1435781451.781, "1"]}},
         "returned a scalar, but a vector was expected"),
        ({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {}, "histogram": [1435781451.781, {"count": "10", "sum": "1"}]}]}},
         r"native histogram; query the classic _bucket series"),
    ],
)
async def test_query_buckets_errors_say_how_to_fix_the_query(
    payload: dict[str, Any], message: str,
) -> None:
    provider, _ = make_provider(reply(payload))
    with pytest.raises(MetricsError, match=message) as err:
        await provider.query_buckets(BY_LE)
    assert not err.value.transient


# --- config ----------------------------------------------------------------------------


def test_config_validation() -> None:
    cfg = PrometheusConfig.model_validate(
        {"provider": "prometheus", "url": "https://metrics.example/prometheus/"})
    assert cfg.url == "https://metrics.example/prometheus" and cfg.timeout_seconds == 10
    bad = [
        {"url": "http://x:9090", "password": "x"},  # extra=forbid
        {"url": "ftp://x"},
        {"url": "not a url"},
        {"url": "http://x:9090", "timeout_seconds": 0},
        {"url": "http://x:9090", "bearer_token_env": "lower-case"},
        {"url": "http://x:9090", "headers": {"Authorization": "Bearer abc"}},
        {"url": "http://x:9090", "headers": {"X-A": "a\r\nX-B: b"}},
        {"url": "http://x:9090?x=1"},
    ]
    for data in bad:
        with pytest.raises(ValidationError):
            PrometheusConfig.model_validate(data)
    with pytest.raises(ValidationError) as err:
        PrometheusConfig.model_validate({"url": "http://admin:hunter2@prom:9090"})
    assert "hunter2" not in str(err.value) and "bearer_token_env" in str(err.value)


# --- against a real Prometheus ---------------------------------------------------------

CANARY_ERRORS = (
    'sum(rate(http_requests_total{service="api",track="canary",code=~"5.."}[5s])) / '
    'sum(rate(http_requests_total{service="api",track="canary"}[5s]))'
)
P99 = ('histogram_quantile(0.99, sum by (le) '
       '(rate(http_request_duration_seconds_bucket{{service="api",track="{track}"}}[5s])))')


async def test_canary_error_ratio_and_latency_from_real_prometheus(
    prometheus: PrometheusServer,
) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("canary", rps=200, error_rate=0.05, latency_ms=400)
    exporter.set_traffic("baseline", rps=200, error_rate=0.001, latency_ms=40)

    samples = await prometheus.wait_for_points(CANARY_ERRORS, 3)
    assert all(abs(s.value - 0.05) < 0.005 for s in samples), samples
    assert samples.skipped == 0

    provider = prometheus.provider()
    end = datetime.now(UTC)
    baseline = await provider.query_range(
        render_query(ERROR_RATIO, service="api", env="production", track="baseline",
                     window="5s"), end - timedelta(seconds=30), end, 1)
    assert baseline and all(abs(s.value - 0.001) < 0.0005 for s in baseline)

    # All requests fall in one bucket, so p99 interpolates inside it.
    canary_p99 = await provider.query(P99.format(track="canary"))
    baseline_p99 = await provider.query(P99.format(track="baseline"))
    assert canary_p99 is not None and 0.25 < canary_p99 <= 0.5
    assert baseline_p99 is not None and 0.025 < baseline_p99 <= 0.05
    latency = await provider.query_range(P99.format(track="canary"),
                                         end - timedelta(seconds=30), end, 1)
    assert latency and all(0.25 < s.value <= 0.5 for s in latency)
    buckets = await provider.query_buckets(
        'sum by (le) (http_request_duration_seconds_bucket{service="api",track="canary"})')
    assert list(buckets) == [*exporter.BUCKETS, math.inf]
    assert buckets[0.25] == 0 and buckets[0.5] == buckets[math.inf] > 0  # all at 400 ms
    with pytest.raises(MetricsError, match=r"two series for le=.*aggregate the other labels"):
        await provider.query_buckets('http_request_duration_seconds_bucket{service="api"}')

    # rate() under-reads windows in which a series was born (no extrapolation back past
    # the first sample), so rps ramps up over one window, while ratios stay exact.
    rps = await prometheus.wait_for_points(
        'sum(rate(http_requests_total{track="canary"}[5s]))', 7)
    assert rps[0].value < 0.9 * 200
    assert rps[-1].value == pytest.approx(200, rel=0.05)
    assert prometheus.version.split(".")[0].isdigit()


async def test_real_prometheus_errors_and_edge_cases(prometheus: PrometheusServer) -> None:
    exporter = prometheus.exporter
    exporter.set_traffic("canary", rps=100, error_rate=0.02)
    exporter.record("baseline", requests=10)  # series exist, but no traffic: 0/0 = NaN
    await prometheus.wait_for_points('sum(rate(http_requests_total{track="canary"}[5s]))', 2)
    provider = prometheus.provider()
    end = datetime.now(UTC)
    start = end - timedelta(seconds=30)

    nan = await provider.query_range(
        'sum(rate(http_requests_total{track="baseline",code=~"5.."}[5s])) / '
        'sum(rate(http_requests_total{track="baseline"}[5s]))', start, end, 1)
    assert nan == [] and nan.skipped >= 2
    assert await provider.query('sum(rate(http_requests_total{track="baseline"}[5s])) / 0') \
        is None

    assert await provider.query_range('sum(nonexistent_metric{service="api"})',
                                      start, end, 1) == []
    assert await provider.query('sum(nonexistent_metric{service="api"})') is None

    with pytest.raises(MetricsError, match=r"\(bad_data\): .*parse error") as err:
        await provider.query_range("sum(rate(http_requests_total[5s]", start, end, 1)
    assert not err.value.transient
    with pytest.raises(MetricsError, match=r"returned 2 series .*code=\"200\".*sum\("):
        await provider.query('rate(http_requests_total{track="canary"}[5s])')
    with pytest.raises(MetricsError, match="range vector"):
        await provider.query('http_requests_total{track="canary"}[5s]')
    with pytest.raises(MetricsError, match=r"\(bad_data\): .*exceeded maximum resolution"):
        await provider.query_range("sum(up)", end - timedelta(days=1), end, 1)

    scalar = await provider.query("scalar(sum(up))")
    assert scalar == 1.0
    posted = prometheus.provider()
    posted.POST_ABOVE_CHARS = 0  # same answers through the POST form path
    assert await posted.query("scalar(sum(up))") == 1.0
    assert len(await posted.query_range(CANARY_ERRORS, start, end, 1)) >= 1

    stopped = PrometheusProvider(PrometheusConfig(url="http://127.0.0.1:9", timeout_seconds=2))
    stopped.RETRY_WAIT_SECONDS = 0
    with pytest.raises(MetricsError, match="could not reach Prometheus") as err:
        await stopped.query("up")
    assert err.value.transient

