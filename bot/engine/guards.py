"""Locks, one-off freezes, the audit trail, and announcing freeze windows.

Every change here is audited; announcements go through the outbox, keyed so each
window's start and end is announced exactly once, even across restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import Clock, as_utc
from bot.engine import facts, machine, windows
from bot.engine.outbox import announce
from bot.engine.policy import Policy, active_freezes, active_locks
from bot.engine.requests import Audit, FreezeEnv, LockEnv, Unfreeze, UnlockEnv
from bot.mrkdwn import count, escape
from bot.store.db import Sessions
from bot.store.models import Announcement, AuditEvent, Freeze, Lock

ANNOUNCE_LOOKBACK = timedelta(hours=1)


async def _scope_locks(session: AsyncSession, env: str, service: str | None,
                       now: datetime) -> Sequence[Lock]:
    """Active locks on exactly this scope: the environment, or one service in it."""
    scoped = Lock.service == service if service else col(Lock.service).is_(None)
    return list((await session.exec(active_locks(env, now).where(scoped))).all())


class GuardService:
    def __init__(self, sessions: Sessions, policy: Policy, clock: Clock) -> None:
        self.sessions, self.policy, self.clock = sessions, policy, clock
        self.channel = policy.config.announce_channel

    async def lock(self, cmd: LockEnv, user: str) -> str:
        allowed = await self.policy.may(user, "lock", cmd.env)
        if not allowed.allowed:
            return allowed.reason
        now = self.clock()
        scope = f"{cmd.service} on {cmd.env}" if cmd.service else cmd.env
        async with self.sessions() as session:
            same = next(iter(await _scope_locks(session, cmd.env, cmd.service, now)), None)
            if same is not None:
                return (f"{scope} is already locked by <@{same.created_by}>: "
                        f"{escape(same.reason)}. "
                        "Nothing changed.")
            expires = now + cmd.duration if cmd.duration else None
            session.add(Lock(env=cmd.env, service=cmd.service, reason=cmd.reason,
                             created_by=user, created_at=now, expires_at=expires))
            until = f" until {expires:%Y-%m-%d %H:%M} UTC" if expires else ""
            machine.record(session, service=cmd.service or "*", env=cmd.env, actor=user,
                           action="lock", now=now, detail=f"{escape(cmd.reason)}{until}")
            announce(session, self.channel, facts.Locked(
                by=user, env=cmd.env, service=cmd.service, until=expires, reason=cmd.reason),
                now=now)
            await session.commit()
        return f":lock: Locked {scope}{until}. Unlock with `/deploy unlock {cmd.env}" \
               f"{' ' + cmd.service if cmd.service else ''}`."

    async def unlock(self, cmd: UnlockEnv, user: str) -> str:
        allowed = await self.policy.may(user, "lock", cmd.env)
        if not allowed.allowed:
            return allowed.reason
        now = self.clock()
        scope = f"{cmd.service} on {cmd.env}" if cmd.service else cmd.env
        async with self.sessions() as session:
            locks = await _scope_locks(session, cmd.env, cmd.service, now)
            if not locks:
                return f"{scope} is not locked; nothing changed."
            for lock in locks:
                lock.released_at, lock.released_by = now, user
                session.add(lock)
            machine.record(session, service=cmd.service or "*", env=cmd.env, actor=user,
                           action="unlock", now=now)
            announce(session, self.channel,
                     facts.Unlocked(by=user, env=cmd.env, service=cmd.service), now=now)
            await session.commit()
        return f":unlock: Unlocked {scope}."

    async def freeze(self, cmd: FreezeEnv, user: str) -> str:
        allowed = await self.policy.may(user, "lock", cmd.env)
        if not allowed.allowed:
            return allowed.reason
        now = self.clock()
        async with self.sessions() as session:
            row = Freeze(env=cmd.env, reason=cmd.reason, created_by=user, starts_at=now,
                         ends_at=cmd.until)
            session.add(row)
            await session.flush()
            machine.record(session, service="*", env=cmd.env, actor=user, action="freeze",
                           now=now,
                           detail=f"until {cmd.until:%Y-%m-%d %H:%M %Z}: {escape(cmd.reason)}")
            await session.commit()
        await self.announce_windows()
        return (f":snowflake: {cmd.env} is frozen until {as_utc(cmd.until):%Y-%m-%d %H:%M} UTC "
                f"(freeze #{row.id}). Lift it early with `/deploy unfreeze {cmd.env}`.")

    async def unfreeze(self, cmd: Unfreeze, user: str) -> str:
        allowed = await self.policy.may(user, "lock", cmd.env)
        if not allowed.allowed:
            return allowed.reason
        now = self.clock()
        async with self.sessions() as session:
            rows = (await session.exec(active_freezes(now).where(Freeze.env == cmd.env))).all()
            if not rows:
                return (f"{cmd.env} has no one-off freeze to lift. Recurring windows come from "
                        "shipbot.yml; use --hotfix for an emergency inside one.")
            for row in rows:
                row.lifted_at, row.lifted_by = now, user
                session.add(row)
            machine.record(session, service="*", env=cmd.env, actor=user, action="unfreeze",
                           now=now)
            await session.commit()
        await self.announce_windows()
        return f"Lifted {count(len(rows), 'freeze')} on {cmd.env}."

    async def audit(self, cmd: Audit, limit: int = 20) -> Sequence[AuditEvent]:
        """The service's newest events and the environment-wide ones (``*``: locks and
        freezes of every service), merged. One query each: each reads its newest rows
        backwards from the (service, id) index; with OR, PostgreSQL walks the whole trail
        back from its newest row until enough match, all of it for a quiet service."""
        events: list[AuditEvent] = []
        async with self.sessions() as session:
            for service in dict.fromkeys((cmd.service, "*")):
                stmt = select(AuditEvent).where(AuditEvent.service == service)
                if cmd.env:
                    stmt = stmt.where(AuditEvent.env == cmd.env)
                stmt = stmt.order_by(col(AuditEvent.id).desc()).limit(limit)
                events += (await session.exec(stmt)).all()
        return sorted(events, key=lambda e: e.id or 0, reverse=True)[:limit]

    async def current(self) -> tuple[Sequence[Lock], list[windows.Window]]:
        """Active locks and freeze windows, for `/deploy status`."""
        now = self.clock()
        async with self.sessions() as session:
            locks = (await session.exec(select(Lock).where(
                col(Lock.released_at).is_(None),
                or_(col(Lock.expires_at).is_(None), col(Lock.expires_at) > now)))).all()
            freezes = (await session.exec(active_freezes(now))).all()
        return locks, windows.active(self.policy.config.freeze_windows, freezes, now)

    async def announce_windows(self) -> int:
        """Scheduler job: announce each window's start and end once (keys in the database)."""
        now = self.clock()
        async with self.sessions() as session:
            oneoff = (await session.exec(select(Freeze).where(
                col(Freeze.ends_at) > now - ANNOUNCE_LOOKBACK))).all()
        configured = self.policy.config.freeze_windows
        events = [(w, "start") for w in windows.active(configured, oneoff, now)]
        events += [(w, "end") for w in windows.recently_ended(configured, oneoff, now,
                                                               ANNOUNCE_LOOKBACK)]
        made = 0
        for window, edge in events:
            made += await self._announce_once(window, edge)
        return made

    async def _announce_once(self, window: windows.Window, edge: str) -> int:
        now = self.clock()
        envs = tuple(sorted(window.environments))
        fact: facts.Fact = facts.FreezeStarted(
            environments=envs, name=window.name, by=window.created_by, reason=window.reason,
            until=window.ends_at) if edge == "start" else \
            facts.FreezeEnded(environments=envs, name=window.name)
        async with self.sessions() as session:
            session.add(Announcement(key=f"{window.key}:{edge}", at=now))
            announce(session, self.channel, fact, now=now)
            try:
                await session.commit()
            except IntegrityError:
                return 0  # announced before (or by another replica)
        return 1
