"""A strategy as a list of stages the runner walks through, one index at a time.

The plan is derived from the config, so the database only needs the stage index:
canary ``[5, 25, pause, 50, 100]`` becomes checks, weight 5, bake, weight 25, bake,
gate, weight 50, bake, weight 100, promote. The HTTP checks run on the new version
before any user traffic reaches it (Flagger's pre-rollout hooks do the same).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from bot.config_delivery import StrategyConfig

StageKind = Literal["weight", "checks", "bake", "gate", "window", "promote"]


@dataclass(frozen=True)
class Stage:
    kind: StageKind
    weight: int | None = None
    duration: timedelta | None = None

    def label(self) -> str:
        return {
            "weight": f"shift {self.weight}% of traffic",
            "checks": "post-deploy checks",
            "bake": f"analysis at {self.weight}%",
            "gate": "manual gate",
            "window": "rollback window",
            "promote": "promote",
        }[self.kind]


def plan(strategy: StrategyConfig) -> list[Stage]:
    checks = [Stage("checks")] if strategy.checks else []
    if strategy.kind == "rolling":
        return checks
    if strategy.kind == "blue-green":
        bake = [Stage("bake", 0, strategy.interval)] if strategy.analysis else []
        return [*checks, *bake, Stage("weight", 100),
                Stage("window", 100, strategy.rollback_window), Stage("promote", 100)]
    stages: list[Stage] = [*checks]
    for step in strategy.steps:
        if step == "pause":
            stages.append(Stage("gate", _last_weight(stages)))
            continue
        stages.append(Stage("weight", step))
        if step < 100:
            stages.append(Stage("bake", step, strategy.interval))
    return [*stages, Stage("promote", 100)]


def _last_weight(stages: list[Stage]) -> int:
    weights = [s.weight for s in stages if s.kind == "weight" and s.weight is not None]
    return weights[-1] if weights else 0


def weights(stages: list[Stage]) -> list[int]:
    return [s.weight for s in stages if s.kind == "weight" and s.weight is not None]


def progress_bar(stages: list[Stage], index: int) -> str:
    """``5% ▸ *25%* ▸ 50% ▸ 100%``: the current weight in bold, done ones struck."""
    done = {s.weight for s in stages[: index + 1] if s.kind == "weight" and s.weight is not None}
    current = max(done) if done else None
    parts = []
    for w in weights(stages):
        text = f"{w}%"
        parts.append(f"*{text}*" if w == current else (f"~{text}~" if w in done else text))
    return " ▸ ".join(parts)
