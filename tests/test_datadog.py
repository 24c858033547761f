"""The ``datadog`` metrics provider against a fake Datadog API (httpx.MockTransport):
parsing the reference's answers, the sequential judge's counts, errors as messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.config_delivery import AnalysisConfig
from bot.engine.measure import measure
from bot.store.models import Deployment
from integrations.datadog import DatadogConfig, DatadogProvider
from integrations.http import HttpOptions
from integrations.metrics import MetricsError, MetricsProvider
from tests.fake_datadog import API_KEY, APP_KEY, FakeDatadog, Fault, fixture

ENV = {"DD_API_KEY": API_KEY, "DD_APP_KEY": APP_KEY}
NOW = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
HITS = "sum:trace.http.request.hits{service:api,track:canary}.as_count()"


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def provider(handler: Callable[[httpx.Request], httpx.Response], *, sleeps: Sleeps | None = None,
             environ: dict[str, str] | None = None, **config: Any) -> DatadogProvider:
    made = DatadogProvider(DatadogConfig(provider="datadog", **config),
                           options=HttpOptions(transport=httpx.MockTransport(handler)),
                           environ=ENV if environ is None else environ,
                           sleep=sleeps if sleeps is not None else Sleeps())
    made.RETRY_WAIT_SECONDS = 0
    return made


def replying(*answers: tuple[int, Any, dict[str, str]]) -> tuple[
        Callable[[httpx.Request], httpx.Response], list[httpx.Request]]:
    """A handler answering in turn (the last answer repeats); and the requests it got."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body, headers = answers[min(len(seen), len(answers)) - 1]
        return httpx.Response(status, json=body, headers=headers)

    return handler, seen


def ok(body: Any) -> tuple[int, Any, dict[str, str]]:
    return 200, body, {}


async def test_query_range_parses_the_references_answer() -> None:
    handler, seen = replying(ok(fixture("query.json")))
    dd: MetricsProvider = provider(handler)
    samples = await dd.query_range(HITS, NOW - timedelta(minutes=5), NOW, 10)
    assert [(s.timestamp, s.value) for s in samples] == [
        (datetime(2015, 4, 29, 12, 50, tzinfo=UTC), 98.19375610351562),
        (datetime(2015, 4, 29, 13, 0, tzinfo=UTC), 99.85856628417969)]
    [request] = seen
    assert request.url.host == "api.datadoghq.com" and request.url.path == "/api/v1/query"
    assert dict(request.url.params) == {"from": str(int(NOW.timestamp()) - 300),
                                        "to": str(int(NOW.timestamp())), "query": HITS}
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY


async def test_the_site_picks_the_api_host() -> None:
    handler, seen = replying(ok(fixture("query.json")))
    await provider(handler, site="datadoghq.eu").query_range(HITS, NOW, NOW, 1)
    assert str(seen[0].url).startswith("https://api.datadoghq.eu/api/v1/query?")
    assert dict(seen[0].url.params)["to"] == str(int(NOW.timestamp()) + 1)  # from < to


async def test_several_series_say_how_to_aggregate() -> None:
    handler, _ = replying(ok(fixture("query_by_host.json")))
    with pytest.raises(MetricsError) as caught:
        await provider(handler).query_range("system.cpu.idle{*}by{host}", NOW, NOW, 1)
    message = str(caught.value)
    assert "returned 2 series" in message
    assert "{host:vagrant-ubuntu-trusty-64}, {host:vagrant-ubuntu-trusty-32}" in message
    assert "start it with sum:" in message and "drop any `by {...}`" in message
    assert not caught.value.transient


async def test_no_series_is_no_data_not_an_error() -> None:
    empty = {**fixture("query.json"), "series": []}
    handler, _ = replying(ok(empty))
    dd = provider(handler)
    assert await dd.query_range(HITS, NOW, NOW, 1) == []
    assert await dd.query(HITS, NOW) is None
    assert await dd.increase(HITS, NOW - timedelta(minutes=1), NOW) is None


async def test_null_points_are_skipped_and_counted() -> None:
    body = fixture("query.json")
    t0 = (NOW - timedelta(minutes=1)).timestamp() * 1000  # in the range asked for
    body["series"][0]["pointlist"] = [[t0, 1.5], [t0 + 1000, None],
                                      [t0 + 2000, 2.5], [t0 + 3000, None]]
    handler, _ = replying(ok(body))
    dd = provider(handler)
    samples = await dd.query_range(HITS, NOW, NOW, 1)
    assert [s.value for s in samples] == [1.5, 2.5]
    assert samples.skipped == 2
    assert await dd.query(HITS, NOW) == 2.5  # the last non-null point
    assert await dd.increase(HITS, NOW - timedelta(minutes=1), NOW) == 4.0


