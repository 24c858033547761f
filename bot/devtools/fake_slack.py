"""A local fake of Slack's Web API served over real HTTP.

Tests, the benchmark and the console REPL point an unmodified slack_sdk client at it
(``AsyncWebClient(base_url=fake.base_url)``) so the whole HTTP path, including retry
handlers, is exercised without a workspace. Limits live in ``fake_slack_limits``.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bot.devtools.fake_slack_limits import (
    InjectedFailure,
    PostRateLimiter,
    auth_error,
    error_body,
    message_error,
    pop_failure,
    read_params,
    view_error,
)

BOT_USER, BOT_ID, TEAM_ID, TEAM_NAME = "UBOT", "BBOT", "T0001", "Shipbot test"
Body = dict[str, Any]


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


class FakeSlack:
    """In-process Slack Web API; all state lives on the instance so tests never share it."""

    def __init__(
        self,
        *,
        tokens: Collection[str] | None = None,
        strict_users: bool = False,
        rate_limits: bool = True,
        post_rate_per_channel: float = 1.0,
        post_burst: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tokens, self.strict_users, self.clock = tokens, strict_users, clock
        self.limiter = PostRateLimiter(post_rate_per_channel, post_burst) if rate_limits else None
        self.calls: list[RecordedCall] = []
        self.uploads: list[Body] = []
        self.ephemerals: list[Body] = []
        self.views: dict[str, Body] = {}
        self.users: dict[str, Body] = {}
        self.usergroups: dict[str, Body] = {}
        self._channels: dict[str, dict[str, Body]] = {}  # channel -> ts -> message (roots+replies)
        self._pending_files: dict[str, Body] = {}
        self._failures: dict[str, list[InjectedFailure]] = {}
        self._ids = itertools.count(1)
        self._ts_micros = 1_700_000_000_000_000
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._origin: str | None = None

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

    def add_user(
        self,
        id: str,
        name: str,
        real_name: str | None = None,
        deleted: bool = False,
        is_bot: bool = False,
    ) -> Body:
        """Register a user for users.info; required for every user once ``strict_users`` is on."""
        real = real_name or name
        self.users[id] = {
            "id": id, "team_id": TEAM_ID, "name": name, "real_name": real, "deleted": deleted,
            "is_bot": is_bot, "tz": "UTC", "tz_label": "Coordinated Universal Time", "tz_offset": 0,
            "profile": {"real_name": real, "display_name": name},
        }  # fmt: skip
        return self.users[id]

    def add_usergroup(
        self, id: str, handle: str, users: list[str], name: str | None = None
    ) -> Body:
        """Register a user group (e.g. an on-call rota) for the usergroups.* methods."""
        self.usergroups[id] = {
            "id": id, "team_id": TEAM_ID, "handle": handle, "name": name or handle,
            "user_count": len(users), "users": list(users),
        }  # fmt: skip
        return self.usergroups[id]

    def messages(self, channel: str) -> list[Body]:
        """Root messages of ``channel`` with their current content and a ``replies`` list."""
        roots = [m for m in self._channels.get(channel, {}).values() if _is_root(m)]
        return [{**m, "replies": self._replies(channel, m["ts"])} for m in roots]

    def thread(self, channel: str, ts: str) -> list[Body]:
        """Parent then replies, like conversations.replies; empty if the parent is unknown."""
        parent = self._channels.get(channel, {}).get(ts)
        return [dict(parent), *self._replies(channel, ts)] if parent else []

    # -- HTTP plumbing ---------------------------------------------------------
    async def _handle_api(self, request: web.Request) -> web.Response:
        method, headers = request.match_info["method"], dict(request.headers)
        params = await read_params(request)
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
        if denied := auth_error(headers.get("Authorization"), token, self.tokens):
            return 200, denied, {}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, error_body("unknown_method"), {}
        if method == "chat.postMessage" and self.limiter is not None:
            wait = self.limiter.retry_after(str(params.get("channel", "")), self.clock())
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

    # -- message store ---------------------------------------------------------
    def _next_ts(self) -> str:
        self._ts_micros += 100
        return f"{self._ts_micros // 1_000_000}.{self._ts_micros % 1_000_000:06d}"

    def _replies(self, channel: str, ts: str) -> list[Body]:
        store = self._channels.get(channel, {}).values()
        return [dict(m) for m in store if m.get("thread_ts") == ts and m["ts"] != ts]

    def _store(self, channel: str, params: Body, **extra: Any) -> Body:
        """Append a message; a known ``thread_ts`` makes it a reply, unknown ones go top-level."""
        store = self._channels.setdefault(channel, {})
        msg: Body = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, **extra}
        msg["text"] = params.get("text") or ""
        msg.update({k: params[k] for k in ("blocks", "attachments", "metadata") if params.get(k)})
        msg["ts"] = self._next_ts()
        parent = store.get(str(params.get("thread_ts")))
        if parent is not None:
            root = store[parent.get("thread_ts", parent["ts"])]
            root["thread_ts"], msg["thread_ts"] = root["ts"], root["ts"]
            root["reply_count"] = root.get("reply_count", 0) + 1
        store[msg["ts"]] = msg
        return msg

    def _find(self, p: Body) -> Body | None:
        return self._channels.get(str(p.get("channel")), {}).get(str(p.get("ts")))

    # -- API methods (looked up by name: chat.postMessage -> _api_chat_postMessage) --
    def _api_auth_test(self, p: Body) -> Body:
        return {"ok": True, "url": "https://shipbot-test.slack.com/", "team": TEAM_NAME,
                "user": "shipbot", "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID,
                "is_enterprise_install": False}  # fmt: skip

    def _api_chat_postMessage(self, p: Body) -> Body:
        if not p.get("channel"):
            return error_body("channel_not_found")
        if err := message_error(p):
            return err
        msg = self._store(str(p["channel"]), p)
        return {"ok": True, "channel": p["channel"], "ts": msg["ts"], "message": dict(msg)}

    def _api_chat_postEphemeral(self, p: Body) -> Body:
        if not p.get("channel") or not p.get("user"):
            return error_body("user_not_in_channel" if p.get("channel") else "channel_not_found")
        if err := message_error(p):
            return err
        self.ephemerals.append({**p, "message_ts": self._next_ts()})
        return {"ok": True, "message_ts": self.ephemerals[-1]["message_ts"]}

    def _api_chat_update(self, p: Body) -> Body:
        if (msg := self._find(p)) is None:
            return error_body("message_not_found")
        if err := message_error({**msg, **p}):
            return err
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in p:  # Slack keeps omitted blocks/attachments; [] clears them
                msg[key] = p[key]
        msg["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        return {"ok": True, "channel": p["channel"], "ts": msg["ts"], "text": msg["text"],
                "message": dict(msg)}  # fmt: skip

    def _api_chat_delete(self, p: Body) -> Body:
        if self._find(p) is None:
            return error_body("message_not_found")
        store, ts = self._channels[str(p["channel"])], str(p["ts"])
        for doomed in [ts, *(r["ts"] for r in self._replies(str(p["channel"]), ts))]:
            del store[doomed]
        return {"ok": True, "channel": p["channel"], "ts": ts}

    def _api_conversations_join(self, p: Body) -> Body:
        channel = p.get("channel")
        return {"ok": True, "channel": {"id": channel, "name": channel, "is_member": True}}

    def _api_users_info(self, p: Body) -> Body:
        uid = str(p.get("user", ""))
        if uid not in self.users and not self.strict_users and uid[:1] in ("U", "W"):
            self.add_user(uid, uid.lower())
        user = self.users.get(uid)
        return {"ok": True, "user": user} if user else error_body("user_not_found")

    def _api_usergroups_list(self, p: Body) -> Body:
        with_users = str(p.get("include_users", "")).lower() in ("1", "true")
        groups = [{k: v for k, v in g.items() if with_users or k != "users"}
                  for g in self.usergroups.values()]  # fmt: skip
        return {"ok": True, "usergroups": groups}

    def _api_usergroups_users_list(self, p: Body) -> Body:
        if (group := self.usergroups.get(str(p.get("usergroup")))) is None:
            return error_body("no_such_subteam")
        return {"ok": True, "users": list(group["users"])}

    def _api_views_open(self, p: Body) -> Body:
        if not p.get("trigger_id"):
            return error_body("invalid_arguments", ["missing required field: trigger_id"])
        return view_error(p.get("view")) or self._save_view(f"V{next(self._ids):08d}", p["view"])

    def _api_views_update(self, p: Body) -> Body:
        if str(p.get("view_id")) not in self.views:
            return error_body("not_found")
        return view_error(p.get("view")) or self._save_view(str(p["view_id"]), p["view"])

    def _save_view(self, view_id: str, view: Body) -> Body:
        self.views[view_id] = {**view, "id": view_id, "team_id": TEAM_ID, "bot_id": BOT_ID,
                               "root_view_id": view_id, "state": {"values": {}}}  # fmt: skip
        return {"ok": True, "view": self.views[view_id]}

    def _api_files_getUploadURLExternal(self, p: Body) -> Body:
        if not p.get("filename") or not p.get("length"):
            return error_body("invalid_arguments", ["missing required field: filename or length"])
        fid = f"F{next(self._ids):08d}"
        self._pending_files[fid] = {"file_id": fid, "filename": p["filename"], "bytes": None}
        return {"ok": True, "upload_url": f"{self._origin}/upload/{fid}", "file_id": fid}

    def _api_files_completeUploadExternal(self, p: Body) -> Body:
        files = p.get("files") if isinstance(p.get("files"), list) else []
        pending = [self._pending_files.get(str(f.get("id"))) or {} for f in files]
        if not files or any(up.get("bytes") is None for up in pending):
            return error_body("file_not_found")  # unknown id, or the bytes were never POSTed
        channel = p.get("channel_id") or str(p.get("channels") or "").split(",")[0] or None
        thread_ts, comment = p.get("thread_ts"), p.get("initial_comment")
        shared: list[Body] = []
        for f, up in zip(files, pending, strict=True):
            title = f.get("title") or up["filename"]
            shared.append({"id": up["file_id"], "name": up["filename"], "title": title})
            self.uploads.append({**up, "title": title, "channel": channel,
                                 "thread_ts": thread_ts, "initial_comment": comment})  # fmt: skip
            del self._pending_files[up["file_id"]]
        if channel:  # Slack shares the files as a message in the channel or thread
            msg = {"text": comment, "thread_ts": thread_ts}
            self._store(str(channel), msg, subtype="file_share", files=shared)
        return {"ok": True, "files": shared}


def _is_root(message: Body) -> bool:
    return message.get("thread_ts", message["ts"]) == message["ts"]
