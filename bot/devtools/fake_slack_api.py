"""The fake Slack's message store and Web API methods (``FakeSlack`` mixes them in).

Each ``_api_<family>_<method>`` answers one method, as Slack documents it. Messages are
stored by channel ID; each method says whether it also takes a name
(``channels.resolve(..., names=...)``), and only chat.postMessage/postEphemeral do.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from bot.devtools.fake_slack_blocks import message_error, view_error
from bot.devtools.fake_slack_channels import ChannelDirectory
from bot.devtools.fake_slack_limits import error_body

BOT_USER, BOT_ID, TEAM_ID, TEAM_NAME = "UBOT", "BBOT", "T0001", "Shipbot test"
WORKSPACE_URL = "https://shipbot-test.slack.com/"
Body = dict[str, Any]
APP_TOKEN_METHODS = ("apps.connections.open",)  # called with the xapp- token, not the bot's
#: The bot scopes manifest.yml asks for (a test keeps the two the same).
BOT_SCOPES = ("commands", "chat:write", "chat:write.public", "users:read", "usergroups:read",
              "files:write")
TRIGGER_SECONDS = 3.0  # "trigger_ids expire three seconds after they're issued"


class SlackApi:
    """Workspace directory, message store and API methods; ``FakeSlack.__init__`` creates
    the state declared here."""

    channels: ChannelDirectory
    uploads: list[Body]
    ephemerals: list[Body]
    views: dict[str, Body]
    users: dict[str, Body]
    usergroups: dict[str, Body]
    strict_users: bool
    scopes: tuple[str, ...]
    clock: Callable[[], float]
    _triggers: dict[str, float | None]  # trigger_id -> issued at; None once exchanged
    _messages: dict[str, dict[str, Body]]  # channel ID -> ts -> message (roots and replies)
    _pending_files: dict[str, Body]
    _ids: itertools.count[int]
    _ts_micros: int
    _origin: str | None
    socket_mode_url: str | None

    # -- workspace directory (test helpers) --------------------------------------
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

    def channel_id(self, channel: str) -> str:
        """The ID of ``#name`` (or a user's DM) as this workspace gives it; IDs pass through."""
        return self.channels.lookup(channel)

    def channel_name(self, channel_id: str) -> str | None:
        """The name (no ``#``) of a channel the bot has used; None for DMs and unknown IDs."""
        return self.channels.name_of(channel_id)

    def add_channel(self, channel: str, *, private: bool = False, bot_member: bool = True,
                    members: list[str] | tuple[str, ...] = ()) -> str:
        """Create a channel (``#name`` or ID), the bot in it unless told, with ``members``."""
        return self.channels.add(channel, private=private, bot_member=bot_member,
                                 members=members).id

    def issue_trigger(self) -> str:
        """A trigger_id as an interaction payload carries it, issued now: views.open
        takes it once, within ``TRIGGER_SECONDS``."""
        trigger = f"{next(self._ids)}.{int(self.clock() * 1000)}.{next(self._ids):08x}"
        self._triggers[trigger] = self.clock()
        return trigger

    def _target(self, channel: object, *, names: bool) -> tuple[str | None, Body | None]:
        """The conversation a post goes to, or Slack's refusal: channel_not_found for an
        unknown channel (or, in strict mode, a DM with an unknown user); not_in_channel for a
        public channel the bot is not in when the app lacks chat:write.public."""
        cid = self.channels.resolve(channel, names=names)
        found = self.channels.by_id.get(cid or "")
        if cid is None or found is None:
            return None, error_body("channel_not_found")
        if found.user and self.strict_users and found.user not in self.users:
            return None, error_body("channel_not_found")
        if not found.user and not found.bot_member and "chat:write.public" not in self.scopes:
            return None, error_body("not_in_channel")
        return cid, None

    # -- message store ---------------------------------------------------------
    def _next_ts(self) -> str:
        self._ts_micros += 100
        return f"{self._ts_micros // 1_000_000}.{self._ts_micros % 1_000_000:06d}"

    def _replies(self, channel_id: str, ts: str) -> list[Body]:
        store = self._messages.get(channel_id, {}).values()
        return [dict(m) for m in store if m.get("thread_ts") == ts and m["ts"] != ts]

    def _store(self, channel_id: str, params: Body, **extra: Any) -> Body:
        """Append a message; a known ``thread_ts`` makes it a reply, unknown ones go top-level."""
        store = self._messages.setdefault(channel_id, {})
        msg: Body = {"type": "message", "user": BOT_USER, "bot_id": BOT_ID, **extra}
        msg["text"] = params.get("text") or ""
        msg.update({k: params[k] for k in ("blocks", "attachments", "metadata") if params.get(k)})
        msg["ts"] = self._next_ts()
        parent = store.get(str(params.get("thread_ts")))
        if parent is not None:
            root = store[str(parent.get("thread_ts", parent["ts"]))]
            root["thread_ts"], msg["thread_ts"] = root["ts"], root["ts"]
            root["reply_count"] = root.get("reply_count", 0) + 1
        store[msg["ts"]] = msg
        return msg

    def _find(self, channel_id: str, ts: object) -> Body | None:
        return self._messages.get(channel_id, {}).get(str(ts))

    # -- API methods (looked up by name: chat.postMessage -> _api_chat_postMessage) --
    def _api_auth_test(self, p: Body) -> Body:
        return {"ok": True, "url": WORKSPACE_URL, "team": TEAM_NAME,
                "user": "shipbot", "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": BOT_ID,
                "is_enterprise_install": False}  # fmt: skip

    def _api_apps_connections_open(self, p: Body) -> Body:
        """Socket Mode's first step: the WebSocket URL to connect to."""
        if self.socket_mode_url is None:
            return error_body("socket_mode_not_enabled")  # the fake's own word for it
        return {"ok": True, "url": self.socket_mode_url}

    def _api_chat_postMessage(self, p: Body) -> Body:
        """Takes an ID, a name or a user ID (the app's DM); always answers with the ID."""
        cid, refused = self._target(p.get("channel"), names=True)
        if cid is None:
            return refused or error_body("channel_not_found")
        if err := message_error(p):
            return err
        msg = self._store(cid, p)
        return {"ok": True, "channel": cid, "ts": msg["ts"], "message": dict(msg)}

    def _api_chat_postEphemeral(self, p: Body) -> Body:
        """Documented to take an ID or a name, like chat.postMessage; the user "should be in
        the channel" (user_not_in_channel), and must exist when strict_users is on."""
        cid, refused = self._target(p.get("channel"), names=True)
        if cid is None:
            return refused or error_body("channel_not_found")
        user = str(p.get("user") or "")
        known = user in self.users or not self.strict_users
        if not (known and self.channels.is_member(cid, user)):
            return error_body("user_not_in_channel")
        if err := message_error(p):
            return err
        self.ephemerals.append({**p, "channel": cid, "message_ts": self._next_ts()})
        return {"ok": True, "message_ts": self.ephemerals[-1]["message_ts"]}

    def _api_chat_update(self, p: Body) -> Body:
        if (cid := self.channels.resolve(p.get("channel"), names=False)) is None:
            return error_body("channel_not_found")
        if (msg := self._find(cid, p.get("ts"))) is None:
            return error_body("message_not_found")
        if err := message_error({**msg, **p}):
            return err
        for key in ("text", "blocks", "attachments", "metadata"):
            if key in p:  # Slack keeps omitted blocks/attachments; [] clears them
                msg[key] = p[key]
        msg["edited"] = {"user": BOT_USER, "ts": self._next_ts()}
        return {"ok": True, "channel": cid, "ts": msg["ts"], "text": msg["text"],
                "message": dict(msg)}  # fmt: skip

    def _api_chat_delete(self, p: Body) -> Body:
        if (cid := self.channels.resolve(p.get("channel"), names=False)) is None:
            return error_body("channel_not_found")
        if self._find(cid, p.get("ts")) is None:
            return error_body("message_not_found")
        store, ts = self._messages[cid], str(p["ts"])
        for doomed in [ts, *(r["ts"] for r in self._replies(cid, ts))]:
            del store[doomed]
        return {"ok": True, "channel": cid, "ts": ts}

    def _api_chat_getPermalink(self, p: Body) -> Body:
        if (cid := self.channels.resolve(p.get("channel"), names=False)) is None:
            return error_body("channel_not_found")
        if (msg := self._find(cid, p.get("message_ts"))) is None:
            return error_body("message_not_found")
        link = f"{WORKSPACE_URL}archives/{cid}/p{msg['ts'].replace('.', '')}"
        if msg.get("thread_ts", msg["ts"]) != msg["ts"]:
            link += f"?thread_ts={msg['thread_ts']}&cid={cid}"
        return {"ok": True, "channel": cid, "permalink": link}

    def _api_conversations_join(self, p: Body) -> Body:
        if (cid := self.channels.resolve(p.get("channel"), names=False)) is None:
            return error_body("channel_not_found")
        self.channels.by_id[cid].bot_member = True
        name = self.channels.name_of(cid) or cid.lower()
        return {"ok": True, "channel": {"id": cid, "name": name, "is_member": True}}

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
        """The trigger_id must be one an interaction carried (``issue_trigger``), used once
        (exchanged_trigger_id), within 3 s of the interaction (expired_trigger_id)."""
        trigger = str(p.get("trigger_id") or "")
        if not trigger:
            return error_body("invalid_arguments", ["missing required field: trigger_id"])
        if trigger not in self._triggers:
            return error_body("invalid_trigger_id")
        issued = self._triggers[trigger]
        if issued is None:
            return error_body("exchanged_trigger_id")
        if self.clock() - issued > TRIGGER_SECONDS:
            return error_body("expired_trigger_id")
        if err := view_error(p.get("view")):
            return err
        self._triggers[trigger] = None
        return self._save_view(f"V{next(self._ids):08d}", p["view"])

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
        """``channel_id`` (or the first of ``channels``) must be an ID; none keeps it private."""
        given = p.get("files")
        files: list[Any] = given if isinstance(given, list) else []
        pending = [self._pending_files.get(str(f.get("id"))) or {} for f in files]
        if not files or any(up.get("bytes") is None for up in pending):
            return error_body("file_not_found")  # unknown id, or the bytes were never POSTed
        raw = p.get("channel_id") or str(p.get("channels") or "").split(",")[0]
        channel, refused = self._target(raw, names=False) if raw else (None, None)
        if refused:
            return refused
        thread_ts, comment = p.get("thread_ts"), p.get("initial_comment")
        shared: list[Body] = []
        for f, up in zip(files, pending, strict=True):
            title = f.get("title") or up["filename"]
            shared.append({"id": up["file_id"], "name": up["filename"], "title": title,
                           "channels": [channel] if channel else []})  # fmt: skip
            self.uploads.append({**up, "title": title, "channel": channel,
                                 "thread_ts": thread_ts, "initial_comment": comment})  # fmt: skip
            del self._pending_files[up["file_id"]]
        if channel:  # Slack shares the files as a message in the channel or thread
            msg = {"text": comment, "thread_ts": thread_ts}
            self._store(channel, msg, subtype="file_share", files=shared)
        return {"ok": True, "files": shared}