async def test_query_reads_the_last_point_of_a_short_range() -> None:
    handler, seen = replying(ok(fixture("query.json")))
    value = await provider(handler, instant_lookback_seconds=120).query(HITS, NOW)
    assert value == 99.85856628417969
    assert seen[0].url.params["from"] == str(int(NOW.timestamp()) - 120)


async def test_interval_counts_add_up_from_the_step_start() -> None:
    """Datadog's .as_count() is per interval: two checks' totals since the step started
    differ by exactly the requests in between, as the sequential judge needs."""
    fake = FakeDatadog(started=0)
    fake.set_traffic("canary", rps=12.5, error_rate=0.04)
    dd = provider(fake.handler)
    step_start = NOW - timedelta(seconds=240)
    first = await dd.increase(HITS, step_start, NOW - timedelta(seconds=60))
    second = await dd.increase(HITS, step_start, NOW)
    assert first == 12.5 * 181 and second == 12.5 * 241  # one point a second, inclusive
    assert second - first == 12.5 * 60
    errors = HITS.replace(".hits", ".errors")
    assert await dd.increase(errors, step_start, NOW) == pytest.approx(0.5 * 241)
    assert fake.requests[0].url.params["from"] == str(int(step_start.timestamp()))
    # Longer ranges come in coarser intervals (Datadog's rollup): the total is the same.
    day = await dd.increase(HITS, NOW - timedelta(hours=1), NOW)
    assert day == pytest.approx(12.5 * 3600, rel=0.01)


async def test_an_interval_that_begins_before_the_step_start_is_not_counted() -> None:
    """Datadog's rollup grows with the range and aligns to its multiples, so the first
    point's interval may begin before the step started: it is dropped, never counted."""
    fake = FakeDatadog(started=0, floor_buckets=True)
    fake.set_traffic("canary", rps=12.5)
    dd = provider(fake.handler)
    step_start = NOW - timedelta(seconds=1001)  # 4 s intervals; the first begins 3 s early
    total = await dd.increase(HITS, step_start, NOW)
    [answer] = fake.requests
    assert answer.url.params["from"] == str(int(step_start.timestamp()))
    # no more than was served from step_start to the end of the last interval (NOW + 4 s)
    assert total is not None and total <= 12.5 * (1001 + 4)
    assert total == 12.5 * 4 * 251  # the intervals from step_start + 1 s to NOW


async def test_histogram_buckets_are_refused_with_what_to_do() -> None:
    handler, seen = replying(ok(fixture("query.json")))
    with pytest.raises(MetricsError, match=r"no histogram buckets by le: use query with a "
                                           r"percentile .* threshold or mann-whitney"):
        await provider(handler).query_buckets("avg:x{*}", NOW)
    assert not seen


