"""Post-deploy HTTP checks: a check in every strategy, before traffic moves on.

A check asks a URL of the new version and expects a status (and maybe some text in the
body), trying again a few times because a freshly started version may still be warming
up. The result's ``detail`` is one plain sentence for the Slack thread; the caller
escapes it. A bearer token is read from the environment variable the config names and
never appears in a result or a log line.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integrations.command_templates import ProviderEnvName
from integrations.http import HttpOptions, count_no_answer, new_client
from integrations.http_auth import PlainHeaders, check_http_url, with_bearer

PROVIDER = "http_check"  # its label in /metrics' provider request counts
PLACEHOLDERS = ("service", "env", "version")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_BODY_BYTES = 1024 * 1024  # enough for any health page; a huge download is a mistake
_SNIPPET_CHARS = 200


def render_url(template: str, values: Mapping[str, str]) -> str:
    """One pass, each value URL-quoted: a version can't add a path, query or host."""
    return _PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), template)


class HttpCheckConfig(BaseModel):
    # Errors never echo the input: a pasted URL or header could hold a secret.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(min_length=1)
    url: str = Field(description="templated with {service} {env} {version}")
    method: Literal["GET", "HEAD"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200], min_length=1)
    body_contains: str | None = Field(None, min_length=1)
    timeout_seconds: float = Field(5.0, gt=0, le=300, description="per attempt, in all")
    retries: int = Field(3, ge=0, le=50, description="attempts after the first failed one")
    retry_interval_seconds: float = Field(2.0, ge=0, le=600)
    headers: PlainHeaders = Field(default_factory=dict, description="non-secret headers")
    bearer_token_env: ProviderEnvName | None = Field(
        None, description="NAME of the environment variable holding a bearer token")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        for name in _PLACEHOLDER.findall(url):
            if name not in PLACEHOLDERS:
                raise ValueError(f"url: unknown placeholder {{{name}}} "
                                 "(allowed: {service}, {env}, {version})")
        check_http_url(render_url(url, dict.fromkeys(PLACEHOLDERS, "x")))
        return url

    @field_validator("expect_status")
    @classmethod
    def _statuses(cls, statuses: list[int]) -> list[int]:
        if any(not 100 <= s <= 599 for s in statuses):
            raise ValueError("expect_status: HTTP statuses are 100-599")
        return statuses

    @model_validator(mode="after")
    def _body_needs_get(self) -> HttpCheckConfig:
        if self.body_contains is not None and self.method == "HEAD":
            raise ValueError("body_contains needs method GET: HEAD responses have no body")
        return self


class CheckResult(BaseModel):
    """The outcome of one check, after its retries."""

    name: str
    passed: bool
    attempts: int
    status_code: int | None = None
    detail: str


class _Attempt(BaseModel):
    passed: bool
    status_code: int | None = None
    what: str  # the sentence without the attempt count
    body: str = ""  # the start of the response body, when it helps explain a failure
    counted: bool = True  # "after N attempts" reads wrong after "timed out after 5 s"


async def run_check(
    config: HttpCheckConfig, *, service: str, env: str, version: str,
    client: httpx.AsyncClient | None = None, environ: Mapping[str, str] = os.environ,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    options: HttpOptions | None = None,
) -> CheckResult:
    """Try the check up to ``1 + retries`` times; pass on the first attempt that passes.
    Without a ``client`` (tests inject one) the shared ``new_client`` makes the requests,
    so each is counted in ``/metrics`` through ``options`` and logged without its query."""
    url = render_url(config.url, {"service": service, "env": env, "version": version})
    headers = with_bearer(config.headers, config.bearer_token_env, environ)
    if isinstance(headers, str):
        return CheckResult(name=config.name, passed=False, attempts=0, detail=headers)
    own, options = client is None, options or HttpOptions()
    http = client or new_client(PROVIDER, "", headers={}, options=options,
                                timeout_seconds=config.timeout_seconds)
    try:
        attempts = 0
        while True:
            attempts += 1
            outcome = await _attempt(http, config, url, headers, options)
            if outcome.passed or attempts > config.retries:
                break
            await sleep(config.retry_interval_seconds)
    finally:
        if own:
            await http.aclose()
    detail = outcome.what
    if attempts > 1:
        detail += f" after {attempts} attempts" if outcome.counted else f" ({attempts} attempts)"
    detail += _snippet(outcome.body)
    return CheckResult(name=config.name, passed=outcome.passed, attempts=attempts,
                       status_code=outcome.status_code, detail=detail)


async def _attempt(http: httpx.AsyncClient, config: HttpCheckConfig, url: str,
                   headers: dict[str, str], options: HttpOptions) -> _Attempt:
    request, answered = f"{config.method} {url}", False
    try:
        async with asyncio.timeout(config.timeout_seconds):  # in all, not per read
            async with http.stream(config.method, url, headers=headers,
                                   timeout=config.timeout_seconds) as response:
                answered = True  # the response hook has counted it
                body = await _read_capped(response) if config.method == "GET" else b""
    except (TimeoutError, httpx.HTTPError, httpx.InvalidURL) as exc:
        if not answered and not isinstance(exc, _NOT_SENT):
            count_no_answer(options, PROVIDER, config.method)
        return _failed(exc, config, request)
    code = response.status_code
    text = body.decode(errors="replace")
    if code not in config.expect_status:
        return _Attempt(passed=False, status_code=code, body=text, what=f"{request} → {code} "
                        f"(expected {_either(config.expect_status)})")
    if config.body_contains is not None and config.body_contains not in text:
        return _Attempt(passed=False, status_code=code, body=text, what=f"{request} → {code} "
                        f"but the body did not contain '{config.body_contains}'")
    return _Attempt(passed=True, status_code=code, what=f"{request} → {code}")


_NOT_SENT = (httpx.InvalidURL, httpx.UnsupportedProtocol)


def _failed(exc: Exception, config: HttpCheckConfig, request: str) -> _Attempt:
    """The attempt that got no usable answer, in words."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return _Attempt(passed=False, counted=False,
                        what=f"{request} timed out after {config.timeout_seconds:g} s")
    if isinstance(exc, httpx.ConnectError):
        why = str(exc).strip() or "connection failed"
        return _Attempt(passed=False, what=f"{request}: could not connect ({why[:120]})")
    if isinstance(exc, _NOT_SENT):
        return _Attempt(passed=False, what=f"{request}: not a valid URL")
    return _Attempt(passed=False, what=f"{request} failed ({type(exc).__name__})")


async def _read_capped(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= _MAX_BODY_BYTES:
            break
    return bytes(body[:_MAX_BODY_BYTES])


def _either(statuses: list[int]) -> str:
    names = [str(s) for s in statuses]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" or {names[-1]}"


def _snippet(text: str) -> str:
    """The start of the body, on one line and short: enough to see what answered."""
    flat = " ".join(text.split())
    if not flat:
        return ""
    cut = flat if len(flat) <= _SNIPPET_CHARS else flat[: _SNIPPET_CHARS - 1] + "…"
    return f' — body: "{cut}"'
