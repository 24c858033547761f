"""What commands ask of the engine: start, cancel, and read deployments.

The only entry point from the edge into state changes. Each method does its
database work in one transaction and returns the sentence to show the user.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.engine import facts, machine, policy
from bot.engine.inbox import Receipt
from bot.engine.machine import IN_FLIGHT, State
from bot.engine.outbox import note
from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.engine.requests import Cancel, Deploy, History, Status
from bot.mrkdwn import channel_mention, count, escape
from bot.store.db import Sessions
from bot.store.models import Deployment, SlotVersion
from bot.store.writers import WriterQueue
from integrations.base import Capability


class SlotRun(NamedTuple):
    """What `/deploy status` shows of a deployment: a few columns, not the whole row (with
    a thousand services, loading full rows was most of the command's time). A NamedTuple:
    a frozen dataclass took 1.2 ms to build 4,000 of them, a quarter of the command."""

    id: int
    version: str | None
    requester: str
    state: str
    created_at: datetime
    finished_at: datetime | None


SLOT_COLUMNS = tuple(col(c) for c in (
    Deployment.id, Deployment.service, Deployment.env, Deployment.version,
    Deployment.requester, Deployment.state, Deployment.created_at, Deployment.finished_at))


@dataclass
class SlotStatus:
    service: str
    env: str
    current: SlotRun | None = None
    in_progress: SlotRun | None = None


class DeployService:
    def __init__(
        self,
        sessions: Sessions,
        policy: Policy,
        providers: dict[str, ServiceProviders],
        clock: Clock,
        on_change: Callable[[], None] = lambda: None,
        writers: WriterQueue | None = None,
    ) -> None:
        self.sessions, self.policy, self.providers = sessions, policy, providers
        self.writers = writers or WriterQueue("")
        self.channels = {n: s.channel for n, s in policy.config.services.items()}
        self.clock, self.on_change = clock, on_change

    async def request(self, cmd: Deploy, actor: str, request_key: str,
                      receipt: Receipt | None = None) -> str:
        """Record the request (once per request_key) and let the runner take it from there.

        The checks read in one session; the insert waits for the writer queue in another,
        holding no connection meanwhile (waiters holding pooled connections would starve
        the queue's current writer). A request racing ours for the same slot loses on the unique
        active-slot index, so checking first and writing second stays safe. With a
        ``receipt`` (the inbox found the key new) the inbox row goes in the insert's
        transaction, and a deployment under this key cannot exist yet: no lookup by key.
        """
        now = self.clock()
        refused = self._strategy_refused(cmd)
        if refused:
            return refused
        async with self.sessions() as session:
            seen = None if receipt else await self._by_key(request_key, session)
            if seen is not None:
                return f"Already received: this request is deployment #{seen.id} ({seen.state})."
            decision = await self.policy.may_request(
                session, service=cmd.service, env=cmd.env, version=cmd.version, user=actor,
                hotfix=cmd.hotfix, now=now)
        if not decision.allowed:
            return decision.reason
        dep = Deployment(
            request_key=request_key, service=cmd.service, env=cmd.env, version=cmd.version,
            reason=cmd.reason, requester=actor, state=State.REQUESTED, hotfix=cmd.hotfix,
            strategy=self.policy.config.strategy_for(cmd.service, cmd.env, cmd.strategy).kind,
            approvals_required=self.policy.approvals_needed(cmd.env, cmd.hotfix),
            channel=self.channels[cmd.service], created_at=now, updated_at=now,
            many_commits_ok=cmd.allow_many_commits,
        )
        detail = ("HOTFIX: bypasses locks, freezes and promotion order. " if cmd.hotfix
                  else "") + ("Overrides max_commits. " if cmd.allow_many_commits else "") \
            + escape(cmd.reason or "")
        reply = await self._insert(dep, actor, now, detail,
                                   "hotfix_requested" if cmd.hotfix else "requested",
                                   lambda: self._accepted(dep, cmd), receipt)
        if reply is None:
            return await self._explain_conflict(request_key, cmd)
        self.on_change()
        return reply

    def _accepted(self, dep: Deployment, cmd: Deploy) -> str:
        """The ack of a recorded deployment (its id known once inserted)."""
        what = f"`{cmd.version}`" if cmd.version else "the latest build"
        kind = "HOTFIX deployment" if cmd.hotfix else "Deployment"
        needs = count(dep.approvals_required, "approval")
        approval_note = (f" It needs {needs} first; the request is in the thread."
                         if dep.approvals_required else "")
        return (
            f":rocket: {kind} #{dep.id} of {cmd.service} {what} to {cmd.env} is on its way."
            f"{approval_note} Progress is posted in {channel_mention(self.channels[cmd.service])}; "
            f"cancel with `/deploy cancel {cmd.service} {cmd.env}` before the deploy starts."
        )

    def _strategy_refused(self, cmd: Deploy) -> str | None:
        """``--strategy`` the service's deploy target cannot run, in words."""
        if not cmd.strategy:
            return None
        deploy = self.policy.config.services[cmd.service].deploy
        if cmd.strategy != "rolling" and self.providers[cmd.service].traffic is None:
            how = deploy.settings_for(Capability.TRAFFIC)
            return (f"{cmd.service}'s deploy target cannot shift traffic, so `--strategy "
                    f"{cmd.strategy}` is not possible; nothing was started. Deploy without "
                    "--strategy" + (f", or give the target {how} in shipbot.yml." if how
                                    else "."))
        chosen = self.policy.config.strategy_for(cmd.service, cmd.env, cmd.strategy)
        refused = deploy.strategy_refusal(chosen.kind, bool(chosen.analysis))
        return f"`--strategy {cmd.strategy}` is not possible for {cmd.service}: {refused}. " \
            "Nothing was started." if refused else None

    async def _insert(self, dep: Deployment, actor: str, now: datetime, detail: str,
                      action: str, reply: Callable[[], str],
                      receipt: Receipt | None) -> str | None:
        """The reply, or None when a concurrent request took the slot (or the request key)
        first. The receipt's row commits with the deployment: one write per ack."""
        async with self.writers(urgent=True), self.sessions() as session:
            try:
                await machine.create(session, dep, actor=actor, now=now, detail=detail,
                                     action=action)
                text = reply()
                if receipt is not None:
                    receipt.add(session, text)
                await session.commit()
            except IntegrityError:
                await session.rollback()
                return None
        return text

    async def _by_key(self, request_key: str, session: AsyncSession) -> Deployment | None:
        stmt = select(Deployment).where(Deployment.request_key == request_key)
        return (await session.exec(stmt)).first()

    async def _explain_conflict(self, request_key: str, cmd: Deploy) -> str:
        """A concurrent request won the race: say which one, as the policy would."""
        async with self.sessions() as session:
            seen = await self._by_key(request_key, session)
            if seen is not None:
                return (f"Already received: this request is deployment #{seen.id} "
                        f"({seen.state}).")
            busy = await policy.in_flight(session, cmd.service, cmd.env)
        if busy is not None:
            return policy.busy_reason(busy, self.clock())
        return "Another deployment just started; try again in a moment."

    async def cancel(self, cmd: Cancel, actor: str) -> str:
        return await machine.retry_on_conflict(
            lambda: self._cancel(cmd, actor),
            give_up="The deployment is in the middle of a step; nothing was cancelled. Try "
                    "again in a few seconds, or look at the thread.")

    async def _cancel(self, cmd: Cancel, actor: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            if cmd.deployment_id is not None:
                dep = await session.get(Deployment, cmd.deployment_id)
                if dep is None:
                    return f"Deployment #{cmd.deployment_id} does not exist; nothing was changed."
            else:
                assert cmd.service and cmd.env
                dep = await policy.in_flight(session, cmd.service, cmd.env)
                if dep is None:
                    return (f"Nothing to cancel: no deployment of {cmd.service} to {cmd.env} "
                            "is running.")
            decision = policy.may_cancel(dep)
            if decision.allowed and actor != dep.requester:
                decision = await self.policy.may(actor, "deploy", dep.env)
            if not decision.allowed:
                return decision.reason
            if machine.step_in_progress(dep, now):  # it may be starting the deploy right now
                raise machine.StepInProgress
            machine.transition(session, dep, State.CANCELLED, actor=actor, now=now,
                               detail=f"Cancelled by <@{actor}>.", action="cancel")
            note(session, dep, facts.Cancelled(by=actor, env=dep.env), now=now)
            if dep.ci_run_id:  # the runner stops the build, on the replica that started it
                dep.stop_run, dep.next_action_at = f"ci:{dep.ci_run_id}", now
            await session.commit()
        self.on_change()
        return f"Cancelled deployment #{dep.id} of {dep.service} to {dep.env}."

    async def status(
        self, cmd: Status, environments: Mapping[str, Sequence[str]]
    ) -> list[SlotStatus]:
        """Per service and environment: what runs there now, and what is in progress."""
        services = [cmd.service] if cmd.service else sorted(environments)
        # What runs now: each slot's row in SlotVersion (written as a deployment succeeds,
        # with the columns shown here), however long the history. All services: no IN list
        # of a thousand names; slots not configured are skipped below.
        current = sa.select(
            col(SlotVersion.deployment_id), col(SlotVersion.service), col(SlotVersion.env),
            col(SlotVersion.version), col(SlotVersion.requester),
            sa.literal(State.SUCCEEDED.value), col(SlotVersion.created_at),
            col(SlotVersion.finished_at))
        if cmd.service:
            current = current.where(col(SlotVersion.service) == cmd.service)
        # What is in progress: the few deployments in flight, from the index on state.
        in_flight = sa.select(*SLOT_COLUMNS).where(
            col(Deployment.state).in_([s.value for s in IN_FLIGHT]))
        async with self.sessions() as session:
            rows = [*(await session.exec(current)).all(),  # type: ignore[call-overload]
                    *(await session.exec(in_flight)).all()]  # type: ignore[call-overload]
        slots = {(s, e): SlotStatus(s, e) for s in services for e in environments[s]}
        for id_, service, env, version, requester, state, created, finished in rows:
            slot = slots.get((service, env))
            if slot is None:
                continue
            run = SlotRun(id_, version, requester, state, created, finished)
            if state == State.SUCCEEDED:
                slot.current = run
            else:
                slot.in_progress = run
        return list(slots.values())

    async def history(self, cmd: History, limit: int = 10) -> list[Deployment]:
        async with self.sessions() as session:
            stmt = select(Deployment).where(Deployment.service == cmd.service)
            if cmd.env:
                stmt = stmt.where(Deployment.env == cmd.env)
            stmt = stmt.order_by(col(Deployment.id).desc()).limit(limit)
            return list((await session.exec(stmt)).all())
