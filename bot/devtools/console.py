"""`shipbot console`: try Shipbot at a prompt with no Slack workspace (errbot's text
backend, Hubot's shell adapter).

The real app runs under uvicorn on loopback (``LocalBot``); what you type is sent as a
signed slash command or button click, and what the bot posts to the fake Slack is
printed as text while it happens. With a script on stdin (or ``stdin=``) each line
waits until the bot is idle, so a scripted session gives a repeatable transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import httpx
from sqlmodel import col, func, select

from bot.config import ShipbotConfig
from bot.devtools import render_text as rt
from bot.devtools.fake_slack import FakeSlack, RecordedCall
from bot.devtools.local import LocalBot
from bot.engine.machine import State
from bot.settings import Settings
from bot.slack.app import SLASH_COMMANDS
from bot.store.models import Deployment, Outbox

DEFAULT_USER = "U0ALICE"
COMMAND_CHANNEL = "#deploys"  # where the driver's slash commands are typed
QUIT = frozenset({"quit", "exit"})
Key = tuple[str, str]  # (channel, ts) of a message
WAITING_FOR_PEOPLE = frozenset({State.AWAITING_APPROVAL, State.PAUSED})  # not "busy"


@dataclass(frozen=True)
class Shown:
    """A button as last drawn, with the message it sits on (to address the click)."""

    button: rt.Button
    channel: str
    ts: str
    title: str


async def read_line(stream: TextIO | None, prompt: str) -> str | None:
    """The next line (None at end of input), read on a daemon thread: the event loop keeps
    printing bot activity meanwhile, and Ctrl-C never waits for a blocked ``input()``.
    ``stream=None`` means the terminal, through ``input()`` for line editing."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[str | None] = loop.create_future()
    if stream is None:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - imported, input() gets line editing and history

    def resolve(line: str | None, error: Exception | None) -> None:
        if not future.done():  # else nobody waits any more (Ctrl-C)
            future.set_exception(error) if error else future.set_result(line)

    def work() -> None:
        line, error = None, None
        try:
            raw = input(prompt) + "\n" if stream is None else stream.readline()
            line = raw.rstrip("\r\n") if raw else None
        except EOFError:
            pass
        except Exception as exc:  # surfaces in the event loop, not on this thread
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is gone: we are exiting
            loop.call_soon_threadsafe(resolve, line, error)

    threading.Thread(target=work, name="console-input", daemon=True).start()
    return await future


