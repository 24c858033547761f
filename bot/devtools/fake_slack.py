"""A local fake of Slack's Web API served over real HTTP.

Tests, the benchmark and the console REPL point an unmodified slack_sdk client at it
(``AsyncWebClient(base_url=fake.base_url)``) so the whole HTTP path, including retry
handlers, is exercised without a workspace. The API methods live in ``fake_slack_api``,
channel IDs (names are accepted only where Slack takes them) in ``fake_slack_channels``
and limits in ``fake_slack_limits``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from aiohttp import web

from bot.devtools.fake_slack_api import APP_TOKEN_METHODS, BOT_SCOPES, Body, SlackApi
from bot.devtools.fake_slack_channels import ChannelDirectory
from bot.devtools.fake_slack_limits import (
    InjectedFailure,
    auth_error,
    error_body,
    pop_failure,
    read_params,
)
from bot.devtools.fake_slack_rates import RateLimits


@dataclass
class RecordedCall:
    """One Web API request as the fake saw it, so tests can assert on what the bot sent."""

    method: str
    params: Body
    headers: dict[str, str]
    at: float
    failed: bool = False
    status: int = 200
    response: Body = field(default_factory=dict)


class FakeSlack(SlackApi):
    """In-process Slack Web API; all state lives on the instance so tests never share it.

    ``rate_limits`` applies ``fake_slack_rates`` to every method (``tiers`` overrides a
    tier's per-minute rate and burst); a test that turns it off says why. ``strict_users``
    refuses user IDs not added with ``add_user``. ``scopes`` are the app's bot scopes
    (manifest.yml's by default)."""

    def __init__(
        self,
        *,
        tokens: Collection[str] | None = None,
        strict_users: bool = False,
        rate_limits: bool = True,
        post_rate_per_channel: float = 1.0,
        post_burst: int = 5,
        tiers: dict[int, tuple[float, int]] | None = None,
        scopes: Collection[str] = BOT_SCOPES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens, self.strict_users, self.clock = tokens, strict_users, clock
        self.scopes = tuple(scopes)
        self.limiter = RateLimits(post_rate_per_channel, post_burst, tiers) if rate_limits \
            else None
        self._triggers: dict[str, float | None] = {}
        self.calls: list[RecordedCall] = []
        self.uploads: list[Body] = []
        self.ephemerals: list[Body] = []
        self.views: dict[str, Body] = {}
        self.users: dict[str, Body] = {}
        self.usergroups: dict[str, Body] = {}
        self.channels = ChannelDirectory()  # name <-> ID, as the workspace knows them
        self._messages: dict[str, dict[str, Body]] = {}  # channel ID -> ts -> message
        self._pending_files: dict[str, Body] = {}
        self._failures: dict[str, list[InjectedFailure]] = {}
        self._ids = itertools.count(1)
        self._ts_micros = 1_700_000_000_000_000
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._origin: str | None = None
        # What apps.connections.open hands out (a test's Socket Mode server); None: refused.
        self.socket_mode_url: str | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port, so parallel tests never collide)."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/{file_id}", self._handle_upload)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._origin = f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        """Close the listener; state stays readable so tests can assert after shutdown."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What to pass as slack_sdk's ``base_url`` (it appends the method name)."""
        if self._origin is None:
            raise RuntimeError("FakeSlack is not started")
        return f"{self._origin}/api/"

    # -- test helpers ----------------------------------------------------------
    def calls_to(self, method: str) -> list[RecordedCall]:
        """Calls to one API method, failed ones included, in arrival order."""
        return [c for c in self.calls if c.method == method]

    async def wait_for(
        self,
        what: str | Callable[[RecordedCall], bool],
        count: int = 1,
        timeout: float = 5.0,
    ) -> list[RecordedCall]:
        """Wait until ``count`` calls match (method name or predicate), for background senders."""
        match = (lambda c: c.method == what) if isinstance(what, str) else what

        def matching() -> list[RecordedCall]:
            return [c for c in self.calls if match(c)]

        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(matching()) >= count)
        except TimeoutError:
            seen = [c.method for c in self.calls]
            msg = f"wanted {count} x {what!r}, got {len(matching())}; calls seen: {seen}"
            raise TimeoutError(msg) from None
        return matching()

    def clear(self) -> None:
        """Forget recorded calls (messages, users and uploads are kept)."""
        self.calls.clear()

    def fail_next(
        self,
        method: str,
        *,
        error: str = "internal_error",
        status: int = 200,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail, to test the bot's error paths."""
        if error == "ratelimited" and status == 200:
            status = 429
        if status == 429 and retry_after is None:
            retry_after = 1
        failure = InjectedFailure(error, status, times, retry_after)
        self._failures.setdefault(method, []).append(failure)

    def messages(self, channel: str) -> list[Body]:
        """Root messages of ``channel`` (ID, ``#name`` or user ID for the DM) with their
        current content and a ``replies`` list."""
        cid = self.channel_id(channel)
        roots = [m for m in self._messages.get(cid, {}).values() if _is_root(m)]
        return [{**m, "replies": self._replies(cid, m["ts"])} for m in roots]

    def thread(self, channel: str, ts: str) -> list[Body]:
        """Parent then replies, like conversations.replies; empty if the parent is unknown."""
        cid = self.channel_id(channel)
        parent = self._messages.get(cid, {}).get(ts)
        return [dict(parent), *self._replies(cid, ts)] if parent else []

    # -- HTTP plumbing ---------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.Response:
        method, headers = request.match_info["method"], dict(request.headers)
        params = await read_params(request)
        extra: dict[str, str]
        if params is None:
            params, (status, body, extra) = {}, (200, error_body("invalid_json"), {})
        else:
            status, body, extra = self._dispatch(method, params, headers)
        failed = status != 200 or not body.get("ok")
        self.calls.append(RecordedCall(method, params, headers, self.clock(), failed, status, body))
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=status, headers=extra)

    def _dispatch(
        self, method: str, params: Body, headers: dict[str, str]
    ) -> tuple[int, Body, dict[str, str]]:
        """Order matters: injected failures, then auth, then rate limit, then the method."""
        if reply := pop_failure(self._failures.get(method, [])):
            return reply
        token = params.pop("token", None)
        kind = "xapp-" if method in APP_TOKEN_METHODS else "xoxb-"
        if denied := auth_error(headers.get("Authorization"), token, self.tokens, kind):
            return 200, denied, {}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, error_body("unknown_method"), {}
        if self.limiter is not None:
            channel = self.channel_id(str(params.get("channel") or ""))  # chat.postMessage's key
            wait = self.limiter.retry_after(method, channel, self.clock())
            if wait:
                return 429, error_body("ratelimited"), {"Retry-After": str(wait)}
        return 200, handler(params), {}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        """Stand-in for files.slack.com: slack_sdk POSTs the raw bytes here, without a token."""
        pending = self._pending_files.get(request.match_info["file_id"])
        if pending is None:
            return web.Response(status=404, text="file not found")
        if request.content_type == "multipart/form-data":
            parts = [v for v in (await request.post()).values() if isinstance(v, web.FileField)]
            pending["bytes"] = parts[0].file.read() if parts else b""
        else:
            pending["bytes"] = await request.read()
        return web.Response(text=f"OK - {len(pending['bytes'])}")


def _is_root(message: Body) -> bool:
    return message.get("thread_ts", message["ts"]) == message["ts"]
