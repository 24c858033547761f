"""The ``webhook`` deploy target: POST a JSON body to a deployer, then poll its run.

Every request carries ``Idempotency-Key: <job key>``: a receiver must answer a repeated
key with the run it already started (a restart repeats the POST, since Shipbot keeps no
record of its own). Run ids are self-describing (``wh1.`` + base64url JSON of the status
URL, the receiver's id and the key), so a new process can poll and cancel a run with
nothing in memory; the run's age comes from the receiver (``started_field``), and the
engine's step deadline stops a run that never ends in any case. Requests are
authenticated by a header from ``auth.token_env`` or signed: ``sha256=<hex HMAC-SHA256>`` over
``<timestamp>.<raw body>`` (or the body alone), the timestamp in its own header, so a
receiver can refuse a replayed or forged call.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.command_templates import render
from integrations.http import HttpOptions, new_client, raise_for_status, send, snippet
from integrations.webhook_config import WebhookConfig

log = logging.getLogger(__name__)
RUN_PREFIX = "wh1."
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WebhookProvider:
    """A ``FullTarget`` without health; its config says which capabilities it has."""

    def __init__(self, config: WebhookConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._options = options or HttpOptions()
        self._environ = os.environ if environ is None else environ
        self._clock = clock

    async def start(self, job: JobSpec) -> str:
        return await self._act(job, self._config.url, self._config.body, {})

    async def rollback(self, job: JobSpec) -> str:
        return await self._act(job, self._need("rollback_url", "roll back natively"),
                               self._config.body, {})

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise IntegrationError(f"traffic weight must be a whole number 0-100, not {weight!r}")
        return await self._act(job, self._need("set_weight_url", "shift traffic"),
                               self._config.weight_body, {"weight": weight})

    async def promote(self, job: JobSpec) -> str:
        return await self._act(job, self._need("promote_url", "promote a new version"),
                               self._config.body, {})

    async def abort(self, job: JobSpec) -> str:
        return await self._act(job, self._need("abort_url", "abort a rollout"),
                               self._config.body, {})

    async def health(self, job: JobSpec) -> str:
        raise IntegrationError("a webhook deploy target has no health check; use the "
                               "service's http health check instead")

    def _need(self, setting: str, purpose: str) -> str:
        url: str | None = getattr(self._config, setting)
        if url is None:
            raise IntegrationError(f"this webhook target cannot {purpose}: it has no "
                                   f"{setting} configured")
        return url

    async def _act(self, job: JobSpec, url_template: str, body: dict[str, Any],
                   extra: dict[str, int]) -> str:
        """POST the body for ``job`` once (by key) and return the run to poll."""
        url = fill_url(url_template, {"service": job.service, "env": job.env})
        values: dict[str, Any] = {"service": job.service, "env": job.env,
                                  "version": job.version, "artifact": job.artifact,
                                  "key": job.key, **extra}
        raw = json.dumps(fill_body(body, values), separators=(",", ":")).encode()
        answer = await self._request("POST", url, raw, job.key)
        run = {"s": self._status_url(answer, url, job), "k": job.key}
        found = dig(answer, self._config.id_field) if self._config.id_field else None
        if found is not None and not isinstance(found, dict | list) and str(found) != "":
            run["i"] = str(found)  # no id: no "None" for cancel_url's {id}
        return encode_run(run)

    def _status_url(self, answer: Any, url: str, job: JobSpec) -> str:
        c = self._config
        if c.status_url_field:
            found = dig(answer, c.status_url_field)
            if not isinstance(found, str) or not found:
                raise IntegrationError(
                    f"the webhook receiver's answer has no {c.status_url_field}, so its run "
                    "cannot be followed: check status_url_field (or the receiver)")
            return self._followable(str(httpx.URL(url).join(found)))
        assert c.status_url is not None and c.id_field is not None
        run_id = dig(answer, c.id_field)
        if run_id is None or isinstance(run_id, dict | list) or str(run_id) == "":
            raise IntegrationError(f"the webhook receiver's answer has no {c.id_field}, so "
                                   "its run cannot be followed: check id_field")
        return self._followable(fill_url(c.status_url, {"service": job.service,
                                                       "env": job.env, "id": str(run_id)}))

    def _followable(self, url: str) -> str:
        """Only http(s) on a host we were given is polled (a run id could be forged)."""
        if not self._allowed(url):
            raise IntegrationError(
                "the webhook receiver's status URL is not on a scheme, host and port of the "
                f"configured URLs ({snippet(url, 100)}), so Shipbot will not poll it (each "
                "poll carries the credentials): check the receiver")
        return url

    async def poll(self, run_id: str) -> RunStatus:
        run = self._decode(run_id)
        answer = await self._request("GET", run["s"], b"", None)
        c = self._config
        state = dig(answer, c.status_field)
        if state is None or isinstance(state, dict | list):
            raise IntegrationError(
                f"the deployer's answer for {snippet(run['s'], 100)} has no {c.status_field}, "
                "so Shipbot cannot tell how the run goes: check status_field")
        link = dig(answer, c.link_field) if c.link_field else None
        url = link if isinstance(link, str) and link.startswith(("http://", "https://")) \
            else None
        said = str(state)
        if state in c.success_values:
            return RunStatus(state=RunState.SUCCEEDED, url=url,
                             detail=f"the deployer reports {said}")
        if state in c.failure_values:
            why = dig(answer, c.message_field) if c.message_field else None
            detail = f"the deployer reports {said}" + (f": {snippet(str(why), 300)}"
                                                      if why not in (None, "") else "")
            return RunStatus(state=RunState.FAILED, url=url, detail=detail)
        started = _seconds(dig(answer, c.started_field)) if c.started_field else None
        if started is not None and self._clock() > started + c.timeout_seconds:
            await self._stop_late(run_id)
            return RunStatus(state=RunState.FAILED, url=url, detail=(
                f"the deployer did not report success or failure within "
                f"{c.timeout_seconds:g} s (last {c.status_field}: {snippet(said, 60)})"))
        return RunStatus(state=RunState.RUNNING, url=url, detail=f"is {snippet(said, 60)}")

    async def _stop_late(self, run_id: str) -> None:
        """A run past its time is stopped, as far as the receiver lets us."""
        try:
            await self.cancel(run_id)
        except IntegrationError as exc:
            log.warning("webhook run past its timeout could not be cancelled: %s", exc)

    async def cancel(self, run_id: str) -> None:
        run = self._decode(run_id)
        if not self._config.cancel_url:
            log.info("webhook run %s: no cancel_url configured, the run is not stopped",
                     run["k"])
            return
        if "{id}" in self._config.cancel_url and not run.get("i"):
            raise IntegrationError(
                f"the receiver's answer had no id, so Shipbot cannot cancel the run (its "
                f"cancel_url needs {{id}}); stop it at the deployer: check id_field "
                f"({self._config.id_field})")
        url = fill_url(self._config.cancel_url, {"id": run.get("i", "")})
        raw = json.dumps({"id": run.get("i"), "key": run["k"]}).encode()
        await self._request("POST", url, raw, f"{run['k']}:cancel")

    def _decode(self, run_id: str) -> dict[str, Any]:
        """The run a run id describes; only ids we hand out, for URLs we were given."""
        run = decode_run(run_id)
        if run is None or not self._allowed(str(run["s"])):
            raise IntegrationError(f"unknown webhook run: {run_id[:60]!r}")
        return run

    def _allowed(self, url: str) -> bool:
        """A status URL must be on the scheme, host and port of a URL we were given (hosts
        are literal): each poll carries the auth header or signature, so neither plain
        http nor another service on that host may get it."""
        c = self._config
        given = (c.url, c.status_url, c.rollback_url, c.set_weight_url, c.promote_url,
                 c.abort_url, c.cancel_url)
        try:
            return _origin(url) in {_origin(fill_url(u, {})) for u in given if u}
        except httpx.InvalidURL:
            return False

    async def _request(self, method: str, url: str, raw: bytes, key: str | None) -> Any:
        target = httpx.URL(url)
        label = f"the webhook receiver at {target.host}"
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **self._auth_headers(raw)}
        if key is not None:
            headers[IDEMPOTENCY_HEADER] = key
        origin = f"{target.scheme}://{target.netloc.decode()}"
        async with new_client("webhook", origin, headers=headers, options=self._options,
                              timeout_seconds=self._config.request_timeout_seconds) as client:
            response = await send(client, "webhook", label, self._options, method, url,
                                  content=raw if method == "POST" else None)
        raise_for_status(response, label=label, token_env=self._config.secret_name,
                         missing=f"endpoint {target.path}")
        if method == "POST" and not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise IntegrationError(f"{label} answered {method} {target.path} with something "
                                   "that is not JSON: check the URL") from None

    def _auth_headers(self, raw: bytes) -> dict[str, str]:
        c = self._config
        name = c.secret_name
        secret = self._environ.get(name)
        if not secret:
            raise IntegrationError(f"the environment variable {name} is not set: export it "
                                   "for the webhook deploy target")
        if c.auth is not None:
            value = f"{c.auth.scheme} {secret}" if c.auth.scheme else secret
            return {c.auth.header: value}
        assert c.signature is not None
        stamp = str(int(self._clock()))
        signed = raw if c.signature.signed == "body" else stamp.encode() + b"." + raw
        digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        return {c.signature.header: f"sha256={digest}", c.signature.timestamp_header: stamp}


def fill_body(template: Any, values: dict[str, Any]) -> Any:
    """The JSON body: string leaves templated one by one (never text concatenation), a
    leaf that is only ``{weight}`` a number, only ``{artifact}`` null when there is none."""
    if isinstance(template, dict):
        return {key: fill_body(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill_body(value, values) for value in template]
    if not isinstance(template, str):
        return template
    whole = template[1:-1] if template.startswith("{") and template.endswith("}") else None
    if whole in ("weight", "artifact") and whole in values:
        return values[whole]
    text = {k: "" if v is None else str(v) for k, v in values.items()}
    return render(template, text)


def fill_url(template: str, values: dict[str, str]) -> str:
    return render(template, {k: quote(v, safe="") for k, v in values.items()})


def dig(data: Any, path: str) -> Any:
    """``links.status`` of a JSON object, or None where a step is missing."""
    for part in path.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def encode_run(run: dict[str, Any]) -> str:
    raw = json.dumps(run, separators=(",", ":"), sort_keys=True).encode()
    return RUN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_run(run_id: str) -> dict[str, Any] | None:
    if not run_id.startswith(RUN_PREFIX):
        return None
    text = run_id[len(RUN_PREFIX):]
    try:
        run = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        return None
    ok = isinstance(run, dict) and isinstance(run.get("s"), str) and \
        isinstance(run.get("k"), str)
    return run if ok else None


def _origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default port when none is written)."""
    parsed = httpx.URL(url)
    default = {"http": 80, "https": 443}.get(parsed.scheme)
    return parsed.scheme, parsed.host, parsed.port or default


def _seconds(value: Any) -> float | None:
    """A start time as the receiver gives it: ISO 8601 or Unix seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
    return None
