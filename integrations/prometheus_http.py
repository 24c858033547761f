"""Prometheus connection settings and the HTTP layer of the ``prometheus`` provider.

Turns every way a call to Prometheus's HTTP API can go wrong into a ``MetricsError``
whose message can be posted to Slack as is, retrying briefly what may pass on its own.
Secrets never live in the config: a bearer token is read, per request, from the
environment variable that ``bearer_token_env`` names.

Apart from the query parsing (``integrations.prometheus``) so that each stays short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from integrations.command_templates import ProviderEnvName
from integrations.http import HttpOptions, count_no_answer, new_client, snippet
from integrations.http_auth import PlainHeaders, check_http_url, with_bearer
from integrations.metrics import MetricsError

log = logging.getLogger(__name__)
PROVIDER = "prometheus"  # its label in /metrics' provider request counts


class PrometheusConfig(BaseModel):
    # Errors never echo the input: a pasted URL or header could hold a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    provider: Literal["prometheus"] = "prometheus"
    url: str = Field(description="base URL, e.g. http://prometheus:9090 (path prefix allowed)")
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    bearer_token_env: ProviderEnvName | None = Field(
        None, description="NAME of the environment variable holding a bearer token"
    )
    headers: PlainHeaders = Field(default_factory=dict, description="extra non-secret headers")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        parsed = check_http_url(url)
        if parsed.query or parsed.fragment:
            raise ValueError("url must not have a ?query or #fragment")
        return url.rstrip("/")


class _RetryableError(MetricsError):
    """A failure worth one more try: the connection broke or the server said 5xx."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


# Network failures before or instead of an answer; a ReadTimeout is not here: the
# query itself was slow, and asking again would only double the wait.
_RETRYABLE_TRANSPORT = (
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ReadError,
    httpx.WriteError, httpx.RemoteProtocolError,
)


