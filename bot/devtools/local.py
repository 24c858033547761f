"""A whole Shipbot on loopback: the real ASGI app under uvicorn, a fake Slack Web API,
and a driver that sends it signed requests. Used by the console, tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path
from typing import Any

import uvicorn

from bot.clock import Clock, system_clock
from bot.config import ShipbotConfig
from bot.devtools.driver import SlackDriver
from bot.devtools.fake_slack import FakeSlack
from bot.runtime import Shipbot
from bot.settings import Settings
from bot.web.app import build_asgi_app

CHANNEL_KEYS = ("channel", "announce_channel", "default_channel")


def config_channels(config: ShipbotConfig) -> set[str]:
    """Every channel the config names (services, announcements, approvals, alerts)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in CHANNEL_KEYS and isinstance(value, str) and value:
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(config.model_dump())
    return found


class PromptServer(uvicorn.Server):
    """uvicorn's server, whose ``exit()`` wakes its main loop at once: uvicorn notices
    ``should_exit`` on its next 0.1 s tick, which every test that stops a bot waited out
    (0.05 s on average, some 500 times a suite run)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake = asyncio.Event()

    def exit(self) -> None:
        self.should_exit = True
        self._wake.set()

    async def main_loop(self) -> None:
        """uvicorn's loop (``on_tick`` every 0.1 s until it says to exit), woken by exit()."""
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)


def invite_bot(slack: FakeSlack, config: ShipbotConfig) -> None:
    """The config's channels exist and the bot is in them, as the README's setup asks;
    a channel the test set up already (private, without the bot...) is left as it is."""
    for channel in config_channels(config):
        if slack.channel_id(channel) not in slack.channels.by_id:
            slack.add_channel(channel)


class LocalBot:
    def __init__(
        self,
        config: ShipbotConfig,
        *,
        database_url: str,
        state_dir: Path,
        clock: Clock = system_clock,
        tick_seconds: float = 0.2,
        fake_slack: FakeSlack | None = None,
        webhook_token: str | None = None,
        signing: bool = True,
        app_token: str | None = None,
    ) -> None:
        """``signing=False`` leaves SLACK_SIGNING_SECRET unset and ``app_token`` sets
        SLACK_APP_TOKEN, as a Socket Mode install does (the WebSocket is not opened here:
        the driver still signs with a secret the bot then does not know)."""
        self.config, self.database_url, self.state_dir = config, database_url, state_dir
        self.clock, self.tick_seconds = clock, tick_seconds
        self.slack = fake_slack or FakeSlack()
        self.signing_secret = secrets.token_hex(16)
        # Alert webhooks' bearer token: random unless given; "" leaves webhooks disabled.
        self.webhook_token = secrets.token_hex(16) if webhook_token is None else webhook_token
        self.signing, self.app_token = signing, app_token
        self._own_slack = fake_slack is None
        self._server: PromptServer | None = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> LocalBot:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._own_slack:
            await self.slack.start()
        if isinstance(self.slack, FakeSlack):  # a stand-in for one in another process: no
            invite_bot(self.slack, self.config)
        settings = Settings(
            SLACK_BOT_TOKEN="xoxb-local-test",  # type: ignore[arg-type]
            SLACK_SIGNING_SECRET=self.signing_secret if self.signing else None,  # type: ignore[arg-type]
            SLACK_APP_TOKEN=self.app_token,  # type: ignore[arg-type]
            SLACK_API_URL=self.slack.base_url,
            DATABASE_URL=self.database_url,
            SHIPBOT_STATE_DIR=self.state_dir,
            SHIPBOT_TICK_SECONDS=self.tick_seconds,
            SHIPBOT_WEBHOOK_TOKEN=self.webhook_token or None,  # type: ignore[arg-type]
        )
        self.bot = Shipbot(settings, self.config, self.clock)
        config = uvicorn.Config(build_asgi_app(self.bot), host="127.0.0.1", port=0,
                                log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = PromptServer(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._task.done():  # uvicorn logged why, and exits: say so instead
                with contextlib.suppress(SystemExit):
                    await self._task
                raise RuntimeError("Shipbot failed to start (the error is logged above)")
            await asyncio.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.driver = SlackDriver(self.url, self.signing_secret, channels=self.slack.channels,
                                  triggers=self.slack.issue_trigger
                                  if isinstance(self.slack, FakeSlack) else None)

    async def next_tick(self, turns: int = 1, timeout: float = 15.0) -> None:
        """Wait until the runner has had ``turns`` whole ticks that started after this
        call, so whatever was due by now has been looked at: the signal a test waits for
        before asserting that nothing happened."""
        async with asyncio.timeout(timeout):
            for _ in range(turns):
                await self.bot.runner.turns.next()

    async def stop(self) -> None:
        """Graceful stop: the ASGI lifespan shuts the bot down."""
        if self._server is not None and self._task is not None:
            self._server.exit()
            await self._task
            if hasattr(self, "driver"):
                await self.driver.aclose()
        if self._own_slack:
            await self.slack.stop()