class Console:
    """One console session against a running ``LocalBot``."""

    def __init__(self, local: LocalBot, config: ShipbotConfig, out: TextIO, style: rt.TextStyle,
                 *, scripted: bool, quiet_seconds: float, settle_timeout: float) -> None:
        self.local, self.config, self.out, self.style = local, config, out, style
        self.scripted, self.quiet, self.settle_timeout = scripted, quiet_seconds, settle_timeout
        self.user = DEFAULT_USER
        self.cursor = 0  # FakeSlack.calls printed so far
        self.lines: dict[Key, list[str]] = {}  # each message as last printed
        self.buttons: dict[Key, list[Shown]] = {}  # buttons each message shows now
        self.last_thread: Key | None = None  # the message whose thread a "└" would hang under
        self.modal: tuple[str, dict[str, Any]] | None = None  # (for whom, view) when one is open
        self.prompt_shown = False
        self.sent = 0  # requests sent to the bot: scripted mode waits after each
        self.sent_at = float("-inf")  # when the last one went (on the fake's clock)
        self.may_print = asyncio.Event()
        self.may_print.set()

    @property
    def fake(self) -> FakeSlack:
        return self.local.slack

    @property
    def prompt(self) -> str:
        return f"{'you' if self.user == DEFAULT_USER else self.user}@shipbot> "

    # -- output ----------------------------------------------------------------
    def emit(self, lines: Sequence[str], thread: Key | None = None) -> None:
        """Print lines; if the prompt is showing (interactive), print above it and redraw it."""
        if not lines:
            return
        self.last_thread = thread
        if self.prompt_shown:
            self.out.write("\r\x1b[K" if self.style.color else "\n")
        self.out.write("".join(_encodable(line, self.out) + "\n" for line in lines))
        if self.prompt_shown:
            self.out.write(self.prompt + _typed_so_far())
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
        if call.method in ("views.open", "views.push", "views.update"):
            return self.show_modal(resp.get("view") or {}), None
        if call.method == "files.completeUploadExternal":  # a chart, shared as a message
            raw = str(params.get("channel_id") or str(params.get("channels", "")).split(",")[0])
            files = [f"[file: {f.get('title') or f.get('name')}]" for f in resp.get("files", [])]
            lines = [*rt.mrkdwn(str(params.get("initial_comment") or ""), self.style), *files]
            if not params.get("thread_ts"):
                return rt.format_root(self.where(raw), lines), (raw, "")
            root = (raw, str(params["thread_ts"]))
            return [*self.thread_head(root), *rt.format_reply(lines)], root
        if call.method not in ("chat.postMessage", "chat.update"):
            return [], self.last_thread
        message, raw = resp.get("message") or params, str(resp.get("channel"))
        channel, ts = self.where(raw), str(resp["ts"])
        lines, before = rt.render_message(message, self.style), self.lines.get((raw, ts))
        self.lines[(raw, ts)] = lines
        self.buttons[(raw, ts)] = [Shown(b, raw, ts, rt.title_of(lines))
                                   for b in rt.buttons(message.get("blocks"))]
        root = (raw, str(message.get("thread_ts", ts)))
        reply = root[1] != ts
        head = self.thread_head(root) if reply else []
        if call.method == "chat.update":
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

    async def submit(self, answers: str) -> None:
        """Submit the open modal as the user it was opened for; errors keep it open."""
        assert self.modal is not None
        user, view = self.modal
        fields = rt.inputs(view)
        parts = [a.strip() for a in answers.split("|")] if len(fields) > 1 else [answers.strip()]
        values = {block: {action: {"type": kind, "value": value}}
                  for (block, action, kind), value in zip(fields, parts, strict=False)}
        with self.sending():
            resp = await self.local.driver.submit_view(
                str(view.get("callback_id", "")), str(view.get("private_metadata", "")),
                values, user=user)
            is_json = "json" in resp.headers.get("content-type", "") and resp.content
            body = resp.json() if is_json else {}
            if resp.status_code != 200:
                self.emit([f"(modal) Submitting failed: HTTP {resp.status_code}"])
            elif body.get("response_action") == "errors":
                errors = [f"{k}: {v}" for k, v in (body.get("errors") or {}).items()]
                self.emit(rt.format_aside("(modal says)", errors))
            else:
                self.modal = None
            self.flush()

    # -- input -----------------------------------------------------------------
    async def handle(self, line: str) -> bool:
        """Act on one input line; False means the session should end."""
        text = line.strip()
        head, _, rest = text.partition(" ")
        if not text:
            return True
        if head.lower() in QUIT:
            return False
        if head.lower() in ("help", "?"):
            self.emit(self.help())
        elif self.modal and head.lower() in ("submit", "close"):
            if head.lower() == "submit":
                await self.submit(rest)
            else:
                self.modal = None
                self.emit(["(modal closed)"])
        elif head.lower() == "as":
            self.switch_user(rest.split())
        elif head.lower() == "click" or (not text.startswith("/") and self.visible(text)):
            await self.click(rest.strip() if head.lower() == "click" else text)
        elif text.startswith("/"):
            await self.command(head, rest.strip())
        else:
            await self.command("/deploy", text)
        return True

    def switch_user(self, args: Sequence[str]) -> None:
        user = args[0].upper() if len(args) == 1 else ""
        if not (user[:1] in ("U", "W") and user[1:].isalnum() and len(user) >= 3):
            self.emit([f"Usage: as <Slack user id>, e.g. `as U0BOB` (you are {self.user})."])
            return
        self.user = user
        self.emit([f"You are now {user}: commands and clicks come from {user}."])

    async def command(self, command: str, text: str) -> None:
        """A slash command, answered like Slack would: the ack privately, then the posts."""
        if command not in SLASH_COMMANDS:
            self.emit([f"{command} is not a valid command. Shipbot has: "
                       f"{', '.join(SLASH_COMMANDS)} (or type help)."])
            return
        with self.sending():
            resp = await self.local.driver.command(text, command=command, user=self.user)
            self.emit(self.ack(command, resp))
            self.flush()

    def ack(self, command: str, resp: httpx.Response) -> list[str]:
        if resp.status_code != 200:
            return [f"(only you) {command} failed: HTTP {resp.status_code} {resp.text[:200]}"]
        if not resp.content:
            return []
        is_json = "json" in resp.headers.get("content-type", "")
        body = resp.json() if is_json else {"text": resp.text}
        lines = rt.mrkdwn(str(body.get("text") or ""), self.style)
        if body.get("response_type") == "in_channel":
            return rt.format_root(COMMAND_CHANNEL, lines)
        return rt.format_aside("(only you)", lines)

    @property
    def labels(self) -> list[str]:
        return sorted({s.button.label for shown in self.buttons.values() for s in shown})

    def visible(self, label: str) -> list[Shown]:
        """Buttons on screen with this label (case-insensitive), newest message first."""
        found = [s for shown in self.buttons.values() for s in shown
                 if s.button.label.casefold() == label.casefold()]
        return sorted(found, key=lambda s: float(s.ts), reverse=True)

    async def click(self, label: str) -> None:
        """Press a button as the current user, the way Slack would post the click."""
        if not (matches := self.visible(label)):
            shown_now = f"Buttons on screen: {', '.join(self.labels)}." if self.labels else ""
            self.emit([f"No button labelled {label!r}. {shown_now or 'None shown.'}"])
            return
        shown = matches[0]
        several = f" ({len(matches)} buttons say {shown.button.label!r}: pressing the newest)"
        with self.sending():
            self.emit([f"→ {self.user} clicks [ {shown.button.label} ] on “{shown.title}” in "
                       f"{self.where(shown.channel)}{several if len(matches) > 1 else ''}"])
            resp = await self.local.driver.click(
                shown.button.action_id, shown.button.value, user=self.user,
                channel=shown.channel, message_ts=shown.ts, block_id=shown.button.block_id)
            if resp.status_code != 200:
                self.emit([f"(only you) The click failed: HTTP {resp.status_code}"])
            self.flush()

    @contextlib.contextmanager
    def sending(self) -> Iterator[None]:
        """A request to the bot: count it (scripts wait for its effects) and hold background
        output back until our own reply is printed, so that comes first."""
        self.sent, self.sent_at = self.sent + 1, self.fake.clock()
        self.may_print.clear()
        try:
            yield
        finally:
            self.may_print.set()

    def example(self) -> tuple[str, str]:
        """A service and environment from the config, for examples that work as typed."""
        svc = next((s for s in self.config.services if len(self.config.environments_of(s)) > 1),
                   next(iter(self.config.services)))
        envs = self.config.environments_of(svc)
        return svc, envs[1] if len(envs) > 1 else envs[0]

    def help(self) -> list[str]:
        svc, env = self.example()
        rows = [
            (f'/deploy {svc} {env} v1.2.3 --reason "why"', "deploy a version"),
            (f"{svc} {env}", "a line without / means /deploy (no version: latest build)"),
            ("/deploy status", "what runs where, and what is in progress"),
            (f"/deploy history {svc} {env}", "the last deployments"),
            (f"/deploy cancel {svc} {env}", "stop a deployment before the deploy starts"),
            ("/deploy help", "Shipbot's own usage text"),
            ("cancel   or   click Cancel", "press a button shown on a message"),
            ("as U0BOB", f"act as another Slack user (now {self.user})"),
            ("quit   or   Ctrl-D", "stop the bot and leave"),
        ]
        services = "; ".join(f"{s} ({', '.join(self.config.environments_of(s))})"
                             for s in self.config.services)
        return ["What you can type (Slack is simulated here):",
                *(f"  {cmd:<44}{what}" for cmd, what in rows),
                f"Services: {services}",
                f"Buttons on screen: {', '.join(self.labels) or 'none'}"]

    def banner(self, config_path: Path, database: str) -> list[str]:
        svc, env = self.example()
        return [
            "Shipbot console: the real bot over signed HTTP; Slack is simulated on this machine.",
            f"  config    {config_path} (services: {', '.join(self.config.services)})",
            f"  database  {database}",
            f"  you are   {self.user} in {COMMAND_CHANNEL}; `as U0BOB` to be someone else",
            f'Try: /deploy {svc} {env} v1.2.3 --reason "first try"   (help, quit)',
        ]

    # -- the session -----------------------------------------------------------
    async def watch(self) -> None:
        """Print bot activity as it happens, also while the prompt waits for input."""
        while True:
            with contextlib.suppress(TimeoutError):
                await self.fake.wait_for(lambda _: True, count=self.cursor + 1, timeout=1.0)
            await self.may_print.wait()
            self.flush()

    async def busy(self) -> list[str]:
        """Deployments the bot is working on and Slack messages not yet delivered, in words
        (one awaiting approval waits for a person, so a script may go on)."""
        async with self.local.bot.sessions() as session:
            running = (await session.exec(
                select(Deployment).where(col(Deployment.finished_at).is_(None),
                                         col(Deployment.state).not_in(WAITING_FOR_PEOPLE)))).all()
            pending = (await session.exec(select(func.count()).select_from(Outbox).where(
                col(Outbox.delivered_at).is_(None)))).one()
        found = [f"deployment #{d.id} ({d.service} {d.env}) is {d.state}" for d in running]
        return [*found, f"{pending} message(s) for Slack pending"] if pending else found

    async def settle(self) -> None:
        """Scripted mode: wait until Slack has been quiet a moment and nothing is in flight."""
        deadline = asyncio.get_running_loop().time() + self.settle_timeout
        while True:
            await asyncio.sleep(0.1)
            self.flush()
            # A click is acked before its handler runs: count quiet from the click too.
            last = max(self.fake.calls[-1].at if self.fake.calls else self.sent_at, self.sent_at)
            quiet = self.fake.clock() - last >= self.quiet
            late = asyncio.get_running_loop().time() >= deadline
            work = await self.busy() if quiet or late else ["Slack calls"]
            if quiet and not work:
                return
            if late:
                self.emit([f"(still going after {self.settle_timeout:g}s: {'; '.join(work)}; "
                           "reading the next line)"])
                return

    async def run(self, stream: TextIO | None) -> None:
        """Read, act, repeat until quit or end of input."""
        while True:
            if self.scripted:
                line = await read_line(stream, "")
                self.emit([self.prompt + (line if line is not None else "(end of input)")])
            else:
                self.prompt_shown = True
                try:
                    line = await read_line(stream, self.prompt)
                finally:
                    self.prompt_shown = False
            if line is None:
                self.out.write("" if self.scripted else "\n")
                return
            sent = self.sent
            if not await self.handle(line):
                return
            if self.scripted and self.sent != sent:
                await self.settle()