class PrometheusHTTP:
    """Calls to Prometheus's HTTP API (v1): auth headers, retries, errors as messages.

    Without a ``client`` (tests inject one) each call uses its own short-lived client
    from ``integrations.http.new_client``: counted in ``/metrics`` through ``options`` and
    logged without query or headers like every provider's. The analysis queries every few
    seconds at most, and this way the provider owns nothing that needs closing or that is
    bound to one event loop.
    """

    RETRY_ATTEMPTS = 3
    RETRY_WAIT_SECONDS = 0.2  # doubled per retry, capped at 2 s; tests set it to 0
    POST_ABOVE_CHARS = 2000  # longer encoded queries are sent as a POST form
    # Queries open at once; the others wait their turn here (``_turn``). Prometheus runs
    # 20 at a time by default (--query.max-concurrency) and queues the rest itself, while
    # each one open here is a task on the event loop that also acks slash commands: fifty
    # canaries judged together asked ~500 at once and held every ack for 1-2 s.
    MAX_IN_FLIGHT = 8

    def __init__(
        self, config: PrometheusConfig, *, client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] = os.environ, options: HttpOptions | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._environ = environ
        self._options = options or HttpOptions()
        self._turns = asyncio.Semaphore(self.MAX_IN_FLIGHT)

    @property
    def url(self) -> str:
        return self._config.url

    def _unexpected(self, what: str) -> MetricsError:
        return MetricsError(
            f"Prometheus at {self.url} sent an unexpected response ({what}); "
            "is url the Prometheus base URL?"
        )

    def _headers(self) -> dict[str, str]:
        headers = with_bearer({"Accept": "application/json", **self._config.headers},
                              self._config.bearer_token_env, self._environ)
        if isinstance(headers, str):
            raise MetricsError(headers)
        return headers

    async def _call(self, endpoint: str, params: dict[str, str]) -> tuple[Any, tuple[str, ...]]:
        """One API call with short retries; returns ``data`` and the server's warnings."""
        params = {**params, "timeout": str(float(self._config.timeout_seconds))}
        headers = self._headers()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.RETRY_ATTEMPTS)
            | stop_after_delay(self._config.timeout_seconds),
            wait=wait_exponential(multiplier=self.RETRY_WAIT_SECONDS, max=2.0),
            retry=retry_if_exception_type(_RetryableError),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    log.info("retrying Prometheus %s (attempt %d)", endpoint,
                             attempt.retry_state.attempt_number)
                return await self._once(endpoint, params, headers)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _send(
        self, endpoint: str, params: dict[str, str], headers: dict[str, str]
    ) -> httpx.Response:
        url = f"{self.url}/api/v1/{endpoint}"
        timeout = httpx.Timeout(self._config.timeout_seconds)
        # URLs have practical length limits (proxies: ~4-8 KiB); the API takes forms too.
        if len(str(httpx.QueryParams(params))) > self.POST_ABOVE_CHARS:
            request: dict[str, Any] = {"method": "POST", "url": url, "data": params}
        else:
            request = {"method": "GET", "url": url, "params": params}
        async with self._turn():
            if self._client is not None:
                return await self._client.request(**request, headers=headers, timeout=timeout)
            async with new_client(PROVIDER, self.url, headers=headers,
                                  timeout_seconds=self._config.timeout_seconds,
                                  options=self._options) as client:
                try:
                    return await client.request(**request)
                except httpx.TransportError:
                    count_no_answer(self._options, PROVIDER, request["method"])
                    raise

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of ``MAX_IN_FLIGHT`` places; waiting the whole timeout for one is httpx's
        ``PoolTimeout``, as waiting for a connection of a client's pool would be."""
        try:
            async with asyncio.timeout(self._config.timeout_seconds):
                await self._turns.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout(f"{self.MAX_IN_FLIGHT} queries open already") from None
        try:
            yield
        finally:
            self._turns.release()

    async def _once(
        self, endpoint: str, params: dict[str, str], headers: dict[str, str]
    ) -> tuple[Any, tuple[str, ...]]:
        where = self.url
        try:
            response = await self._send(endpoint, params, headers)
        except httpx.TimeoutException as exc:
            if isinstance(exc, _RETRYABLE_TRANSPORT):
                raise _RetryableError(
                    f"could not connect to Prometheus at {where} (timed out)"
                ) from exc
            raise MetricsError(
                f"Prometheus at {where} did not answer within "
                f"{self._config.timeout_seconds:g}s", transient=True,
            ) from exc
        except _RETRYABLE_TRANSPORT as exc:
            reason = snippet(str(exc), 200) or type(exc).__name__
            raise _RetryableError(f"could not reach Prometheus at {where}: {reason}") from exc
        except httpx.HTTPError as exc:
            reason = snippet(str(exc), 200) or type(exc).__name__
            raise MetricsError(f"request to Prometheus at {where} failed: {reason}") from exc

        code = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind = body.get("errorType") or "error"
            error = snippet(str(body.get("error") or "no details"), 500)
            message = f"Prometheus could not run the query ({kind}): {error}"
            if code >= 500:
                raise _RetryableError(message)
            raise MetricsError(message)
        if code >= 500:
            raise _RetryableError(
                f"Prometheus at {where} answered HTTP {code}: {snippet(response.text, 200)}"
            )
        if code in (401, 403):
            raise MetricsError(
                f"Prometheus at {where} refused the request (HTTP {code}); "
                "check bearer_token_env and headers"
            )
        if not 200 <= code < 300:
            raise MetricsError(
                f"Prometheus at {where} answered HTTP {code}: {snippet(response.text, 200)}"
            )
        if not isinstance(body, dict):
            raise self._unexpected(f"HTTP {code} but not a JSON object")
        if body.get("status") != "success" or "data" not in body:
            raise self._unexpected(f"status {str(body.get('status'))[:20]!r}")
        warnings = tuple(snippet(str(w), 300) for w in body.get("warnings") or ())
        for warning in warnings:
            log.warning("Prometheus warning for %s: %s", endpoint, warning)
        return body["data"], warnings
