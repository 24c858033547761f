"""Serving an API fake's ``handler`` (an ``httpx.Request`` in, an ``httpx.Response`` out,
as ``httpx.MockTransport`` takes it) over real HTTP on loopback, so the provider under test
goes through its own client, TLS aside, exactly as against the real service."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
from aiohttp import web

Handler = Callable[[httpx.Request], httpx.Response]


def serving_app(handler: Handler, *, forward_headers: Iterable[str] = ()) -> web.Application:
    """An aiohttp app answering every path with ``handler``; the response's headers named
    in ``forward_headers`` (lower case) are passed on, the body as JSON."""
    kept = {name.lower() for name in forward_headers}

    async def serve(request: web.Request) -> web.Response:
        forwarded = httpx.Request(request.method, str(request.url),
                                  headers=dict(request.headers), content=await request.read())
        answer = handler(forwarded)
        return web.Response(status=answer.status_code, body=answer.content,
                            headers={k: v for k, v in answer.headers.items()
                                     if k.lower() in kept},
                            content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", serve)
    return app
