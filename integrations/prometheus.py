"""The ``prometheus`` metrics provider, and the PromQL templates canary analysis uses.

Talks to Prometheus's HTTP API (``/api/v1/query`` and ``/api/v1/query_range``) and
turns every way that can go wrong into a ``MetricsError`` whose message can be posted
to Slack as is. Secrets never live in the config: a bearer token is read, per
request, from the environment variable that ``bearer_token_env`` names.

Templates are PromQL with ``{service}``, ``{env}``, ``{track}``, ``{version}`` and
``{window}`` placeholders, filled in one pass. Label values may only appear inside a
quoted string and may only contain ``[A-Za-z0-9._:/+-]``, so no value can close the
string and add PromQL of its own (``api"} or vector(1) #`` is rejected).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import httpx
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from integrations.metrics import MetricsError, Sample, Samples

log = logging.getLogger(__name__)

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")]
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
# Headers that carry credentials: they belong in the environment, not in the config.
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
_MAX_ERROR_CHARS = 500

# --- templates -------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
LABEL_PLACEHOLDERS = ("service", "env", "track", "version")
TEMPLATE_PLACEHOLDERS = (*LABEL_PLACEHOLDERS, "window")
TRACKS = ("canary", "baseline")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9._:/+-]+")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")


def _literal_spans(template: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where PromQL string literals and # comments are, to check placeholder placement.

    Knows "..." and '...' (backslash escapes) and `...` (raw). Spans are [start, end).
    """
    strings: list[tuple[int, int]] = []
    comments: list[tuple[int, int]] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch == "#":
            end = template.find("\n", i)
            end = n if end < 0 else end
            comments.append((i, end))
            i = end
        elif ch in "\"'`":
            start, i = i, i + 1
            while i < n and template[i] != ch:
                i += 2 if ch != "`" and template[i] == "\\" else 1
            if i >= n:
                raise ValueError("unterminated string literal in the query")
            i += 1
            strings.append((start, i))
        else:
            i += 1
    return strings, comments


def check_template(template: str) -> str:
    """Validate a PromQL template at config load: placeholder names and placement.

    A typo like ``{verison}`` fails here rather than at the first canary. Label
    placeholders must sit inside quotes (``service="{service}"``) because that is what
    makes the allowed value characters harmless; ``{window}`` must not (``[{window}]``).
    """
    if not template.strip():
        raise ValueError("the query must not be empty")
    strings, comments = _literal_spans(template)

    def within(spans: list[tuple[int, int]], match: re.Match[str]) -> bool:
        return any(s <= match.start() and match.end() <= e for s, e in spans)

    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_PLACEHOLDERS:
            names = ", ".join(f"{{{n}}}" for n in TEMPLATE_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names})")
        if within(comments, match):
            continue  # harmless: values hold no newline, so a comment stays a comment
        quoted = within(strings, match)
        if name in LABEL_PLACEHOLDERS and not quoted:
            raise ValueError(f'{{{name}}} must be inside quotes, e.g. {name}="{{{name}}}"')
        if name == "window" and quoted:
            raise ValueError("{window} must not be inside quotes; use it as [{window}]")
    return template


PromQLTemplate = Annotated[str, AfterValidator(check_template)]


def format_window(window: str | float | timedelta) -> str:
    """A PromQL duration: ``"1m"`` as is, seconds or a timedelta as ``"90s"``/``"500ms"``."""
    if isinstance(window, str):
        if not _DURATION.fullmatch(window):
            raise MetricsError(f"window {window[:40]!r} is not a duration like 30s, 1m or 1h")
        return window
    seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    millis = round(seconds * 1000) if math.isfinite(seconds) else 0
    if millis <= 0:
        raise MetricsError(f"window must be a positive duration, not {seconds!r} seconds")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_query(
    template: str, *, service: str | None = None, env: str | None = None,
    track: str | None = None, version: str | None = None,
    window: str | float | timedelta | None = None,
) -> str:
    """Fill a template in one pass; inserted values are never re-scanned.

    Values come from deploy requests (i.e. from Slack users), so each is checked
    against the label-safe alphabet; a bad one is a ``MetricsError`` naming it.
    """
    try:
        check_template(template)
    except ValueError as exc:
        raise MetricsError(f"invalid query template: {exc}") from exc
    given = {"service": service, "env": env, "track": track, "version": version}
    values: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            continue
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 200:
            raise MetricsError(
                f"{name} value {value[:60]!r} cannot be used in a query: only letters, "
                "digits and . _ : / + - are allowed"
            )
        values[name] = value
    if track is not None and track not in TRACKS:
        raise MetricsError(f"track must be canary or baseline, not {track!r}")
    if window is not None:
        values["window"] = format_window(window)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise MetricsError(f"the query uses {{{name}}} but no {name} was given")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)


