"""The HTTP layer of the ``datadog`` provider: keys, retries, and errors as messages.

Every failure becomes a ``MetricsError`` (what canary analysis catches), ``transient``
when it may pass on its own, so the judges count it as missing data, not a verdict:

- 401/403: the API or application key was refused; the message names the variables;
- 400: Datadog's own ``errors`` (a query it cannot parse);
- 429: Datadog's ``X-RateLimit-Reset`` is the number of *seconds until* the limit resets
  (docs.datadoghq.com/api/latest/rate-limits), not an epoch time as GitHub's is: waited
  for when it is short (``max_rate_limit_wait_seconds``), else reported as transient;
- 5xx, timeouts, broken connections: retried briefly, then transient.

The keys go in the ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` headers only; the shared
client logs no header and no query string, and no message here quotes a header.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from integrations.base import IntegrationError
from integrations.datadog_config import DatadogConfig
from integrations.http import (
    DEFAULT_RATE_LIMIT_WAIT,
    HttpOptions,
    ProviderUnavailable,
    new_client,
    provider_message,
    raise_for_status,
    send,
)
from integrations.metrics import MetricsError

log = logging.getLogger(__name__)
PROVIDER = "datadog"
QUERY_PATH = "/api/v1/query"


class _RateLimited(MetricsError):
    def __init__(self, message: str, wait: float) -> None:
        super().__init__(message, transient=True)
        self.wait = wait


class _Retryable(MetricsError):
    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


def reset_wait(headers: httpx.Headers) -> float:
    """Seconds until Datadog's rate limit resets: ``X-RateLimit-Reset`` (a duration), else
    the limit's ``X-RateLimit-Period``, else a minute."""
    for name in ("x-ratelimit-reset", "x-ratelimit-period"):
        try:
            seconds = float(headers.get(name, ""))
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return DEFAULT_RATE_LIMIT_WAIT


class DatadogHTTP:
    """Calls to ``GET /api/v1/query``: one short-lived client per call, like the others."""

    RETRY_ATTEMPTS = 3
    RETRY_WAIT_SECONDS = 0.2  # doubled per retry; tests set it to 0

    def __init__(self, config: DatadogConfig, *, options: HttpOptions,
                 environ: Mapping[str, str], sleep: Callable[[float], Awaitable[None]]) -> None:
        self._config, self._options, self._environ = config, options, environ
        self._sleep = sleep

    @property
    def label(self) -> str:
        return f"Datadog at {self._config.host}"

    def _unexpected(self, what: str) -> MetricsError:
        return MetricsError(f"{self.label} sent an unexpected response ({what}); is site or "
                            "base_url the Datadog API?")

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        for header, field, name in (
                ("DD-API-KEY", "api_key_env", self._config.api_key_env),
                ("DD-APPLICATION-KEY", "app_key_env", self._config.app_key_env)):
            value = self._environ.get(name)
            if not value:
                raise MetricsError(f"the environment variable {name} ({field}) is not set: "
                                   "set it to the Datadog key before Shipbot starts")
            headers[header] = value
        return headers

    async def _query(self, query: str, start: float, end: float) -> dict[str, Any]:
        """One query over whole seconds [start, end], with short retries and waits."""
        begin, until = math.floor(start), math.ceil(end)
        params = {"from": str(begin), "to": str(max(until, begin + 1)), "query": query}
        headers = self._headers()
        for attempt in range(1, self.RETRY_ATTEMPTS + 1):
            try:
                return await self._once(params, headers)
            except _RateLimited as exc:
                if attempt == self.RETRY_ATTEMPTS or \
                        exc.wait > self._config.max_rate_limit_wait_seconds:
                    raise
                log.info("Datadog rate limit: waiting %.0f s for its reset", exc.wait)
                await self._sleep(exc.wait)
            except _Retryable:
                if attempt == self.RETRY_ATTEMPTS:
                    raise
                await self._sleep(self.RETRY_WAIT_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _once(self, params: dict[str, str], headers: dict[str, str]) -> dict[str, Any]:
        async with new_client(PROVIDER, self._config.url, headers=headers,
                              timeout_seconds=self._config.timeout_seconds,
                              options=self._options) as client:
            try:
                response = await send(client, PROVIDER, "Datadog", self._options, "GET",
                                      QUERY_PATH, params=params)
            except ProviderUnavailable as exc:
                if isinstance(exc.__cause__, httpx.ReadTimeout):
                    # The query itself was slow: asking again would only double the wait.
                    raise MetricsError(str(exc), transient=True) from exc
                raise _Retryable(str(exc)) from exc
        self._raise_for_status(response)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise self._unexpected(f"HTTP {response.status_code} but not a JSON object")
        if body.get("status") == "error" or (body.get("error") and "series" not in body):
            said = provider_message(response) or "no details"
            raise MetricsError(f"Datadog could not run the query: {said}")
        return body

    def _raise_for_status(self, response: httpx.Response) -> None:
        code = response.status_code
        if code < 400:
            return
        said = provider_message(response)
        keys = f"{self._config.api_key_env} / {self._config.app_key_env}"
        if code == 429:
            wait = reset_wait(response.headers)
            raise _RateLimited(f"{self.label}'s rate limit was reached; it resets in "
                               f"{wait:.0f} s, the analysis will ask again", wait)
        if code in (401, 403):
            raise MetricsError(f"the Datadog API or application key was refused (HTTP {code}"
                               + (f": {said}" if said else "") + f"): check {keys} (the "
                               "application key needs the timeseries_query permission)")
        if code == 400:
            raise MetricsError(f"Datadog refused the query (HTTP 400): {said or 'no details'}")
        try:
            raise_for_status(response, label=self.label, token_env=None, missing="query API")
        except ProviderUnavailable as exc:
            raise _Retryable(str(exc)) from exc
        except IntegrationError as exc:
            raise MetricsError(str(exc)) from exc
