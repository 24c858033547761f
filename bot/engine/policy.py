"""Who may do what, and when: every allow/deny decision lives here.

Roles per environment (users, user groups, everyone), locks, freeze windows,
promotion order, approvals and the hotfix path. Each check returns a ``Decision``
whose reason is the sentence the user sees: what blocked them and what to do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import as_utc, human_duration
from bot.config import EnvironmentConfig, ShipbotConfig
from bot.config_policy import EVERYONE
from bot.engine import windows
from bot.engine.directory import Directory, UnknownGroup
from bot.engine.lifecycle import LIFECYCLE, Blocked, Event, Role, refusal
from bot.engine.machine import IN_FLIGHT, STATE_TEXT, State
from bot.mrkdwn import escape
from bot.store.models import Deployment, Freeze, Lock


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


ALLOW = Decision(True)
INACTIVE = Decision(False, "Your Slack user is not an active member of this workspace, "
                           "so Shipbot ignores the request. Nothing was changed.")


def _mentions(principals: list[str]) -> str:
    shown = ["everyone" if p == EVERYONE else (p if p.startswith("@") else f"<@{p}>")
             for p in principals]
    return ", ".join(shown) or "nobody (configure it in shipbot.yml)"


class Policy:
    def __init__(self, config: ShipbotConfig, directory: Directory) -> None:
        self.config, self.directory = config, directory

    def env(self, name: str) -> EnvironmentConfig:
        return self.config.environments[name]

    def principals(self, env: str, role: Role) -> list[str]:
        """The configured role, or its documented default."""
        cfg = self.env(env)
        explicit = getattr(cfg.roles, role)
        if explicit is not None:
            return list(explicit)
        approvers = list(cfg.approval_rules.approvers) if cfg.approval_rules else None
        if role == "approve":
            return approvers or []
        if role == "lock":
            return approvers or [EVERYONE]
        if role == "hotfix":
            return approvers or self.principals(env, "deploy")
        if role == "rollback":
            return self.principals(env, "deploy")
        return [EVERYONE]

    async def holds(self, user: str, principals: list[str]) -> bool:
        if not await self.directory.is_active_user(user):
            return False
        for p in principals:
            if p in (EVERYONE, user):
                return True
            if p.startswith("@"):
                try:
                    if user in await self.directory.members(p):
                        return True
                except UnknownGroup:
                    continue
        return False

    async def may(self, user: str, role: Role, env: str) -> Decision:
        if not await self.directory.is_active_user(user):
            return INACTIVE
        allowed = self.principals(env, role)
        if await self.holds(user, allowed):
            return ALLOW
        return Decision(False, f":no_entry: You lack the *{role}* role for {env}. "
                               f"Who has it: {_mentions(allowed)}. Nothing was changed.")

    async def may_decide_alert(self, user: str, env: str | None) -> Decision:
        """Acknowledge and "Not the deploy" change what an incident offers (dismissing
        removes the one-click rollback), so they need the rollback role of the alert's
        environment. An alert mapped to no environment offers no rollback: any member."""
        if env is None or env not in self.config.environments:
            return ALLOW if await self.directory.is_active_user(user) else INACTIVE
        return await self.may(user, "rollback", env)

    async def may_request(
        self, session: AsyncSession, *, service: str, env: str, version: str | None,
        user: str, hotfix: bool, now: datetime,
    ) -> Decision:
        """May ``user`` start this deployment now? Hotfixes skip locks, freezes and order."""
        decision = await self.may(user, "hotfix" if hotfix else "deploy", env)
        if not decision.allowed:
            return decision
        busy = await in_flight(session, service, env)
        if busy is not None:
            return Decision(False, busy_reason(busy, now))
        if hotfix:
            return ALLOW
        return await self._gates(session, service, env, version, now)

    async def gates(self, session: AsyncSession, dep: Deployment, now: datetime) -> Decision:
        """Locks, freezes and promotion order, re-checked right before work starts."""
        return await self._gates(session, dep.service, dep.env, dep.version, now)

    async def _gates(self, session: AsyncSession, service: str, env: str,
                     version: str | None, now: datetime) -> Decision:
        checks: tuple[Callable[[], Awaitable[Decision]], ...] = (
            lambda: self._locked(session, service, env, now),
            lambda: self._frozen(session, env, now),
            lambda: self._promotion(session, service, env, version))
        for check in checks:
            decision = await check()
            if not decision.allowed:
                return decision
        return ALLOW

    async def _locked(self, session: AsyncSession, service: str, env: str,
                      now: datetime) -> Decision:
        lock = (await session.exec(active_locks(env, now).where(
            or_(col(Lock.service).is_(None), Lock.service == service)))).first()
        if lock is None:
            return ALLOW
        scope = f"{lock.service} on {env}" if lock.service else env
        until = f" until {as_utc(lock.expires_at):%H:%M} UTC" if lock.expires_at else ""
        return Decision(False, (
            f":lock: {scope} is locked by <@{lock.created_by}> since "
            f"{as_utc(lock.created_at):%Y-%m-%d %H:%M} UTC{until}: {escape(lock.reason)}. "
            "Nothing was "
            f"started. Ask them, or someone with the lock role, to `/deploy unlock {env}"
            f"{' ' + lock.service if lock.service else ''}`; in an emergency use --hotfix."))

    async def _frozen(self, session: AsyncSession, env: str, now: datetime) -> Decision:
        oneoff = (await session.exec(active_freezes(now))).all()
        found = windows.active(self.config.freeze_windows, oneoff, now, env)
        if not found:
            return ALLOW
        window = max(found, key=lambda w: w.ends_at)
        return Decision(False, (
            f":snowflake: {env} is frozen — {window.describe()}. Nothing was started. "
            f"Deploy after {window.ends_at:%Y-%m-%d %H:%M} UTC, or use --hotfix for an emergency."))

    async def _promotion(self, session: AsyncSession, service: str, env: str,
                         version: str | None) -> Decision:
        required = self.env(env).requires
        if required is None or version is None:
            return ALLOW
        stmt = select(Deployment.env).where(
            Deployment.service == service, Deployment.version == version,
            Deployment.state == State.SUCCEEDED)
        seen = set((await session.exec(stmt)).all())
        if required in seen:
            return ALLOW
        where = f"it succeeded on {', '.join(sorted(seen))} only" if seen else \
            "it has not been deployed anywhere yet"
        return Decision(False, (
            f":construction: {service} `{version}` must succeed on {required} before {env}, "
            f"but {where}. Run `/deploy {service} {required} {version}` first."))

    def approvers_text(self, env: str) -> str:
        return _mentions(self.principals(env, "approve"))

    def approvals_channel(self, env: str) -> str | None:
        rules = self.env(env).approval_rules
        return rules.channel if rules else None

    def approvals_needed(self, env: str, hotfix: bool) -> int:
        rules = self.env(env).approval_rules
        if rules is None:
            return 0
        return rules.hotfix_approvals if hotfix else rules.required_approvals

    async def may_approve(self, dep: Deployment, user: str, verb: str = "approve") -> Decision:
        event = Event.REJECT if verb == "reject" else Event.APPROVE
        if refusal(dep, event) is not None:
            return Decision(False, f"Deployment #{dep.id} is not waiting for approval any more "
                                   f"({STATE_TEXT[State(dep.state)].lower()}). Nothing changed.")
        rules = self.env(dep.env).approval_rules
        if user == dep.requester and not (rules and rules.allow_self_approval):
            return Decision(False, (
                f"You requested deployment #{dep.id}, so you cannot {verb} it (four eyes; "
                f"withdraw it with `/deploy cancel {dep.service} {dep.env}`). "
                f"Approvers: {_mentions(self.principals(dep.env, 'approve'))}."))
        return await self.may(user, LIFECYCLE[event].role, dep.env)


def active_locks(env: str, now: datetime):  # type: ignore[no-untyped-def]
    return select(Lock).where(
        Lock.env == env, col(Lock.released_at).is_(None),
        or_(col(Lock.expires_at).is_(None), col(Lock.expires_at) > now))


def active_freezes(now: datetime):  # type: ignore[no-untyped-def]
    return select(Freeze).where(col(Freeze.lifted_at).is_(None), col(Freeze.ends_at) > now)


async def in_flight(session: AsyncSession, service: str, env: str) -> Deployment | None:
    stmt = select(Deployment).where(
        Deployment.service == service, Deployment.env == env,
        col(Deployment.state).in_([s.value for s in IN_FLIGHT]),
    )
    return (await session.exec(stmt)).first()


def busy_reason(dep: Deployment, now: datetime) -> str:
    since = as_utc(dep.created_at)
    ago = human_duration((now - since).total_seconds())
    label = STATE_TEXT[State(dep.state)].lower()
    what = f"`{dep.version}`" if dep.version else "the latest build"
    hint = (f"cancel it with `/deploy cancel {dep.service} {dep.env}`"
            if refusal(dep, Event.CANCEL) is None else "it can no longer be cancelled")
    return (
        f":no_entry: {dep.service} {dep.env} is busy: <@{dep.requester}> is deploying {what} "
        f"(#{dep.id}, {label}) since {since:%H:%M} UTC ({ago} ago). Nothing was started. "
        f"Wait for it to finish, or {hint}."
    )


def may_cancel(dep: Deployment) -> Decision:
    state, blocked = State(dep.state), refusal(dep, Event.CANCEL)
    if blocked is None:
        return ALLOW
    if blocked is Blocked.ENDED:
        return Decision(False, f"Deployment #{dep.id} already ended: {STATE_TEXT[state]}.")
    return Decision(
        False,
        f"Deployment #{dep.id} is {STATE_TEXT[state].lower()}: {dep.env} is already being "
        "changed, so it cannot be cancelled safely. Wait for the result.",
    )