# --- config ----------------------------------------------------------------------------


class PrometheusConfig(BaseModel):
    # Errors never echo the input: a pasted URL or header could hold a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    provider: Literal["prometheus"] = "prometheus"
    url: str = Field(description="base URL, e.g. http://prometheus:9090 (path prefix allowed)")
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    bearer_token_env: EnvName | None = Field(
        None, description="NAME of the environment variable holding a bearer token"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="extra non-secret headers")

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ValueError("url is not a valid URL") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError("url must be http:// or https:// with a host")
        if parsed.userinfo:
            raise ValueError("url must not contain credentials; use bearer_token_env")
        if parsed.query or parsed.fragment:
            raise ValueError("url must not have a ?query or #fragment")
        return url.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _headers(cls, headers: dict[str, str]) -> dict[str, str]:
        for name, value in headers.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"invalid header name {name[:40]!r}")
            if name.lower() in _SECRET_HEADERS:
                raise ValueError(f"{name} is a secret: put it in an env var (bearer_token_env)")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name} must be a single line")
        return headers


# --- provider --------------------------------------------------------------------------


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


def _aware(name: str, value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value.timestamp()


def _snippet(text: str, limit: int = _MAX_ERROR_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _labels(series: Any) -> str:
    metric = series.get("metric") if isinstance(series, dict) else None
    if not isinstance(metric, dict) or not metric:
        return "{}"
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(metric.items())) + "}"


class PrometheusProvider:
    """Implements ``MetricsProvider`` against Prometheus's HTTP API (v1).

    Without a ``client`` each call uses its own short-lived ``httpx.AsyncClient``: the
    analysis queries every few seconds at most, and this way the provider owns nothing
    that needs closing or that is bound to one event loop.
    """

    RETRY_ATTEMPTS = 3
    RETRY_WAIT_SECONDS = 0.2  # doubled per retry, capped at 2 s; tests set it to 0
    POST_ABOVE_CHARS = 2000  # longer encoded queries are sent as a POST form

    def __init__(
        self, config: PrometheusConfig, *, client: httpx.AsyncClient | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self._config = config
        self._client = client
        self._environ = environ

    @property
    def url(self) -> str:
        return self._config.url

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: float
    ) -> Samples:
        """The one series ``query`` yields between ``start`` and ``end``."""
        start_ts, end_ts = _aware("start", start), _aware("end", end)
        if end_ts < start_ts:
            raise ValueError("end must not be before start")
        if not (math.isfinite(step) and step > 0):
            raise ValueError("step must be a positive number of seconds")
        params = {
            "query": query, "start": f"{start_ts:.3f}", "end": f"{end_ts:.3f}",
            "step": str(float(step)),
        }
        data, warnings = await self._call("query_range", params)
        result = self._result(data, ("matrix",))
        series = self._one_series(result)
        if series is None:
            return Samples(warnings=warnings)
        values = series.get("values")
        if values is None and "histograms" in series:
            raise MetricsError(
                "the query returned native histograms; wrap it in histogram_quantile(...)"
            )
        if not isinstance(values, list):
            raise self._unexpected("a matrix series without values")
        samples, skipped = [], 0
        for pair in values:
            sample = self._sample(pair)
            if math.isfinite(sample.value):
                samples.append(sample)
            else:
                skipped += 1
        return Samples(samples, skipped=skipped, warnings=warnings)

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        """The single value of ``query``; None for no data or a NaN/Inf value."""
        params = {"query": query}
        if at is not None:
            params["time"] = f"{_aware('at', at):.3f}"
        data, _ = await self._call("query", params)
        result = self._result(data, ("vector", "scalar"))
        if data["resultType"] == "scalar":
            value = self._sample(result).value
        else:
            series = self._one_series(result)
            if series is None:
                return None
            if "value" not in series and "histogram" in series:
                raise MetricsError(
                    "the query returned a native histogram; wrap it in histogram_quantile(...)"
                )
            value = self._sample(series.get("value")).value
        return value if math.isfinite(value) else None

    # --- parsing -----------------------------------------------------------------------

    def _unexpected(self, what: str) -> MetricsError:
        return MetricsError(
            f"Prometheus at {self.url} sent an unexpected response ({what}); "
            "is url the Prometheus base URL?"
        )

    def _result(self, data: Any, expected: tuple[str, ...]) -> Any:
        if not isinstance(data, dict) or "result" not in data:
            raise self._unexpected("no data.result")
        kind = data.get("resultType")
        if kind not in expected:
            if kind == "matrix":
                raise MetricsError(
                    "the query returned a range vector; an instant query must not end "
                    "in a [range] selector (use e.g. rate(...[5m]))"
                )
            raise MetricsError(
                f"the query returned a {kind}, but a {' or '.join(expected)} was expected"
            )
        return data["result"]

    def _one_series(self, result: Any) -> dict[str, Any] | None:
        if not isinstance(result, list):
            raise self._unexpected("data.result is not a list")
        if not result:
            return None
        if len(result) > 1:
            shown = ", ".join(_labels(s) for s in result[:3])
            more = f" and {len(result) - 3} more" if len(result) > 3 else ""
            raise MetricsError(
                f"the query returned {len(result)} series ({_snippet(shown, 300)}{more}); "
                "it must aggregate to one series, e.g. wrap it in sum(...)"
            )
        series = result[0]
        if not isinstance(series, dict):
            raise self._unexpected("a series is not an object")
        return series

    def _sample(self, pair: Any) -> Sample:
        try:
            ts, raw = pair
            return Sample(datetime.fromtimestamp(float(ts), tz=UTC), float(raw))
        except (TypeError, ValueError, OverflowError) as exc:
            raise self._unexpected(f"a sample is not [time, value]: {pair!r:.80}") from exc

    # --- HTTP --------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Accept": "application/json", **self._config.headers}
        name = self._config.bearer_token_env
        if name:
            token = self._environ.get(name)
            if not token:
                raise MetricsError(
                    f"the environment variable {name} (bearer_token_env) is not set"
                )
            headers["Authorization"] = f"Bearer {token}"
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
        if self._client is not None:
            return await self._client.request(**request, headers=headers, timeout=timeout)
        async with httpx.AsyncClient(timeout=timeout) as client:
            return await client.request(**request, headers=headers)

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
            reason = _snippet(str(exc), 200) or type(exc).__name__
            raise _RetryableError(f"could not reach Prometheus at {where}: {reason}") from exc
        except httpx.HTTPError as exc:
            reason = _snippet(str(exc), 200) or type(exc).__name__
            raise MetricsError(f"request to Prometheus at {where} failed: {reason}") from exc

        code = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("status") == "error":
            kind = body.get("errorType") or "error"
            error = _snippet(str(body.get("error") or "no details"))
            message = f"Prometheus could not run the query ({kind}): {error}"
            if code >= 500:
                raise _RetryableError(message)
            raise MetricsError(message)
        if code >= 500:
            raise _RetryableError(
                f"Prometheus at {where} answered HTTP {code}: {_snippet(response.text, 200)}"
            )
        if code in (401, 403):
            raise MetricsError(
                f"Prometheus at {where} refused the request (HTTP {code}); "
                "check bearer_token_env and headers"
            )
        if not 200 <= code < 300:
            raise MetricsError(
                f"Prometheus at {where} answered HTTP {code}: {_snippet(response.text, 200)}"
            )
        if not isinstance(body, dict):
            raise self._unexpected(f"HTTP {code} but not a JSON object")
        if body.get("status") != "success" or "data" not in body:
            raise self._unexpected(f"status {str(body.get('status'))[:20]!r}")
        warnings = tuple(_snippet(str(w), 300) for w in body.get("warnings") or ())
        for warning in warnings:
            log.warning("Prometheus warning for %s: %s", endpoint, warning)
        return body["data"], warnings
