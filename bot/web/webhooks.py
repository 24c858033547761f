"""Alert webhooks: ``/webhooks/alertmanager`` and ``/webhooks/grafana``.

Checked in order of cost: configured at all (503), bearer token (401, constant-time
compare), size (413, from Content-Length and again while reading), then the payload
(400 with the reason). Only then are rows written; Slack is never called here, the
notifier delivers what was recorded. Nothing is recorded for a refused request.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.engine.alerts import AlertService
from integrations.alerts import Alert, AlertPayloadError, parse_alertmanager, parse_grafana

log = logging.getLogger(__name__)
MAX_ALERT_BODY = 1_000_000
Parser = Callable[[bytes], list[Alert]]


def _error(status: int, reason: str, **headers: str) -> Response:
    return JSONResponse({"ok": False, "error": reason}, status_code=status, headers=headers)


def authorized(header: str | None, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is (or claims to be) larger than ``limit``. Reading stops
    at the limit, Content-Length or not (chunked), so nothing larger is ever buffered; the
    caller answers 413 at once. Shared by the webhooks and ``/slack/events``."""
    declared = request.headers.get("content-length")
    if declared is not None and not (declared.isascii() and declared.isdigit()
                                     and int(declared) <= limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def webhook_routes(alerts: AlertService, token: str | None) -> list[Route]:
    """The two endpoints; without a token they only say how to enable themselves."""

    def endpoint(parse: Parser) -> Callable[[Request], object]:
        async def receive(request: Request) -> Response:
            if not token:
                return _error(503, "webhooks disabled: set SHIPBOT_WEBHOOK_TOKEN")
            if not authorized(request.headers.get("authorization"), token):
                return _error(401, "missing or wrong bearer token",
                              **{"WWW-Authenticate": 'Bearer realm="shipbot"'})
            try:
                body = await read_limited(request, MAX_ALERT_BODY)
            except ClientDisconnect:
                return _error(400, "the request body was not sent completely")
            if body is None:
                return _error(413, f"request body larger than {MAX_ALERT_BODY} bytes")
            try:
                parsed = parse(body)
            except AlertPayloadError as exc:
                return _error(400, str(exc))
            try:
                result = await alerts.receive(parsed)
            except Exception:  # the sender retries 5xx: nothing is lost
                log.exception("could not record %d alerts", len(parsed))
                return _error(503, "could not record the alerts now; retry later")
            return JSONResponse(result.as_json())

        return receive

    return [
        Route("/webhooks/alertmanager", endpoint(parse_alertmanager), methods=["POST"]),
        Route("/webhooks/grafana", endpoint(parse_grafana), methods=["POST"]),
    ]
