"""A deployer that receives Shipbot's webhook, for the webhook provider's tests.

Stateful like a real one: ``POST /api/deploys`` (and /rollbacks, /weights, /promotions,
/aborts) creates a run, or answers the run already created for the same
``Idempotency-Key``; ``GET /api/runs/<id>`` moves it on one state per poll (queued,
running, then succeeded: ``fail*`` versions fail, ``slow*`` ones run until cancelled);
``POST /api/runs/<id>/cancel`` stops it. It checks every request as a careful receiver
would: a bearer token, or an HMAC-SHA256 ``sha256=<hex>`` of ``<timestamp>.<raw body>``
with a timestamp at most five minutes old, and refuses a wrong one with 401. Served as an
httpx MockTransport handler or as an aiohttp app on loopback.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from aiohttp import web

from tests.fake_http import serving_app

ACTIONS = {"deploys": "deploy", "rollbacks": "rollback", "weights": "set_weight",
           "promotions": "promote", "aborts": "abort"}
MAX_SKEW_SECONDS = 300


@dataclass
class Run:
    id: str
    kind: str
    body: dict[str, Any]
    key: str
    polls: int = 0
    cancelled: bool = False
    created: float = field(default_factory=time.time)

    @property
    def version(self) -> str:
        return str(self.body.get("version", ""))


@dataclass
class FakeDeployer:
    token: str | None = None
    secret: str | None = None
    polls: int = 3  # polls before a run ends: queued, running, then its outcome
    runs: dict[str, Run] = field(default_factory=dict)
    requests: list[httpx.Request] = field(default_factory=list)
    faults: list[httpx.Response] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why requests were refused

    def started(self, kind: str | None = None) -> list[Run]:
        return [r for r in self.runs.values() if kind is None or r.kind == kind]

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            return self.faults.pop(0)
        why = self._refusal(request)
        if why:
            self.refused.append(why)
            return _json(401, {"message": why})
        parts = request.url.path.strip("/").split("/")
        match request.method, parts:
            case "POST", ["api", action] if action in ACTIONS:
                return self._create(ACTIONS[action], request)
            case "GET", ["api", "runs", run_id] if run_id in self.runs:
                return _json(200, self._advance(self.runs[run_id]))
            case "POST", ["api", "runs", run_id, "cancel"] if run_id in self.runs:
                self.runs[run_id].cancelled = True
                return _json(202, self._fields(self.runs[run_id], "cancelling"))
        return _json(404, {"message": "Not Found"})

    def _refusal(self, request: httpx.Request) -> str | None:
        if self.token is not None:
            ok = request.headers.get("authorization") == f"Bearer {self.token}"
            return None if ok else "bad token"
        assert self.secret is not None
        stamp = request.headers.get("x-shipbot-timestamp", "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > MAX_SKEW_SECONDS:
            return "stale or missing timestamp"
        signed = stamp.encode() + b"." + request.content
        expected = "sha256=" + hmac.new(self.secret.encode(), signed, hashlib.sha256).hexdigest()
        given = request.headers.get("x-shipbot-signature-256", "")
        return None if hmac.compare_digest(given, expected) else "signature mismatch"

    def _create(self, kind: str, request: httpx.Request) -> httpx.Response:
        key = request.headers.get("idempotency-key")
        if not key:
            return _json(400, {"message": "Idempotency-Key header required"})
        body = json.loads(request.content)
        if not isinstance(body.get("version"), str):
            return _json(422, {"message": "version must be a string"})
        for run in self.runs.values():
            if run.key == key:
                return _json(200, self._fields(run, "queued"))
        run = Run(id=f"run-{len(self.runs) + 1}", kind=kind, body=body, key=key)
        self.runs[run.id] = run
        return _json(201, self._fields(run, "queued"))

    def _advance(self, run: Run) -> dict[str, Any]:
        run.polls += 1
        if run.cancelled:
            return self._fields(run, "cancelled", "cancelled by request")
        if run.polls < self.polls or run.version.startswith("slow"):
            return self._fields(run, "queued" if run.polls == 1 else "running")
        if run.version.startswith("fail"):
            return self._fields(run, "failed", f"pods for {run.version} never became ready")
        return self._fields(run, "succeeded")

    def _fields(self, run: Run, state: str, message: str | None = None) -> dict[str, Any]:
        created = datetime.fromtimestamp(run.created, UTC).isoformat().replace("+00:00", "Z")
        return {"id": run.id, "state": state, "created_at": created,
                "result": {"message": message},
                "links": {"status": f"/api/runs/{run.id}",
                          "html": f"https://deployer.example.com/runs/{run.id}"}}

    def app(self) -> web.Application:
        return serving_app(self.handler, forward_headers=("retry-after",))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)
