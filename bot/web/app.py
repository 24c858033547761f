"""The ASGI app: Slack's endpoint, alert webhooks, health and metrics, with the bot's
lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.starlette.async_handler import to_async_bolt_request, to_starlette_response
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.runtime import Shipbot
from bot.slack.socket_mode import SocketModeLink
from bot.web.webhooks import read_limited, webhook_routes

MAX_SLACK_BODY = 1_000_000
HEALTH_TIMEOUT_SECONDS = 3.0
SOCKET_MODE_ONLY = (
    "Slack events are not accepted over HTTP here: this Shipbot receives them over Socket "
    "Mode (SLACK_APP_TOKEN is set). To accept signed HTTP requests as well, set "
    "SLACK_SIGNING_SECRET.")


def _refuse(status: int, reason: str) -> Response:
    return JSONResponse({"ok": False, "error": reason}, status_code=status)


def signature_headers_usable(headers: Headers) -> bool:
    """Slack's timestamp is ASCII digits and its signature ASCII: anything else would make
    slack_sdk's verifier raise (a 500) instead of answering 401. Missing headers are Bolt's
    to judge (it refuses them, except for Slack's unsigned ``ssl_check``)."""
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if timestamp is not None and not (timestamp.isascii() and timestamp.isdigit()
                                      and len(timestamp) <= 12):
        return False
    return signature is None or signature.isascii()


def build_asgi_app(bot: Shipbot, *, manage_lifespan: bool = True,
                   slack_link: SocketModeLink | None = None) -> Starlette:
    """``slack_link`` is the Socket Mode connection when there is one: readiness reports it
    and the lifespan closes it before the bot stops."""
    token = bot.settings.SHIPBOT_WEBHOOK_TOKEN

    async def livez(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(bot.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if manage_lifespan:
            await bot.start()
        try:
            yield
        finally:
            if slack_link is not None:  # no envelope may arrive while the bot stops
                await slack_link.close()
            if manage_lifespan:
                await bot.stop()

    return Starlette(
        routes=[
            Route("/slack/events", _slack_events(bot), methods=["POST"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/healthz", _readiness(bot, slack_link), methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *webhook_routes(bot.alerts, token.get_secret_value() if token else None),
        ],
        lifespan=lifespan,
    )


def _slack_events(bot: Shipbot) -> Callable[[Request], Awaitable[Response]]:
    """Cheapest refusals first; Bolt gets the body already read (and bounded) here."""
    # Only a signing secret makes HTTP events trustworthy: without one (Socket Mode) the
    # route never reaches Bolt, whatever the request looks like.
    http_events = bot.settings.SLACK_SIGNING_SECRET is not None

    async def slack_events(request: Request) -> Response:
        if not http_events:
            return _refuse(404, SOCKET_MODE_ONLY)
        try:
            body = await read_limited(request, MAX_SLACK_BODY)
        except ClientDisconnect:
            return _refuse(400, "the request body was not sent completely")
        if body is None:
            return _refuse(413, f"request body larger than {MAX_SLACK_BODY} bytes")
        if not signature_headers_usable(request.headers):
            return _refuse(401, "invalid request")
        try:
            bolt_request = to_async_bolt_request(request, body)
        except UnicodeDecodeError:
            return _refuse(400, "the request body is not UTF-8")
        return to_starlette_response(await bot.slack.async_dispatch(bolt_request))

    return slack_events


def _readiness(bot: Shipbot, slack_link: SocketModeLink | None
               ) -> Callable[[Request], Awaitable[Response]]:
    """200 when the database answers and (Socket Mode) the WebSocket is up; else 503
    naming what is missing."""
    async def healthz(_: Request) -> Response:
        report = {"database": await _database_state(bot)}
        if slack_link is not None:
            report["slack"] = await slack_link.state()
        ok = report["database"] == "ok" and report.get("slack", "connected") == "connected"
        return JSONResponse({"ok": ok, **report}, status_code=200 if ok else 503)

    return healthz


async def _database_state(bot: Shipbot) -> str:
    """"ok", or what went wrong, bounded in time so a hung database fails readiness."""
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS), bot.edge_sessions() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except TimeoutError:
        return f"no answer within {HEALTH_TIMEOUT_SECONDS:g}s"
    except Exception as exc:
        return f"unavailable ({type(exc).__name__})"
    return "ok"
