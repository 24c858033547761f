"""Facts of a rollout after the deploy: traffic steps, checks, verdicts, pauses and
rollbacks."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from bot.engine.facts.base import Fact, Line, MetricLine, Outcome, Undecided, Untrusted


class Deployed(Fact):
    kind = "deployed"
    version: str | None
    env: str
    rolling: bool
    output: str = ""


class Live(Fact):
    kind = "live"
    service: str
    version: str | None
    env: str
    seconds: float
    output: str = ""


class RollbackWindow(Fact):
    kind = "rollback_window"
    version: str | None
    previous_version: str | None
    until: datetime
    seconds: float


class TrafficChange(Fact):
    kind = "traffic_change"
    step: Literal["weight", "promote"]
    blue_green: bool
    weight: int = 0
    version: str | None
    previous_version: str | None = None


class ChecksPassed(Fact):
    kind = "checks_passed"
    results: tuple[Line, ...]


class NoAnalysis(Fact):
    """A bake step with no analysis configured ended."""

    kind = "no_analysis"
    weight: int
    seconds: float


class CheckReport(Fact):
    """The canary's verdict at the end of a step (or a final one)."""

    kind = "check_report"
    weight: int
    blue_green: bool
    verdict: str
    score: float
    results: tuple[MetricLine, ...]


class Paused(Fact):
    kind = "paused"
    MRKDWN = frozenset({"why"})
    why: str
    analysis: Undecided | None = None  # set: the analysis could not decide
    deadline: datetime
    service: str
    env: str


class TargetWentOn(Fact):
    """At a pause deadline: the deploy target no longer waits where the deployment paused
    (promoted outside Shipbot), so the deploy goes on instead of rolling back."""

    kind = "target_went_on"
    position: Untrusted


class Pressed(Fact):
    """Someone pressed Promote or Resume (a button or the command)."""

    kind = "pressed"
    by: str
    action: str


class StopFailed(Fact):
    kind = "stop_failed"
    error: Untrusted


class RollingBack(Fact):
    kind = "rolling_back"
    MRKDWN = frozenset({"why"})
    service: str
    env: str
    why: str
    results: tuple[Line, ...] = ()
    output: str = ""


class RolledBack(Fact):
    kind = "rolled_back"
    service: str
    env: str
    version: str | None
    previous_version: str | None
    seconds: float
    output: str = ""


class RollbackFailed(Fact):
    kind = "rollback_failed"
    MRKDWN = frozenset({"reason"})
    reason: str
    service: str
    env: str
    version: str | None
    previous_version: str | None
    output: str = ""


class NothingToGoBackTo(Fact):
    kind = "nothing_to_go_back_to"
    service: str
    env: str
    version: str | None


class RollbackKept(Fact):
    """A rollback failed its checks: it stays, a human decides."""

    kind = "rollback_kept"
    MRKDWN = frozenset({"why"})
    service: str
    env: str
    version: str | None
    previous_version: str | None
    why: str
    results: tuple[Line, ...] = ()
    output: str = ""


class ShadowVerdict(Fact):
    """A metric in shadow mode would have rolled the canary back; nothing was done."""

    kind = "shadow_verdict"
    weight: int
    metric: Untrusted
    text: Untrusted


class SparseTraffic(Fact):
    """A step ended with sequential metrics lacking only traffic: the step is extended,
    or the rollout moves on carrying the evidence, or it pauses (it would take too long)."""

    kind = "sparse_traffic"
    action: Literal["extend", "advance", "pause"]
    weight: int
    metrics: tuple[Untrusted, ...]  # lacking traffic
    seen: int = 0  # canary requests judged so far (the least among the metrics)
    needed: int = 0  # before a pass
    per_second: float = 0.0  # canary requests per second in the step
    wait_seconds: float = 0.0  # to reach ``needed`` at this traffic
    detect_seconds: float | None = None  # until a 5x rise would have shown
    extension_seconds: float = 0.0  # the extension allowed
    warming: tuple[Untrusted, ...] = ()  # metrics still in the canary's warm-up
    warm_until: datetime | None = None


class TargetAnalysis(Fact):
    """A check the deploy target ran on its own (an Argo AnalysisRun) ended."""

    kind = "target_analysis"
    name: Untrusted
    phase: Untrusted
    outcome: Outcome
    results: tuple[Line, ...] = ()
    message: Untrusted = ""


class TargetPosition(Fact):
    """Where the target's own rollout stands after a traffic step (Argo's step, weight)."""

    kind = "target_position"
    position: Untrusted
