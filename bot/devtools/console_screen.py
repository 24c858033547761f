"""What the bot did in Slack, as console lines: each recorded Web API call becomes what
a Slack user would notice, and the buttons and modal it left on screen are remembered.

Kept apart from the REPL so the transcript's rules (threads, edits, DMs, ephemerals)
are one read, and testable on recorded calls without a running bot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from bot.devtools import render_text as rt
from bot.devtools.console_input import encodable, typed_so_far
from bot.devtools.fake_slack import FakeSlack, RecordedCall
from bot.devtools.fake_slack_api import Body

DEFAULT_USER = "U0ALICE"
Key = tuple[str, str]  # (channel, ts) of a message
MESSAGE_METHODS = ("chat.postMessage", "chat.update")
MODAL_METHODS = ("views.open", "views.push", "views.update")


@dataclass(frozen=True)
class Shown:
    """A button as last drawn, with the message it sits on (to address the click)."""

    button: rt.Button
    channel: str
    ts: str
    title: str


class Screen:
    """The console's view of the fake Slack: prints its calls, remembers what is shown."""

    def __init__(self, fake: FakeSlack, out: TextIO, style: rt.TextStyle) -> None:
        self.fake, self.out, self.style = fake, out, style
        self.user = DEFAULT_USER
        self.cursor = 0  # FakeSlack.calls printed so far
        self.lines: dict[Key, list[str]] = {}  # each message as last printed
        self.buttons: dict[Key, list[Shown]] = {}  # buttons each message shows now
        self.last_thread: Key | None = None  # the message whose thread a "└" would hang under
        self.modal: tuple[str, dict[str, Any]] | None = None  # (for whom, view) when one is open
        self.prompt_shown = False

    @property
    def prompt(self) -> str:
        return f"{'you' if self.user == DEFAULT_USER else self.user}@shipbot> "

    def emit(self, lines: Sequence[str], thread: Key | None = None) -> None:
        """Print lines; if the prompt is showing (interactive), print above it and redraw it."""
        if not lines:
            return
        self.last_thread = thread
        if self.prompt_shown:
            self.out.write("\r\x1b[K" if self.style.color else "\n")
        self.out.write("".join(encodable(line, self.out) + "\n" for line in lines))
        if self.prompt_shown:
            self.out.write(self.prompt + typed_so_far())
        self.out.flush()

    def flush(self) -> None:
        """Print every Slack call the bot made since the last flush, in order."""
        while self.cursor < len(self.fake.calls):
            call = self.fake.calls[self.cursor]
            self.cursor += 1
            if not call.failed:  # a failed call is retried by the bot; the retry gets shown
                self.emit(*self.describe(call))

    def describe(self, call: RecordedCall) -> tuple[list[str], Key | None]:
        """One Web API call as what a Slack user would notice (maybe nothing)."""
        params, resp = call.params, call.response
        if call.method == "chat.postEphemeral":
            who = "you" if params.get("user") == self.user else f"@{params.get('user')}"
            return rt.format_aside(f"(only {who})", rt.render_message(params, self.style)), None
        if call.method in MODAL_METHODS:
            return self.show_modal(resp.get("view") or {}), None
        if call.method == "files.completeUploadExternal":  # a chart, shared as a message
            return self.describe_upload(params, resp)
        if call.method not in MESSAGE_METHODS:
            return [], self.last_thread
        return self.describe_message(call.method, params, resp)

    def describe_upload(self, params: Body, resp: Body) -> tuple[list[str], Key | None]:
        """A shared file as its comment and file names, posted or in a thread."""
        raw = str(params.get("channel_id") or str(params.get("channels", "")).split(",")[0])
        files = [f"[file: {f.get('title') or f.get('name')}]" for f in resp.get("files", [])]
        lines = [*rt.mrkdwn(str(params.get("initial_comment") or ""), self.style), *files]
        if not params.get("thread_ts"):
            return rt.format_root(self.where(raw), lines), (raw, "")
        root = (raw, str(params["thread_ts"]))
        return [*self.thread_head(root), *rt.format_reply(lines)], root

    def describe_message(
        self, method: str, params: Body, resp: Body
    ) -> tuple[list[str], Key | None]:
        """A post or an edit; remembers its lines (to show edits) and its buttons."""
        message, raw = resp.get("message") or params, str(resp.get("channel"))
        channel, ts = self.where(raw), str(resp["ts"])
        lines, before = rt.render_message(message, self.style), self.lines.get((raw, ts))
        self.lines[(raw, ts)] = lines
        self.buttons[(raw, ts)] = [Shown(b, raw, ts, rt.title_of(lines))
                                   for b in rt.buttons(message.get("blocks"))]
        root = (raw, str(message.get("thread_ts", ts)))
        reply = root[1] != ts
        head = self.thread_head(root) if reply else []
        if method == "chat.update":
            return head + rt.format_update(channel, before or [], lines, reply=reply), root
        return head + (rt.format_reply(lines) if reply else rt.format_root(channel, lines)), root

    def thread_head(self, root: Key) -> list[str]:
        """Say whose thread a reply is in, unless it hangs right under that message."""
        if self.last_thread == root:
            return []
        title = rt.title_of(self.lines.get(root, ["a message"]))
        return [f"{self.where(root[0])}  (thread of {title})"]

    def where(self, channel: str) -> str:
        """``#deploys-api`` for the channel ID Slack answers with; a DM says with whom."""
        user = self.fake.channels.user_of(channel)
        if user or channel[:1] in ("U", "W"):
            user = user or channel
            return "DM to you" if user == self.user else f"DM to @{user}"
        return rt.channel_label(channel, self.fake.channel_name(channel))

    def show_modal(self, view: dict[str, Any]) -> list[str]:
        """A modal opened for the person who clicked; it stays open until submit or close."""
        self.modal = (self.user, view)
        many = len(rt.inputs(view)) > 1
        how = "submit <answer> | <answer>…" if many else "submit <answer>"
        press = (view.get("submit") or {}).get("text", "Submit")
        hint = f"(type `{how}` to press {press}, or `close`)"
        return rt.format_aside("(modal for you)", [*rt.render_view(view, self.style), hint])

    @property
    def labels(self) -> list[str]:
        return sorted({s.button.label for shown in self.buttons.values() for s in shown})

    def visible(self, label: str) -> list[Shown]:
        """Buttons on screen with this label (case-insensitive), newest message first."""
        found = [s for shown in self.buttons.values() for s in shown
                 if s.button.label.casefold() == label.casefold()]
        return sorted(found, key=lambda s: float(s.ts), reverse=True)
