"""The shared HTTP layer: one error mapping for every provider, counted and logged requests."""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import pytest

from integrations.base import IntegrationError, RateLimited, TransientError
from integrations.http import (
    HttpOptions,
    NotFound,
    ProviderUnavailable,
    Rejected,
    TokenRefused,
    new_client,
    raise_for_status,
    send,
)

NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
TOKEN = "ghp_" + "a" * 36


def check(response: httpx.Response) -> None:
    raise_for_status(response, label="GitHub", token_env="GITHUB_TOKEN",
                     missing="workflow build.yml in acme/api", now=lambda: NOW)


def answer(status: int, body: object = None, **headers: str) -> httpx.Response:
    request = httpx.Request("GET", "https://api.github.com/repos/acme/api")
    if body is None:
        return httpx.Response(status, headers=headers, request=request)
    return httpx.Response(status, json=body, headers=headers, request=request)


def test_success_and_redirects_raise_nothing() -> None:
    check(answer(200, {}))
    check(answer(204))


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_names_the_variable_to_check(status: int) -> None:
    with pytest.raises(TokenRefused) as caught:
        check(answer(status, {"message": "Bad credentials",
                              "documentation_url": "https://docs.github.com/rest"}))
    assert str(caught.value) == (f"the token for GitHub was refused (HTTP {status}: Bad "
                                 "credentials): check GITHUB_TOKEN")
    assert caught.value.status == status


def test_not_found_names_what_is_missing() -> None:
    with pytest.raises(NotFound) as caught:
        check(answer(404, {"message": "Not Found", "status": "404"}))
    assert str(caught.value) == (
        "GitHub has no workflow build.yml in acme/api (HTTP 404), or the token may not see "
        "it: check the name in shipbot.yml and the token's access")


def test_a_422_shows_the_providers_own_message_and_details() -> None:
    body = {"message": "Invalid request.", "errors": [
        {"resource": "Workflow", "code": "custom", "message": "Unexpected inputs provided: "
         "[\"shipbot_id\"]"}]}
    with pytest.raises(Rejected) as caught:
        check(answer(422, body))
    assert str(caught.value) == ('GitHub refused the request (HTTP 422): Invalid request.; '
                                 'Unexpected inputs provided: ["shipbot_id"]')


def test_other_4xx_without_json_show_the_start_of_the_body() -> None:
    response = httpx.Response(409, text="  Cannot cancel\n a completed run  ",
                              request=httpx.Request("POST", "https://x"))
    with pytest.raises(Rejected, match=r"^GitHub refused the request \(HTTP 409\): Cannot "
                                       r"cancel a completed run$"):
        check(response)


def test_5xx_is_transient() -> None:
    with pytest.raises(ProviderUnavailable) as caught:
        check(answer(502, {"message": "Server Error"}))
    assert isinstance(caught.value, TransientError)
    assert str(caught.value) == "GitHub answered HTTP 502: Server Error; will retry"


@pytest.mark.parametrize(("status", "headers", "wait"), [
    (403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 300)}, 300),
    (403, {"retry-after": "60"}, 60),  # GitHub's secondary rate limit
    (429, {"retry-after": "7"}, 7),
    (429, {"retry-after": "Fri, 15 Jan 2027 08:02:00 GMT"}, 120),
    (429, {}, 60),  # no hint: a minute
])
def test_rate_limits_carry_the_wait(status: int, headers: dict[str, str], wait: float) -> None:
    body = {"message": "API rate limit exceeded for user ID 1."}
    with pytest.raises(RateLimited) as caught:
        check(answer(status, body, **headers))
    assert caught.value.wait_seconds == wait
    assert str(caught.value).startswith("GitHub's rate limit was reached; trying again after ")
    assert isinstance(caught.value, IntegrationError)


def test_a_403_with_requests_left_is_a_refused_token_not_a_rate_limit() -> None:
    with pytest.raises(TokenRefused):
        check(answer(403, {"message": "Resource not accessible by integration"},
                     **{"x-ratelimit-remaining": "4999"}))


Seen = list[tuple[str, str, str]]


def client_for(handler: Callable[[httpx.Request], httpx.Response], seen: Seen,
               timeout: float = 3.0) -> tuple[httpx.AsyncClient, HttpOptions]:
    options = HttpOptions(observe=lambda *labels: seen.append(labels),
                          transport=httpx.MockTransport(handler))
    client = new_client("github_actions", "https://api.github.com",
                        headers={"Authorization": f"Bearer {TOKEN}"},
                        timeout_seconds=timeout, options=options)
    return client, options


async def test_requests_are_counted_and_logged_without_secrets(caplog) -> None:
    seen: Seen = []
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(201 if request.method == "POST" else 404, json={})

    client, options = client_for(handler, seen)
    caplog.set_level(logging.DEBUG, logger="integrations.http")
    async with client:
        await send(client, "github_actions", "GitHub", options, "GET",
                   "/repos/acme/api", params={"access_token": "querysecret"})
        await send(client, "github_actions", "GitHub", options, "POST", "/x", json={})
    assert seen == [("github_actions", "GET", "4xx"), ("github_actions", "POST", "2xx")]
    assert sent[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert str(sent[0].url) == "https://api.github.com/repos/acme/api?access_token=querysecret"
    assert "github_actions GET /repos/acme/api -> 404" in caplog.text
    assert TOKEN not in caplog.text and "querysecret" not in caplog.text


async def test_a_timeout_is_transient_and_counted() -> None:
    seen: Seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client, options = client_for(handler, seen, timeout=2.5)
    async with client:
        with pytest.raises(ProviderUnavailable, match=r"^GitHub did not answer within 2.5 s$"):
            await send(client, "github_actions", "GitHub", options, "GET", "/x")
    assert seen == [("github_actions", "GET", "error")]


async def test_a_refused_connection_is_transient_and_names_the_host() -> None:
    seen: Seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client, options = client_for(handler, seen)
    async with client:
        with pytest.raises(ProviderUnavailable, match=r"^could not reach GitHub at "
                                                      r"api.github.com: \[Errno 111\] "
                                                      r"Connection refused$"):
            await send(client, "github_actions", "GitHub", options, "GET", "/x")
