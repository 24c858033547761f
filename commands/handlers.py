"""Command handlers: each takes a typed command and *returns* the reply to show.

No Slack I/O here (errbot style): the edge sends what these return, which keeps
them easy to test and identical between Slack, the console and the API.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.clock import Clock
from bot.engine.alerts import AlertService
from bot.engine.approvals import ApprovalService
from bot.engine.controls import ControlService
from bot.engine.deploys import DeployService
from bot.engine.guards import GuardService
from bot.engine.inbox import Inbox, Request, Tell
from bot.engine.requests import (
    AlertDecision,
    Approve,
    Audit,
    Cancel,
    Command,
    Control,
    Deploy,
    FreezeEnv,
    Help,
    History,
    LockEnv,
    Rollback,
    Status,
    Unfreeze,
    UnlockEnv,
    UsageError,
)
from bot.engine.rollback import RollbackService
from commands import actions
from commands.catalog import Catalog
from commands.grammar import ROLLBACK_USAGE, help_text
from commands.parser import parse
from commands.views import AuditView, HistoryView, Reply, StatusView

# Commands that change something: recorded in the inbox under their trigger id, so a
# replayed request acts once and gets the first reply. Reading ones just run again.
STATE_CHANGING = (Deploy, Rollback, Cancel, Control, LockEnv, UnlockEnv, FreezeEnv, Unfreeze)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Invocation:
    """Who asked, where, and the identity of the request (for replay and retry dedupe)."""

    user: str
    request_key: str
    channel: str | None = None


class CommandHandlers:
    def __init__(self, service: DeployService, approvals: ApprovalService, guards: GuardService,
                 controls: ControlService, catalog: Catalog, clock: Clock, *,
                 rollbacks: RollbackService, alerts: AlertService, inbox: Inbox) -> None:
        self.service, self.approvals, self.guards = service, approvals, guards
        self.controls, self.rollbacks, self.alerts = controls, rollbacks, alerts
        self.catalog, self.clock, self.inbox = catalog, clock, inbox

    async def on_text(self, text: str, who: Invocation) -> Reply:
        """`/deploy <text>`: parse, then run (changes once per trigger id, through the
        inbox); input errors become the reply."""
        try:
            command = parse(text, self.catalog, self.clock())
        except UsageError as exc:
            return Reply(text=f":warning: {exc}")
        if not isinstance(command, STATE_CHANGING):
            return await self.run(command, who)
        request = Request(key=who.request_key, kind="slash", user=who.user,
                          payload={"text": text}, channel=who.channel)
        if isinstance(command, Deploy):  # deduped by its request key: one write, not three
            deploy = command
            return Reply(text=await self.inbox.once_keyed(
                request, lambda receipt: self.service.request(
                    deploy, who.user, who.request_key, receipt), self.process))
        return Reply(text=await self.inbox.once(request, self.process))

    async def record(self, request: Request) -> Request | None:
        """A click, before its ack: durable from here on. None if recorded before."""
        return await self.inbox.record(request)

    async def complete(self, request: Request, tell: Tell) -> None:
        """A recorded click, after its ack: act on it and tell the clicker the outcome."""
        await self.inbox.complete(request, self.process, tell)

    async def drain(self, tell: Tell) -> int:
        """Requests another process recorded and did not finish (it died): finish them."""
        return await self.inbox.drain(self.process, tell)

    async def process(self, request: Request) -> str:
        """One inbox row, as the edge recorded it; the reply to show its sender."""
        data, user = request.payload, request.user
        if request.kind == "slash":
            return await self._replayed_text(request)
        if request.kind in ("button", "alert"):
            return (await self.on_click(request.kind, data["action"], data["value"], user)).text
        if request.kind == "reject":
            return (await self.on_reject(data["value"], user, data["reason"])).text
        raise ValueError(f"unknown inbox request kind {request.kind!r}")

    async def _replayed_text(self, request: Request) -> str:
        """Parsed as of its arrival, so `--for 2h` means the same after a restart."""
        try:
            command = parse(request.payload["text"], self.catalog,
                            request.received_at or self.clock())
        except UsageError as exc:
            return f":warning: {exc}"
        who = Invocation(user=request.user, request_key=request.key, channel=request.channel)
        return (await self.run(command, who)).text

    async def on_click(self, family: str, name: str, value: str, user: str) -> Reply:
        """A button (as the inbox recorded it): its typed request, acted on like text."""
        try:
            command = actions.intent(family, name, value)
        except actions.UnknownAction:
            log.error("a click on an unknown button %s/%s by %s", family, name, user)
            return Reply(text=f":warning: {actions.STALE}")
        except UsageError as exc:
            return Reply(text=f":warning: {exc}")
        return Reply(text=await self.act(command, user))

    async def act(self, command: Command, user: str) -> str:
        """What a click asks for; every request a button can make has a case here."""
        match command:
            case Approve(deployment_id=dep_id):
                return await self.approvals.approve(dep_id, user)
            case Control():
                return await self.controls.control(command, user)
            case Cancel():
                return await self.service.cancel(command, user)
            case AlertDecision(thread_id=thread, decision="rollback"):
                return await self.rollbacks.from_alert(thread, user)
            case AlertDecision(thread_id=thread, decision="redeploy"):
                return await self.rollbacks.redeploy(thread, user)
            case AlertDecision(thread_id=thread, decision="dismiss"):
                return await self.alerts.dismiss(thread, user)
            case AlertDecision(thread_id=thread, decision="acknowledge"):
                return await self.alerts.acknowledge(thread, user)
        raise TypeError(f"no click handler for {command!r}")

    async def on_rollback_text(self, text: str, who: Invocation) -> Reply:
        """`/rollback <service> <env> [version]`: the same as `/deploy rollback ...`."""
        if text.strip() in ("", "help"):
            return Reply(text=f"Usage: `{ROLLBACK_USAGE}` — without a version, the last one "
                              "that succeeded before the current one. Example: "
                              "`/rollback api production`.")
        return await self.on_text(f"rollback {text}", who)

    async def can_reject(self, value: str, user: str) -> tuple[int | None, str | None]:
        """Before the Reject modal opens: the deployment id, or why the user may not."""
        try:
            dep_id = actions.parse_ref(value)
        except UsageError as exc:
            return None, f":warning: {exc}"
        return dep_id, await self.approvals.may_reject(dep_id, user)

    async def on_reject(self, value: str, user: str, reason: str) -> Reply:
        try:
            dep_id = actions.parse_ref(value)
        except UsageError as exc:
            return Reply(text=f":warning: {exc}")
        return Reply(text=await self.approvals.reject(dep_id, user, reason))

    async def run(self, command: Command, who: Invocation) -> Reply:
        match command:
            case Deploy():
                return Reply(text=await self.service.request(command, who.user, who.request_key))
            case Cancel() | Control() | Approve() | AlertDecision():  # typed, or clicked
                return Reply(text=await self.act(command, who.user))
            case Status():
                slots = await self.service.status(command, self.catalog.services)
                locks, frozen = await self.guards.current()
                return Reply(view=StatusView(slots, locks, frozen, self.clock()))
            case History():
                deps = await self.service.history(command)
                return Reply(view=HistoryView(command.service, command.env, deps, self.clock()))
            case Audit():
                events = await self.guards.audit(command)
                return Reply(view=AuditView(command.service, command.env, events))
            case LockEnv():
                return Reply(text=await self.guards.lock(command, who.user))
            case UnlockEnv():
                return Reply(text=await self.guards.unlock(command, who.user))
            case FreezeEnv():
                return Reply(text=await self.guards.freeze(command, who.user))
            case Unfreeze():
                return Reply(text=await self.guards.unfreeze(command, who.user))
            case Rollback():
                return Reply(text=await self.rollbacks.from_command(command, who.user,
                                                                    who.request_key))
            case Help(topic=topic):
                return Reply(text=help_text(topic))
