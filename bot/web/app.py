"""The ASGI app: Slack's endpoint, alert webhooks, health and metrics, with the bot's
lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.runtime import Shipbot
from bot.web.webhooks import webhook_routes

MAX_SLACK_BODY = 1_000_000


def build_asgi_app(bot: Shipbot, *, manage_lifespan: bool = True) -> Starlette:
    slack_handler = AsyncSlackRequestHandler(bot.slack)
    token = bot.settings.SHIPBOT_WEBHOOK_TOKEN

    async def slack_events(request: Request) -> Response:
        if int(request.headers.get("content-length") or 0) > MAX_SLACK_BODY:
            return Response("request too large", status_code=413)
        return await slack_handler.handle(request)

    async def healthz(_: Request) -> Response:
        try:
            async with bot.sessions() as session:
                await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        except Exception as exc:
            return JSONResponse({"ok": False, "database": type(exc).__name__}, status_code=503)
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
            if manage_lifespan:
                await bot.stop()

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *webhook_routes(bot.alerts, token.get_secret_value() if token else None),
        ],
        lifespan=lifespan,
    )
