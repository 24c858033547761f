"""What a line typed at `shipbot console` does: a slash command, a button press by its
label, a modal submitted or closed, `as U0BOB`, help.

Each request goes to the real bot as Slack would send it (signed, through the
driver); the screen shows what comes back. The REPL loop itself is in ``console``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

import httpx

from bot.config import ShipbotConfig
from bot.devtools import render_text as rt
from bot.devtools.console_screen import Screen
from bot.devtools.local import LocalBot
from bot.slack.app import SLASH_COMMANDS

COMMAND_CHANNEL = "#deploys"  # where the driver's slash commands are typed
QUIT = frozenset({"quit", "exit"})


class Commands(Screen):
    """Turns typed lines into requests to a running ``LocalBot``, as the current user."""

    def __init__(self, local: LocalBot, config: ShipbotConfig, out: TextIO,
                 style: rt.TextStyle) -> None:
        super().__init__(local.slack, out, style)
        self.local, self.config = local, config
        self.sent = 0  # requests sent to the bot: scripted mode waits after each
        self.sent_at = float("-inf")  # when the last one went (on the fake's clock)
        self.may_print = asyncio.Event()
        self.may_print.set()

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
