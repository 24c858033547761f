"""Post-deploy HTTP checks against httpx.MockTransport: no network, no real waiting."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from integrations.http_check import HttpCheckConfig, run_check

Handler = Callable[[httpx.Request], httpx.Response]


class Sleeps:
    """Stands in for asyncio.sleep: records the waits instead of waiting."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(handler: Handler) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def sequence(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering with ``responses`` in turn (the last one repeats)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = responses[min(len(seen), len(responses)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return handle, seen


def check(**overrides: Any) -> HttpCheckConfig:
    return HttpCheckConfig(**{"name": "health",
                              "url": "https://{service}.{env}.example.com/healthz", **overrides})


async def run(config: HttpCheckConfig, handler: Handler, sleeps: Sleeps | None = None,
              **kwargs: Any) -> Any:
    async with client(handler) as http:
        return await run_check(config, service="api", env="staging", version="1.2.3",
                               client=http, sleep=sleeps or Sleeps(), **kwargs)


async def test_pass_on_first_attempt() -> None:
    handler, seen = sequence(httpx.Response(200, text="ok"))
    sleeps = Sleeps()
    result = await run(check(body_contains="ok"), handler, sleeps)
    assert (result.name, result.passed, result.attempts, result.status_code) == (
        "health", True, 1, 200)
    assert result.detail == "GET https://api.staging.example.com/healthz → 200"
    assert [str(r.url) for r in seen] == ["https://api.staging.example.com/healthz"]
    assert sleeps.calls == []


async def test_wrong_status_then_success_on_retry() -> None:
    handler, seen = sequence(httpx.Response(503), httpx.Response(503), httpx.Response(200))
    sleeps = Sleeps()
    result = await run(check(retry_interval_seconds=1.5), handler, sleeps)
    assert (result.passed, result.attempts, result.status_code) == (True, 3, 200)
    assert result.detail.endswith("→ 200 after 3 attempts")
    assert sleeps.calls == [1.5, 1.5]
    assert len(seen) == 3


async def test_wrong_status_fails_after_all_retries() -> None:
    handler, seen = sequence(httpx.Response(503, text="  upstream\n  unavailable  "))
    sleeps = Sleeps()
    result = await run(check(retries=2, expect_status=[200, 204]), handler, sleeps)
    assert (result.passed, result.attempts, result.status_code) == (False, 3, 503)
    assert result.detail == ("GET https://api.staging.example.com/healthz → 503 (expected 200 "
                             'or 204) after 3 attempts — body: "upstream unavailable"')
    assert len(seen) == 3 and len(sleeps.calls) == 2  # no wait after the last attempt


async def test_no_retries_means_one_attempt() -> None:
    handler, seen = sequence(httpx.Response(500))
    result = await run(check(retries=0), handler)
    assert (result.passed, result.attempts, len(seen)) == (False, 1, 1)
    assert result.detail == "GET https://api.staging.example.com/healthz → 500 (expected 200)"


async def test_body_mismatch_and_long_bodies_are_cut() -> None:
    handler, _ = sequence(httpx.Response(200, text="starting " + "x" * 5000))
    result = await run(check(body_contains="ok", retries=1), handler)
    assert (result.passed, result.attempts, result.status_code) == (False, 2, 200)
    assert "→ 200 but the body did not contain 'ok' after 2 attempts" in result.detail
    assert '— body: "starting xxx' in result.detail
    assert len(result.detail) < 350 and result.detail.endswith('…"')


async def test_head_request() -> None:
    handler, seen = sequence(httpx.Response(204))
    result = await run(check(method="HEAD", expect_status=[204]), handler)
    assert result.passed and seen[0].method == "HEAD"
    assert result.detail == "HEAD https://api.staging.example.com/healthz → 204"


async def test_timeout() -> None:
    handler, seen = sequence(httpx.ReadTimeout("read timed out"))
    result = await run(check(timeout_seconds=5, retries=2), handler)
    assert (result.passed, result.attempts, result.status_code) == (False, 3, None)
    assert result.detail == ("GET https://api.staging.example.com/healthz timed out after 5 s "
                             "(3 attempts)")
    assert len(seen) == 3


