"""Command handlers: each takes a typed command and *returns* the reply to show.

No Slack I/O here (errbot style): the edge sends what these return, which keeps
them easy to test and identical between Slack, the console and the API.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.clock import Clock
from bot.engine.service import DeployService
from bot.slack.blocks import history_text, status_text
from commands.model import Cancel, Command, Deploy, Help, History, Reply, Status, UsageError
from commands.parser import USAGE, Catalog, parse, parse_deployment_ref


@dataclass(frozen=True)
class Invocation:
    """Who asked, and the identity of the request (for Slack-retry dedupe)."""

    user: str
    request_key: str


class CommandHandlers:
    def __init__(self, service: DeployService, catalog: Catalog, clock: Clock) -> None:
        self.service, self.catalog, self.clock = service, catalog, clock

    async def on_text(self, text: str, who: Invocation) -> Reply:
        """`/deploy <text>`: parse, then run; input errors become the reply."""
        try:
            command = parse(text, self.catalog)
        except UsageError as exc:
            return Reply(text=f":warning: {exc}")
        return await self.run(command, who)

    async def on_cancel_click(self, value: str, user: str) -> Reply:
        try:
            command = Cancel(deployment_id=parse_deployment_ref(value))
        except UsageError as exc:
            return Reply(text=f":warning: {exc}")
        return Reply(text=await self.service.cancel(command, user))

    async def run(self, command: Command, who: Invocation) -> Reply:
        match command:
            case Deploy():
                return Reply(text=await self.service.request(command, who.user, who.request_key))
            case Cancel():
                return Reply(text=await self.service.cancel(command, who.user))
            case Status():
                slots = await self.service.status(command, self.catalog.services)
                return Reply(text=status_text(slots, self.clock()))
            case History():
                deps = await self.service.history(command)
                return Reply(text=history_text(command.service, command.env, deps, self.clock()))
            case Help():
                return Reply(text=USAGE)
