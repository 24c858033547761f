"""`shipbot console`: try Shipbot at a prompt with no Slack workspace (errbot's text
backend, Hubot's shell adapter).

The real app runs under uvicorn on loopback (``LocalBot``); what you type is sent as a
signed slash command or button click, and what the bot posts to the fake Slack is
printed as text while it happens. With a script on stdin (or ``stdin=``) each line
waits until the bot is idle, so a scripted session gives a repeatable transcript.

This module is the session: the read-act loop and waiting for the bot. What a line
does is in ``console_commands``, what the bot's calls look like in ``console_screen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from sqlmodel import col, func, select

from bot.config import ShipbotConfig
from bot.devtools import render_text as rt
from bot.devtools.console_commands import Commands
from bot.devtools.console_input import read_line
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.engine.machine import State
from bot.logs import protect_logs
from bot.settings import Settings
from bot.store.models import Deployment, Outbox

WAITING_FOR_PEOPLE = frozenset({State.AWAITING_APPROVAL, State.PAUSED})  # not "busy"


class Console(Commands):
    """One console session against a running ``LocalBot``."""

    def __init__(self, local: LocalBot, config: ShipbotConfig, out: TextIO, style: rt.TextStyle,
                 *, scripted: bool, quiet_seconds: float, settle_timeout: float) -> None:
        super().__init__(local, config, out, style)
        self.scripted, self.quiet, self.settle_timeout = scripted, quiet_seconds, settle_timeout

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
                self.flush()  # a call that came in while the database was read
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

    async def run_watched(self, stream: TextIO | None) -> None:
        """``run`` with bot activity printed alongside, and the last of it printed at the end."""
        watcher = asyncio.create_task(self.watch())
        try:
            await self.run(stream)
        finally:
            watcher.cancel()
            # Its cancellation is collected (not ours, if we are being cancelled); a crash
            # of it is not hidden.
            [outcome] = await asyncio.gather(watcher, return_exceptions=True)
            if isinstance(outcome, Exception):
                raise outcome
            self.flush()


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
    # rate_limits=False: the console shows what the bot says as soon as it says it; pacing a
    # demo rollout at Slack's one post a second per channel would only make a human wait.
    fake = FakeSlack(rate_limits=False)
    local = LocalBot(config, database_url=database, state_dir=root / "state", fake_slack=fake)
    await fake.start()
    with _quiet_logs(stdout is None):
        try:
            try:
                await local.start()
                protect_logs(local.bot.redactor)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
                print(f"shipbot console: could not start the bot: {why}", file=sys.stderr)
                return 1
            console = Console(local, config, out, rt.TextStyle.for_stream(out), scripted=scripted,
                              quiet_seconds=quiet_seconds, settle_timeout=settle_timeout)
            console.emit(console.banner(config_path or settings.SHIPBOT_CONFIG, database))
            try:
                await console.run_watched(stdin if stdin is not None else
                                          (sys.stdin if scripted else None))
            finally:
                await local.stop()
            console.emit([f"Stopped. Deployments are kept in {database}."])
            return 0
        finally:
            await fake.stop()