def _typed_so_far() -> str:
    """What is typed at the prompt so far (readline), to redraw it below bot output."""
    try:
        import readline
    except ImportError:  # no readline on this platform: the typing is still there, unseen
        return ""
    return readline.get_line_buffer()


def _encodable(text: str, out: TextIO) -> str:
    """Never crash on a terminal that cannot show '→' or emoji: replace them instead."""
    encoding = getattr(out, "encoding", None)
    return text.encode(encoding, "replace").decode(encoding) if encoding else text


def _sqlite_dir(url: str) -> Path | None:
    """The directory a ``sqlite:///path`` database lives in, to create it first."""
    scheme, sep, path = url.partition(":///")
    if not sep or not scheme.startswith("sqlite") or not path or path.startswith(":memory:"):
        return None
    return Path(path.split("?")[0]).parent


@contextlib.contextmanager
def _quiet_logs(enabled: bool) -> Iterator[None]:
    """INFO logs and apscheduler's 'skipped' warnings would scramble the prompt."""
    loggers = {logging.getLogger(): logging.WARNING,
               logging.getLogger("apscheduler"): logging.ERROR}
    saved = {lg: lg.level for lg in loggers}
    if enabled:
        for lg, level in loggers.items():
            lg.setLevel(max(level, lg.level))
    try:
        yield
    finally:
        for lg, level in saved.items():
            lg.setLevel(level)


