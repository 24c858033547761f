"""One HTTP layer for the providers that talk to an API (GitHub Actions, later GitLab).

``new_client`` gives every provider the same ``httpx.AsyncClient`` set-up (base URL,
connection limits, timeouts, and event hooks that count each request for ``/metrics``
and log it without headers or query strings, so never a token). ``send`` turns transport
failures and ``raise_for_status`` turns HTTP errors into one family of
``IntegrationError``s whose messages can be shown in Slack as they are:

- 401/403: the token was refused, naming the environment variable that holds it;
- 404: names what is missing (a repository, a workflow, a project);
- 429, or GitHub's 403 with ``x-ratelimit-remaining: 0``: ``RateLimited`` with the wait;
- 422 and other 4xx: the provider's own message;
- 5xx, timeouts, connection errors: ``ProviderUnavailable``, worth retrying.
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from integrations.base import IntegrationError, RateLimited, TransientError

log = logging.getLogger(__name__)

_MAX_ERROR_CHARS = 500
DEFAULT_RATE_LIMIT_WAIT = 60.0
# Outcome label for a request that got no HTTP answer at all.
NO_ANSWER = "error"

Observe = Callable[[str, str, str], None]  # (provider, method, outcome: "2xx".."5xx"|"error")


@dataclass(frozen=True)
class HttpOptions:
    """What the bot hands every HTTP provider: where request counts go and, in tests, the
    transport that stands in for the network."""

    observe: Observe | None = None
    transport: httpx.AsyncBaseTransport | None = None


class ProviderHTTPError(IntegrationError):
    """An HTTP answer the provider cannot act on; ``status`` is its code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenRefused(ProviderHTTPError):
    """401/403: the credential is wrong, expired or lacks a permission."""


class NotFound(ProviderHTTPError):
    """404: what we asked for does not exist (or the token may not see it)."""


class Rejected(ProviderHTTPError):
    """422 and other 4xx: the provider refused the request; its message says why."""


class ProviderUnavailable(TransientError):
    """5xx, a timeout or a broken connection: may pass on its own."""


def snippet(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    """One line, at most ``limit`` characters: enough of a message to act on."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@functools.cache
def system_tls() -> ssl.SSLContext:
    """The certificates httpx trusts by default (certifi, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` as at the first call), loaded once per process. Loaded for each
    client, as httpx does, they cost ~17 ms of the event loop and ~1 MiB per live client,
    and the canary analysis opens several clients per check of every canary."""
    return httpx.create_ssl_context()


def new_client(provider: str, base_url: str, *, headers: Mapping[str, str],
               timeout_seconds: float, options: HttpOptions,
               verify: ssl.SSLContext | bool = True) -> httpx.AsyncClient:
    """A client for one provider call (or a few): short-lived, so a provider owns nothing
    that needs closing or that is bound to one event loop."""

    async def on_response(response: httpx.Response) -> None:
        request = response.request
        outcome = f"{response.status_code // 100}xx"
        log.debug("%s %s %s -> %d", provider, request.method, request.url.path,
                  response.status_code)
        if options.observe is not None:
            options.observe(provider, request.method, outcome)

    return httpx.AsyncClient(
        base_url=base_url, headers=dict(headers), transport=options.transport,
        verify=system_tls() if verify is True else verify,
        timeout=httpx.Timeout(timeout_seconds), follow_redirects=False,
        limits=httpx.Limits(max_connections=10, max_keepalive_connections=5),
        event_hooks={"response": [on_response]},
    )


async def send(client: httpx.AsyncClient, provider: str, label: str, options: HttpOptions,
               method: str, url: str, **kwargs: Any) -> httpx.Response:
    """``client.request``, with transport failures as ``ProviderUnavailable``."""
    try:
        return await client.request(method, url, **kwargs)
    except httpx.TimeoutException as exc:
        count_no_answer(options, provider, method)
        seconds = client.timeout.read or client.timeout.connect or 0
        raise ProviderUnavailable(f"{label} did not answer within {seconds:g} s") from exc
    except httpx.TransportError as exc:
        count_no_answer(options, provider, method)
        reason = snippet(str(exc), 200) or type(exc).__name__
        raise ProviderUnavailable(f"could not reach {label} at {client.base_url.host}: "
                                  f"{reason}") from exc


def count_no_answer(options: HttpOptions, provider: str, method: str) -> None:
    """Count a request that got no HTTP answer (the response hook never saw it)."""
    log.debug("%s %s: no answer", provider, method)
    if options.observe is not None:
        options.observe(provider, method, NO_ANSWER)


def raise_for_status(response: httpx.Response, *, label: str, token_env: str | None,
                     missing: str, now: Callable[[], float] = time.time) -> None:
    """Nothing for 2xx/3xx; else the error that says what happened and what to do."""
    code = response.status_code
    if code < 400:
        return
    wait = rate_limit_wait(response, now)
    if wait is not None:
        until = datetime.fromtimestamp(now() + wait, UTC)
        raise RateLimited(f"{label}'s rate limit was reached; trying again after "
                          f"{until:%H:%M:%S} UTC ({wait:.0f} s)", wait)
    said = provider_message(response)
    if code in (401, 403):
        check = f"check {token_env}" if token_env else "check its credentials"
        raise TokenRefused(f"the token for {label} was refused (HTTP {code}"
                           + (f": {said}" if said else "") + f"): {check}", code)
    if code == 404:
        raise NotFound(f"{label} has no {missing} (HTTP 404), or the token may not see it: "
                       "check the name in shipbot.yml and the token's access", code)
    if code >= 500:
        raise ProviderUnavailable(f"{label} answered HTTP {code}"
                                  + (f": {said}" if said else "") + "; will retry")
    raise Rejected(f"{label} refused the request (HTTP {code}): {said or 'no details'}", code)


def rate_limit_wait(response: httpx.Response, now: Callable[[], float] = time.time
                    ) -> float | None:
    """Seconds to wait when ``response`` is a rate limit (429, or 403 with the limit
    spent or a Retry-After: GitHub's primary and secondary limits); else None."""
    code, headers = response.status_code, response.headers
    limited = code == 429 or (code == 403 and (headers.get("x-ratelimit-remaining") == "0"
                                                or "retry-after" in headers))
    if not limited:
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - now())
            except (TypeError, ValueError):
                pass
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, float(reset) - now())
        except ValueError:
            pass
    return DEFAULT_RATE_LIMIT_WAIT


def provider_message(response: httpx.Response) -> str:
    """The provider's own explanation: ``message`` (GitHub, GitLab), ``error``, and the
    details of ``errors``; else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return snippet(response.text, 200)
    if not isinstance(body, dict):
        return snippet(json.dumps(body), 200)
    parts = [_text(body.get(key)) for key in ("message", "error", "errors")]
    return snippet("; ".join(p for p in parts if p))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "; ".join(filter(None, (_text(v) for v in value)))
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return str(value["message"])
    return json.dumps(value)
