"""``shipbot judges report``: what the metrics in shadow mode would have done, beside what
happened. Why: a team adopts a rule (a new judge, a tighter limit) after seeing on its
own rollouts how often it would have rolled back, and whether those rollouts went bad
anyway (rolled back, or an alert pinned on the deployment) or were fine.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.store.models import AlertThread, Deployment


@dataclass
class ShadowRow:
    """One shadow metric over the period."""

    metric: str
    rollouts: int = 0  # judged in shadow mode
    would_roll_back: int = 0
    rolled_back: int = 0  # of those it flagged, rolled back anyway (by a judge or a human)
    alerted: int = 0  # of those it flagged, an alert pinned on the deployment
    missed: int = 0  # not flagged, yet rolled back or alerted

    @property
    def confirmed(self) -> int:
        return self.rolled_back + self.alerted


def _went_bad(dep: Deployment, alerted: set[int]) -> tuple[bool, bool]:
    return dep.state == "rolled_back", dep.id in alerted


async def shadow_report(session: AsyncSession, since: datetime) -> list[ShadowRow]:
    """Per shadow metric, over the deployments created since ``since``."""
    deps = (await session.exec(select(Deployment).where(
        col(Deployment.created_at) >= since))).all()
    alerted = {a for a in (await session.exec(select(AlertThread.suspect_deployment_id).where(
        col(AlertThread.suspect_deployment_id).is_not(None)))).all() if a is not None}
    rows: dict[str, ShadowRow] = {}
    for dep in deps:
        said: dict[str, bool] = {}
        for check in json.loads(dep.analysis_log or "[]"):
            for name, verdict in check.get("shadow", {}).items():
                said[name] = said.get(name, False) or verdict == "fail"
        rolled, alert = _went_bad(dep, alerted)
        for name, flagged in said.items():
            row = rows.setdefault(name, ShadowRow(name))
            row.rollouts += 1
            if flagged:
                row.would_roll_back += 1
                row.rolled_back += rolled
                row.alerted += alert and not rolled
            else:
                row.missed += rolled or alert
    return sorted(rows.values(), key=lambda r: r.metric)


def format_report(rows: list[ShadowRow], days: int) -> str:
    """A plain table for a terminal."""
    if not rows:
        return (f"No metric in shadow mode judged a rollout in the last {days} days. Set "
                "`mode: shadow` on a metric (or on the analysis) to try a rule.\n")
    head = (f"{'metric':24} {'rollouts':>8} {'would roll back':>16} {'then rolled back':>17} "
            f"{'alerted':>8} {'missed':>7}")
    lines = [f"Shadow metrics, last {days} days", head]
    for r in rows:
        rate = r.would_roll_back / r.rollouts
        lines.append(f"{r.metric[:24]:24} {r.rollouts:>8} "
                     f"{f'{r.would_roll_back} ({rate:.0%})':>16} {r.rolled_back:>17} "
                     f"{r.alerted:>8} {r.missed:>7}")
    lines.append("would roll back: rollouts it would have stopped; then rolled back / alerted: "
                 "of those, how many went bad anyway; missed: rollouts that went bad "
                 "without it objecting.")
    return "\n".join(lines) + "\n"