async def run_console(
    settings: Settings, config: ShipbotConfig, *, database: str | None = None,
    config_path: Path | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None,
    quiet_seconds: float = 1.0, settle_timeout: float = 60.0,
) -> int:
    """Run the REPL until quit/EOF; 0 on a normal exit. Scripted when ``stdin`` is given or
    standard input is not a terminal: then each line first waits for the bot to be idle."""
    out = stdout or sys.stdout
    scripted = stdin is not None or not (sys.stdin and sys.stdin.isatty())
    root = Path(settings.SHIPBOT_STATE_DIR)
    database = database or f"sqlite:///{root / 'console.db'}"
    for folder in (_sqlite_dir(database), root / "state"):
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
    fake = FakeSlack(rate_limits=False)
    local = LocalBot(config, database_url=database, state_dir=root / "state", fake_slack=fake)
    await fake.start()
    with _quiet_logs(stdout is None):
        try:
            try:
                await local.start()
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                print(f"shipbot console: could not start the bot: {why}", file=sys.stderr)
                return 1
            console = Console(local, config, out, rt.TextStyle.for_stream(out), scripted=scripted,
                              quiet_seconds=quiet_seconds, settle_timeout=settle_timeout)
            console.emit(console.banner(config_path or settings.SHIPBOT_CONFIG, database))
            watcher = asyncio.create_task(console.watch())
            try:
                source = stdin if stdin is not None else (sys.stdin if scripted else None)
                await console.run(source)
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
                console.flush()
                await local.stop()
            console.emit([f"Stopped. Deployments are kept in {database}."])
            return 0
        finally:
            await fake.stop()
