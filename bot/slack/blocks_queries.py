"""The replies to reading commands: `/deploy status`, `history` and `audit`, and the
locks and freezes in force. Text only (an ephemeral reply), within Slack's limits."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.clock import as_utc, human_duration
from bot.mrkdwn import count, escape
from bot.slack.blocks import RunLike, clip, elapsed, state_label
from bot.store.models import Deployment


class SlotLike(Protocol):
    @property
    def service(self) -> str: ...
    @property
    def env(self) -> str: ...
    @property
    def current(self) -> RunLike | None: ...
    @property
    def in_progress(self) -> RunLike | None: ...


def when(dt: datetime | None, now: datetime) -> str:
    if dt is None:
        return "-"
    ago = human_duration((now - as_utc(dt)).total_seconds())
    return f"{as_utc(dt):%Y-%m-%d %H:%M} UTC ({ago} ago)"


STATUS_LIMIT = 3000


def status_text(slots: Sequence[SlotLike], now: datetime, guards: str = "") -> str:
    """`/deploy status`: one line per service and environment. When they do not all fit,
    locks, freezes and deployments in progress come first, then as many idle slots as fit,
    then how many were left out and how to see one service."""
    busy = [s for s in slots if s.in_progress is not None]
    lines = ["*What runs where*", *(_slot_line(s, now) for s in busy)]
    tail = "\n" + guards if guards else ""
    budget = STATUS_LIMIT - len(tail) - 120  # room for the "and N more" line
    shown = len(busy)
    for slot in (s for s in slots if s.in_progress is None):
        line = _slot_line(slot, now)
        if sum(len(x) + 1 for x in lines) + len(line) > budget:
            break
        lines.append(line)
        shown += 1
    if shown < len(slots):
        lines.append(f"… and {count(len(slots) - shown, 'more slot')} with nothing in "
                     "progress: `/deploy status <service>` shows one service.")
    return clip("\n".join(lines) + tail, STATUS_LIMIT)


def _slot_line(slot: SlotLike, now: datetime) -> str:
    cur = slot.current
    line = f"• *{slot.service}* {slot.env}: "
    if cur is None:
        line += "nothing deployed by Shipbot yet"
    else:
        line += f"`{cur.version}` since {when(cur.finished_at, now)} by <@{cur.requester}>"
    run = slot.in_progress
    if run is not None:
        line += (f"\n    ↳ {state_label(run.state)}: `{run.version or 'latest'}` by "
                 f"<@{run.requester}>, #{run.id}, {elapsed(run, now)}")
    return line


def history_text(service: str, env: str | None, deps: Sequence[Deployment], now: datetime) -> str:
    """`/deploy history`: the last deployments with outcome and duration."""
    scope = f"{service} {env}" if env else service
    if not deps:
        return f"No deployments of {scope} yet. Start one with `/deploy {service} <env>`."
    lines = [f"*Last {len(deps)} deployments of {scope}*"]
    for d in deps:
        lines.append(
            f"• #{d.id} {as_utc(d.created_at):%Y-%m-%d %H:%M} UTC  {d.env}  "
            f"`{d.version or 'latest'}`  {state_label(d.state)}  {elapsed(d, now)}  "
            f"by <@{d.requester}>"
        )
    return clip("\n".join(lines), 3000)


def audit_text(service: str, env: str | None, events: Sequence[Any]) -> str:
    """`/deploy audit`: recent decisions with actor and time, newest first."""
    scope = f"{service} {env}" if env else service
    if not events:
        return f"No recorded decisions for {scope} yet."
    lines = [f"*Recent decisions for {scope}*"]
    for e in events:
        change = f" {e.from_state or '∅'}→{e.to_state}" if e.to_state else ""
        target = f"#{e.deployment_id} " if e.deployment_id else ""
        detail = f" — {clip(e.detail, 160)}" if e.detail else ""  # stored mrkdwn-safe
        lines.append(f"• {as_utc(e.at):%Y-%m-%d %H:%M:%S} UTC <@{e.actor}> *{e.action}* "
                     f"{target}{e.env}{change}{detail}")
    return clip("\n".join(lines), 3000)


def guards_text(locks: Sequence[Any], frozen: Sequence[Any]) -> str:
    """Locks and freeze windows in force, appended to `/deploy status`."""
    lines = []
    for lock in locks:
        scope = f"{lock.service} on {lock.env}" if lock.service else lock.env
        until = f" until {as_utc(lock.expires_at):%H:%M} UTC" if lock.expires_at else ""
        lines.append(f":lock: {scope} locked by <@{lock.created_by}>{until}: "
                     f"{escape(lock.reason)}")
    for window in frozen:
        envs = ", ".join(sorted(window.environments))
        lines.append(f":snowflake: {envs} frozen — {window.describe()}")
    return "\n".join(lines)