async def test_refused_keys_name_the_variables_never_the_values(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    handler, _ = replying((403, fixture("error_403.json"), {}))
    with pytest.raises(MetricsError) as caught:
        await provider(handler).query_range(HITS, NOW, NOW, 1)
    message = str(caught.value)
    assert message.startswith("the Datadog API or application key was refused (HTTP 403: "
                              "Forbidden): check DD_API_KEY / DD_APP_KEY")
    assert not caught.value.transient
    for secret in (API_KEY, APP_KEY):
        assert secret not in message and secret not in caplog.text


async def test_custom_key_variables_are_named() -> None:
    handler, _ = replying((403, fixture("error_403.json"), {}))
    dd = provider(handler, api_key_env="DATADOG_API", app_key_env="DATADOG_APP",
                  environ={"DATADOG_API": "a" * 32, "DATADOG_APP": "b" * 40})
    with pytest.raises(MetricsError, match="check DATADOG_API / DATADOG_APP"):
        await dd.query(HITS, NOW)


async def test_a_missing_key_variable_is_said_before_any_request() -> None:
    handler, seen = replying(ok(fixture("query.json")))
    with pytest.raises(MetricsError, match=r"the environment variable DD_APP_KEY "
                                           r"\(app_key_env\) is not set"):
        await provider(handler, environ={"DD_API_KEY": API_KEY}).query(HITS, NOW)
    assert not seen


async def test_a_bad_query_shows_datadogs_message() -> None:
    handler, _ = replying((400, fixture("error_400.json"), {}))
    with pytest.raises(MetricsError) as caught:
        await provider(handler).query(HITS, NOW)
    assert str(caught.value) == "Datadog refused the query (HTTP 400): Bad Request"
    assert not caught.value.transient
    handler, _ = replying(ok(fixture("query_error.json")))
    with pytest.raises(MetricsError, match=r"Datadog could not run the query: Error parsing "
                                           r"query: .*'scope_expr' didn't match"):
        await provider(handler).query(HITS, NOW)


async def test_rate_limit_waits_the_seconds_until_reset() -> None:
    """X-RateLimit-Reset is a duration at Datadog: 3 means 3 s, not the epoch's start."""
    sleeps = Sleeps()
    limited = (429, fixture("error_429.json"), {
        "X-RateLimit-Limit": "100", "X-RateLimit-Period": "10", "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "3", "X-RateLimit-Name": "query_timeseries"})
    handler, seen = replying(limited, ok(fixture("query.json")))
    assert await provider(handler, sleeps=sleeps).query(HITS, NOW) == 99.85856628417969
    assert sleeps == [3.0] and len(seen) == 2


async def test_a_long_rate_limit_is_transient_and_not_waited_for() -> None:
    sleeps = Sleeps()
    handler, seen = replying((429, fixture("error_429.json"), {"X-RateLimit-Reset": "50"}))
    with pytest.raises(MetricsError) as caught:
        await provider(handler, sleeps=sleeps).query(HITS, NOW)
    assert caught.value.transient
    assert "rate limit was reached; it resets in 50 s" in str(caught.value)
    assert sleeps == [] and len(seen) == 1


async def test_server_errors_are_retried_then_transient() -> None:
    handler, seen = replying((502, {"errors": ["Bad Gateway"]}, {}), ok(fixture("query.json")))
    assert await provider(handler).query(HITS, NOW) == 99.85856628417969
    assert len(seen) == 2
    handler, seen = replying((503, {"errors": ["Service Unavailable"]}, {}))
    with pytest.raises(MetricsError) as caught:
        await provider(handler).query(HITS, NOW)
    assert caught.value.transient and len(seen) == 3
    assert "Datadog at api.datadoghq.com answered HTTP 503: Service Unavailable" in str(
        caught.value)


async def test_unreachable_datadog_is_retried_then_transient() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(MetricsError) as caught:
        await provider(handler).query(HITS, NOW)
    assert caught.value.transient and len(seen) == 3
    assert "could not reach Datadog at api.datadoghq.com" in str(caught.value)


async def test_a_slow_query_is_transient_and_not_asked_again() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(MetricsError) as caught:
        await provider(handler, timeout_seconds=3).query(HITS, NOW)
    assert caught.value.transient and len(seen) == 1
    assert str(caught.value) == "Datadog did not answer within 3 s"


async def test_odd_answers_are_errors_that_say_what_to_check() -> None:
    for body in ([1, 2], {"status": "ok"}, {**fixture("query.json"), "series": [{"x": 1}]}):
        handler, _ = replying(ok(body))
        with pytest.raises(MetricsError, match=r"unexpected response .* is site or base_url "
                                               r"the Datadog API"):
            await provider(handler).query(HITS, NOW)


async def test_faults_through_the_fake_api() -> None:
    fake = FakeDatadog(started=0)
    fake.set_traffic("canary", rps=1)
    fake.faults.append(Fault(429, "error_429.json", {"X-RateLimit-Reset": "2"}))
    sleeps = Sleeps()
    assert await provider(fake.handler, sleeps=sleeps).query(
        "sum:trace.http.request.hits{service:api,track:canary}", NOW) == 1.0
    assert sleeps == [2.0]
    wrong = provider(fake.handler, environ={"DD_API_KEY": "x" * 32, "DD_APP_KEY": APP_KEY})
    with pytest.raises(MetricsError, match="key was refused"):
        await wrong.query(HITS, NOW)


def _deployment(version: str) -> Deployment:
    return Deployment(request_key="k", service="api", env="staging", version=version,
                      previous_version="v1.9.0", requester="U1", state="verifying",
                      channel="#deploys-api", created_at=NOW, updated_at=NOW)


async def test_measure_sums_datadog_counts_since_the_step_start_per_track() -> None:
    scope = "{service:{service},track:{track},version:{version}}"
    analysis = AnalysisConfig.model_validate({"metrics": [{
        "name": "errors", "judge": "sequential",
        "requests_query": f"sum:trace.http.request.hits{scope}.as_count()",
        "errors_query": f"sum:trace.http.request.errors{scope}.as_count()"}]},
        context={"metrics_provider": "datadog"})
    fake = FakeDatadog(started=0)
    fake.set_traffic("canary", rps=10, error_rate=0.1, version="v2.0.0")
    fake.set_traffic("baseline", rps=30, error_rate=0.01, version="v1.9.0")
    dd = provider(fake.handler)
    start = NOW - timedelta(seconds=120)
    series = (await measure(dd, analysis, _deployment("V2.0.0"), start, NOW))["errors"]
    assert series is not None
    assert (series.canary_requests, series.canary_errors) == (1210, 121)
    assert (series.baseline_requests, series.baseline_errors) == (3630, 36)
    assert {r.url.params["from"] for r in fake.requests} == {str(int(start.timestamp()))}
    assert "sum:trace.http.request.hits{service:api,track:baseline,version:v1.9.0}" \
           ".as_count()" in fake.queries()

    fake.requests.clear()  # a version that would widen the tag filter: refused, no data
    bad = (await measure(dd, analysis, _deployment("v2,track:baseline"), start, NOW))
    assert bad["errors"] is None
    assert not any("track:canary" in q for q in fake.queries())  # only the baseline's went