async def test_slow_answer_is_cut_by_the_overall_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return httpx.Response(200)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as http:
        result = await run_check(check(timeout_seconds=0.05, retries=0), service="api",
                                 env="staging", version="1", client=http, sleep=Sleeps())
    assert result.detail == ("GET https://api.staging.example.com/healthz timed out after "
                             "0.05 s")


async def test_connection_refused_then_recovery() -> None:
    handler, _ = sequence(httpx.ConnectError("[Errno 111] Connection refused"),
                          httpx.Response(200))
    assert (await run(check(), handler)).passed
    handler, _ = sequence(httpx.ConnectError("[Errno 111] Connection refused"))
    result = await run(check(retries=1), handler)
    assert result.detail == ("GET https://api.staging.example.com/healthz: could not connect "
                             "([Errno 111] Connection refused) after 2 attempts")


async def test_connection_refused_by_a_real_closed_port() -> None:
    with socket.socket() as sock:  # bind, then close: nothing listens on the port
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = check(url=f"http://127.0.0.1:{port}/healthz", retries=0, timeout_seconds=2)
    result = await run_check(config, service="api", env="staging", version="1",
                             sleep=Sleeps())
    assert not result.passed and "could not connect" in result.detail


async def test_hostile_version_is_url_quoted() -> None:
    handler, seen = sequence(httpx.Response(200))
    config = check(url="https://{service}.example.com/v/{version}/ready?env={env}")
    async with client(handler) as http:
        result = await run_check(config, service="api", env="prod&admin=1",
                                 version="1.0/../../admin?x=1#frag {env}", client=http,
                                 sleep=Sleeps())
    url = seen[0].url
    assert url.host == "api.example.com"
    assert url.path == "/v/1.0/../../admin?x=1#frag {env}/ready"  # one segment, decoded
    assert url.raw_path.startswith(b"/v/1.0%2F..%2F..%2Fadmin%3Fx%3D1%23frag%20%7Benv%7D/")
    assert url.params.get("env") == "prod&admin=1" and "admin" not in url.params
    assert result.passed


async def test_bearer_token_is_sent_but_never_shown() -> None:
    handler, seen = sequence(httpx.Response(401, text="no"), httpx.Response(401, text="no"))
    environ = {"HEALTH_TOKEN": "s3cret-token-42"}
    config = check(bearer_token_env="HEALTH_TOKEN", headers={"X-Probe": "shipbot"}, retries=1)
    result = await run(config, handler, environ=environ)
    assert seen[0].headers["authorization"] == "Bearer s3cret-token-42"
    assert seen[0].headers["x-probe"] == "shipbot"
    assert not result.passed and "→ 401" in result.detail
    assert "s3cret" not in result.model_dump_json()


async def test_missing_token_env_fails_without_a_request() -> None:
    handler, seen = sequence(httpx.Response(200))
    result = await run(check(bearer_token_env="HEALTH_TOKEN"), handler, environ={})
    assert not result.passed and result.attempts == 0 and seen == []
    assert "HEALTH_TOKEN (bearer_token_env) is not set" in result.detail


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"url": "https://{service}/{verison}"}, "unknown placeholder {verison}"),
        ({"url": "ftp://example.com/"}, "http:// or https://"),
        ({"url": "https://user:pw@example.com/"}, "must not contain credentials"),
        ({"method": "POST"}, "'GET' or 'HEAD'"),
        ({"method": "HEAD", "body_contains": "ok"}, "body_contains needs method GET"),
        ({"expect_status": [200, 42]}, "100-599"),
        ({"headers": {"Authorization": "Bearer pw"}}, "is a secret"),
        ({"bearer_token_env": "lower"}, "pattern"),
        ({"retries": -1}, "greater than or equal to 0"),
        ({"timeout": 3}, "Extra inputs"),
    ],
)
def test_invalid_config(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        check(**overrides)
    assert "pw" not in str(info.value).replace("password", "")
