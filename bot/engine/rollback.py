"""Rollbacks: from an alert's button, from `/rollback`, or automatically; and the
Redeploy that undoes an automatic one.

A rollback is an ordinary ``Deployment`` (kind "rollback") created through the state
machine: it skips CI (the version was built before), locks, freezes and promotion
order (it restores what ran there), and approval unless ``approval.rollbacks`` says
otherwise. Exactly once: clicks on one alert share the request key
``rollback:alert:<thread>``, and the active-slot constraint refuses a second one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.engine import alert_outbox, facts, machine, policy, suspects
from bot.engine.machine import STATE_TEXT, State
from bot.engine.policy import Policy
from bot.engine.requests import Rollback
from bot.engine.urgency import Urgency
from bot.mrkdwn import channel_mention, escape, permalink
from bot.store.db import Sessions
from bot.store.models import AlertThread, Deployment, Outbox
from bot.store.writers import WriterQueue

RETRIES = 5


def _ref(dep: Deployment) -> str:
    what = {"rollback": "Rollback", "redeploy": "Redeploy"}.get(dep.kind, "Deployment")
    return (f"{what} #{dep.id} to `{dep.version}` by <@{dep.requester}> "
            f"({STATE_TEXT[State(dep.state)].lower()})")


class RollbackService:
    def __init__(self, sessions: Sessions, policy: Policy, clock: Clock,
                 on_change: Callable[[], None] = lambda: None,
                 writers: WriterQueue | None = None, urgency: Urgency | None = None) -> None:
        self.sessions, self.policy, self.clock, self.on_change = sessions, policy, clock, on_change
        self.writers, self.urgency = writers or WriterQueue(""), urgency or Urgency()
        self.channels = {n: s.channel for n, s in policy.config.services.items()}

    async def _retrying(self, attempt: Callable[[], Awaitable[str]]) -> str:
        """Racing clicks and retries: one transaction wins, the others look again."""
        async with self.urgency.urgent():
            answer = await machine.retry_on_conflict(
                attempt, writers=self.writers, tries=RETRIES,
                give_up="Several people acted at once; look at the alert thread for the "
                        "outcome.")
        self.on_change()
        return answer

    async def from_alert(self, thread_id: int, user: str, *, auto: bool = False) -> str:
        """The alert thread's "Roll back to vX" button (or auto-rollback, as ``shipbot``)."""
        return await self._retrying(lambda: self._from_alert(thread_id, user, auto))

    async def _from_alert(self, thread_id: int, user: str, auto: bool) -> str:
        now = self.clock()
        async with self.sessions() as session:
            thread = await session.get(AlertThread, thread_id)
            if thread is None:
                return "That alert is not known any more; nothing was started."
            if thread.rollback_deployment_id is not None:
                done = await session.get(Deployment, thread.rollback_deployment_id)
                assert done is not None
                return f"Already handled: {_ref(done)}. Nothing new was started."
            if not thread.suspect_deployment_id or not thread.rollback_to or not thread.service \
                    or not thread.env:
                return "This alert offers no rollback (no suspect deployment with an earlier " \
                       "version). Use `/rollback <service> <env> <version>` if you need one."
            if thread.dismissed_by and not auto:
                return (f"<@{thread.dismissed_by}> marked this alert as not caused by the "
                        f"deploy, so it offers no rollback any more. If you disagree: "
                        f"`/rollback {thread.service} {thread.env}`.")
            if not auto:
                decision = await self.policy.may(user, "rollback", thread.env)
                if not decision.allowed:
                    return decision.reason
            suspect, busy = await suspects.slot(session, thread.service, thread.env)
            if suspect is None or suspect.id != thread.suspect_deployment_id:
                now_runs = f"`{suspect.version}` (#{suspect.id})" if suspect else "nothing known"
                return (f"{thread.service} {thread.env} changed since this alert: it now runs "
                        f"{now_runs}. Nothing was started; use "
                        f"`/rollback {thread.service} {thread.env}` if you still need one.")
            dep = await self._create(
                session, suspect, thread.rollback_to, busy, actor=user, now=now, thread=thread,
                request_key=f"rollback:alert:{thread.id}",
                reason=f"Alert {escape(thread.name)}" + (" (automatic)" if auto else ""))
            if isinstance(dep, str):
                return dep
            thread.rollback_deployment_id, thread.auto_rollback = dep.id, auto
            thread.updated_at = now
            session.add(thread)
            await self._announce(session, thread, suspect, dep, auto, now)
            await session.commit()
        return (f":rewind: Rollback #{dep.id} of {dep.service} {dep.env} to `{dep.version}` "
                f"started; progress in this thread and in {channel_mention(dep.channel)}.")

    async def _announce(self, session: AsyncSession, thread: AlertThread, suspect: Deployment,
                        dep: Deployment, auto: bool, now: datetime) -> None:
        assert thread.id is not None and suspect.id is not None
        assert dep.id is not None
        told: facts.Fact
        if auto:
            after = (as_utc(thread.started_at) - as_utc(suspect.finished_at or now))
            told = facts.AutoRollbackStarted(
                alert=thread.name, after_seconds=after.total_seconds(),
                suspect_version=suspect.version, suspect_id=suspect.id, service=dep.service,
                version=dep.version, rollback_id=dep.id)
        else:
            told = facts.RollbackStarted(by=dep.requester, rollback_id=dep.id, env=dep.env,
                                         suspect_version=suspect.version,
                                         suspect_id=suspect.id, version=dep.version)
        link = permalink(thread.root_channel, thread.root_ts)
        await alert_outbox.insert_all(session, [
            alert_outbox.reply_row(thread.id, told, now=now),
            Outbox(alert_thread_id=thread.id, kind="alert_suspect", created_at=now),
            alert_outbox.note_row(suspect.id, facts.RollingBackForAlert(
                version=dep.version, rollback_id=dep.id, alert=thread.name, link=link),
                now=now),
            alert_outbox.note_row(dep.id, facts.StartedFromAlert(alert=thread.name, link=link),
                                  now=now)])

    async def from_command(self, cmd: Rollback, user: str, request_key: str) -> str:
        """`/rollback <service> <env> [version]`: default, the version before the current."""
        return await self._retrying(lambda: self._from_command(cmd, user, request_key))

    async def _from_command(self, cmd: Rollback, user: str, request_key: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            seen = (await session.exec(select(Deployment).where(
                Deployment.request_key == request_key))).first()
            if seen is not None:
                return f"Already received: this request is {_ref(seen)}."
            decision = await self.policy.may(user, "rollback", cmd.env)
            if not decision.allowed:
                return decision.reason
            running, busy = await suspects.slot(session, cmd.service, cmd.env)
            if running is None:
                return (f"Nothing to roll back: Shipbot has no successful deployment of "
                        f"{cmd.service} on {cmd.env}.")
            version = cmd.version or await suspects.version_before(session, running)
            refusal = await self._check_version(session, cmd, running, version)
            if refusal or version is None:
                return refusal or "No version to roll back to."
            thread = await self._open_thread_for(session, running)
            dep = await self._create(session, running, version, busy, actor=user, now=now,
                                     thread=thread, request_key=request_key,
                                     reason=cmd.reason)
            if isinstance(dep, str):
                return dep
            if thread is not None:
                thread.rollback_deployment_id, thread.updated_at = dep.id, now
                session.add(thread)
                await self._announce(session, thread, running, dep, False, now)
            await session.commit()
        return (f":rewind: Rollback #{dep.id} of {cmd.service} {cmd.env} from "
                f"`{running.version}` to `{version}` is on its way. Progress is posted in "
                f"{channel_mention(dep.channel)}.")

    async def _check_version(self, session: AsyncSession, cmd: Rollback, running: Deployment,
                             version: str | None) -> str | None:
        where = f"{cmd.service} {cmd.env}"
        if version is None:
            return (f"No earlier version of {cmd.service} succeeded on {cmd.env} before "
                    f"`{running.version}`. Name one: `/rollback {where} v1.2.3`.")
        if version == running.version:
            return f"{where} already runs `{version}`; nothing to roll back."
        if cmd.version and not await suspects.ever_succeeded(
                session, cmd.service, cmd.env, version):
            return (f"`{version}` never succeeded on {cmd.env}, so going there is not a "
                    f"rollback. Deploy it with `/deploy {where} {version}`.")
        return None

    async def _open_thread_for(self, session: AsyncSession,
                               running: Deployment) -> AlertThread | None:
        """A firing alert that blames ``running``: the keyboard rollback reports there too."""
        stmt = select(AlertThread).where(
            AlertThread.suspect_deployment_id == running.id, AlertThread.status == "firing",
            col(AlertThread.rollback_deployment_id).is_(None),
        ).order_by(col(AlertThread.id).desc()).limit(1)
        return (await session.exec(stmt)).first()

    async def _create(self, session: AsyncSession, undone: Deployment, version: str,
                      busy: Deployment | None, *, actor: str, now: datetime,
                      thread: AlertThread | None, request_key: str,
                      reason: str | None) -> Deployment | str:
        """The rollback deployment, queued at once unless the environment wants approval."""
        if busy is not None:
            return policy.busy_reason(busy, now) + " Then roll back again if still needed."
        rules = self.policy.env(undone.env).approval_rules
        approvals = rules.required_approvals if rules and rules.rollbacks else 0
        dep = Deployment(
            request_key=request_key, service=undone.service, env=undone.env, version=version,
            previous_version=undone.version, reason=reason, requester=actor,
            state=State.REQUESTED, kind="rollback", rollback_of=undone.id,
            alert_thread_id=thread.id if thread else None,
            alert_started_at=as_utc(thread.started_at) if thread else None,
            approvals_required=approvals, channel=self.channels[undone.service],
            created_at=now, updated_at=now, strategy="rolling",
        )
        await machine.create(session, dep, actor=actor, now=now, action="rollback_requested",
                             detail=f"rollback of #{undone.id} ({undone.version}) to {version}")
        if not approvals:
            machine.transition(session, dep, State.QUEUED, actor="shipbot", now=now,
                               detail="Rollback: no build needed.")
            dep.next_action_at = now
        return dep

    async def redeploy(self, thread_id: int, user: str) -> str:
        """Undo an automatic rollback: deploy the suspect's version again, as a deploy."""
        return await self._retrying(lambda: self._redeploy(thread_id, user))

    async def _redeploy(self, thread_id: int, user: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            thread = await session.get(AlertThread, thread_id)
            if thread is None or thread.suspect_deployment_id is None \
                    or thread.rollback_deployment_id is None:
                return "There is no rollback to undo for this alert; nothing was started."
            if thread.redeploy_deployment_id is not None:
                done = await session.get(Deployment, thread.redeploy_deployment_id)
                assert done is not None
                return f"Already handled: {_ref(done)}. Nothing new was started."
            suspect = await session.get(Deployment, thread.suspect_deployment_id)
            assert suspect is not None and suspect.version is not None
            decision = await self.policy.may_request(
                session, service=suspect.service, env=suspect.env, version=suspect.version,
                user=user, hotfix=False, now=now)
            if not decision.allowed:
                return decision.reason
            dep = Deployment(
                request_key=f"redeploy:alert:{thread_id}", service=suspect.service,
                env=suspect.env, version=suspect.version, requester=user, kind="redeploy",
                reason=f"Undo the automatic rollback for {escape(thread.name)}",
                state=State.REQUESTED, rollback_of=suspect.id, alert_thread_id=thread_id,
                approvals_required=self.policy.approvals_needed(suspect.env, False),
                channel=self.channels[suspect.service], created_at=now, updated_at=now)
            await machine.create(session, dep, actor=user, now=now, action="redeploy_requested",
                                 detail=f"redeploy of {suspect.version} after an auto-rollback")
            thread.redeploy_deployment_id, thread.updated_at = dep.id, now
            session.add(thread)
            assert dep.id is not None
            alert_outbox.reply(session, thread_id, facts.Redeploying(
                by=user, version=suspect.version, id=dep.id), now=now)
            alert_outbox.refresh_suspect(session, thread_id, now=now)
            await session.commit()
        return f"Redeploy #{dep.id} of {dep.service} `{dep.version}` to {dep.env} is on its way."
