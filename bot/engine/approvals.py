"""Approve and reject: four eyes, distinct approvers, exactly one decision.

Concurrent clicks are serialised by the deployment row's version column: every
decision bumps the row, so of two racing transactions one commits and the other
retries and sees the first (a double click then finds its own approval).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Literal

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock
from bot.engine import facts, machine
from bot.engine.machine import State
from bot.engine.outbox import note, refresh_approval
from bot.engine.policy import Policy
from bot.mrkdwn import escape
from bot.store.db import Sessions
from bot.store.models import Approval, Deployment


class ApprovalService:
    def __init__(self, sessions: Sessions, policy: Policy, clock: Clock,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.sessions, self.policy, self.clock, self.on_change = sessions, policy, clock, on_change

    async def approve(self, dep_id: int, user: str) -> str:
        return await self._decide(dep_id, user, "approve", "")

    async def reject(self, dep_id: int, user: str, reason: str) -> str:
        return await self._decide(dep_id, user, "reject", reason.strip())

    async def may_reject(self, dep_id: int, user: str) -> str | None:
        """Checked before opening the reason modal: None if allowed, else why not."""
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            if dep is None:
                return f"Deployment #{dep_id} does not exist; nothing was changed."
            decision = await self.policy.may_approve(dep, user, verb="reject")
            return None if decision.allowed else decision.reason

    async def _decide(self, dep_id: int, user: str, decision: Literal["approve", "reject"],
                      reason: str) -> str:
        return await machine.retry_on_conflict(
            lambda: self._attempt(dep_id, user, decision, reason),
            give_up="Several people decided at once; look at the thread for the outcome.")

    async def _attempt(self, dep_id: int, user: str, decision: Literal["approve", "reject"],
                       reason: str) -> str:
        now = self.clock()
        async with self.sessions() as session:
            dep = await session.get(Deployment, dep_id)
            if dep is None:
                return f"Deployment #{dep_id} does not exist; nothing was changed."
            mine = (await session.exec(select(Approval).where(
                Approval.deployment_id == dep_id, Approval.user == user))).first()
            if mine is not None and State(dep.state) is State.AWAITING_APPROVAL:
                return f"You already approved deployment #{dep_id}; it needs someone else too."
            allowed = await self.policy.may_approve(dep, user)
            if not allowed.allowed:
                return allowed.reason
            session.add(Approval(deployment_id=dep_id, user=user, decision=decision,
                                 reason=reason, at=now))
            if decision == "reject":
                self._rejected(session, dep, user, reason, now)
                answer = f"You rejected deployment #{dep_id}."
            else:
                answer = await self._approved(session, dep, user, now)
            refresh_approval(session, dep, now=now)
            await session.commit()
        self.on_change()
        return answer

    async def _approved(self, session: AsyncSession, dep: Deployment, user: str,
                        now: datetime) -> str:
        dep.approvals_received += 1
        dep.updated_at = now
        machine.record(session, service=dep.service, env=dep.env,
                       actor=user, action="approve", now=now, deployment_id=dep.id,
                       detail=f"{dep.approvals_received} of {dep.approvals_required}")
        count = f"{dep.approvals_received} of {dep.approvals_required}"
        if dep.approvals_received < dep.approvals_required:
            session.add(dep)
            note(session, dep, facts.MoreApprovalsNeeded(
                by=user, received=dep.approvals_received, required=dep.approvals_required),
                now=now)
            return f"Approved ({count}); deployment #{dep.id} needs more approvals."
        machine.transition(session, dep, State.QUEUED, actor=user, now=now,
                           detail=f"Approved ({count})", action="approved")
        dep.next_action_at = now
        note(session, dep, facts.Approved(
            by=user, received=dep.approvals_received, required=dep.approvals_required,
            version=dep.version, env=dep.env), now=now)
        return f"Approved: deployment #{dep.id} of {dep.service} to {dep.env} proceeds."

    def _rejected(self, session: AsyncSession, dep: Deployment, user: str, reason: str,
                  now: datetime) -> None:
        why = escape(reason) if reason else "no reason given"
        machine.transition(session, dep, State.REJECTED, actor=user, now=now,
                           detail=f"Rejected by <@{user}>: {why}", action="reject")
        note(session, dep, facts.Rejected(by=user, reason=reason, requester=dep.requester),
             now=now)
