"""Small Protocols, one per integration role, and the value types they exchange.

The engine only ever talks to these; each provider module implements one role.
Every call that starts work takes an idempotency ``key`` chosen by the engine, so
that a restart that repeats ``start`` finds the existing run instead of starting
a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator


class IntegrationError(Exception):
    """Base of every provider error; its message is safe to show to users."""


class TransientError(IntegrationError):
    """May pass on its own (a 5xx, a timeout, a dropped connection): worth retrying."""


class RateLimited(TransientError):
    """The provider asked us to slow down; ``wait_seconds`` says for how long, so the
    engine can wait that long (and say so) instead of burning its retries."""

    def __init__(self, message: str, wait_seconds: float) -> None:
        super().__init__(message)
        self.wait_seconds = max(0.0, wait_seconds)


class NoUndo(IntegrationError):
    """A target's own undo cannot return to the version asked for (the revision that ran
    it is no longer kept): the engine deploys that version with ``start`` instead."""


class Capability(StrEnum):
    """What a provider can do beyond start/poll; the config check and the engine ask."""

    CANCEL = "cancel"
    TRAFFIC = "traffic"  # set_weight, promote, abort: canary and blue-green
    HEALTH = "health"
    ROLLBACK = "rollback"  # a native undo
    LATEST_VERSION = "latest_version"
    COMPARE = "compare"  # the commits between two versions (changelog, max_commits)
    CHECKS = "checks"  # a commit's required checks (the quality gate before a deploy)


class ProviderConfig(BaseModel):
    """What every provider's config model has. ``CAPABILITIES`` declares what the provider
    can do at most; ``capabilities()`` what this config turns on, so validation can ask
    the config instead of building a live provider."""

    # Errors never echo the input: a pasted value could be a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset()
    # The settings that turn a capability on, for messages that say what to add.
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {}

    provider: str
    timeout_seconds: float = Field(600.0, gt=0)

    def capabilities(self) -> frozenset[Capability]:
        return self.CAPABILITIES

    def strategy_refusal(self, kind: str, analysis: bool) -> str | None:
        """Why this target cannot run a Shipbot strategy of ``kind`` (with Shipbot's canary
        analysis or not), beyond its capabilities; None: it can."""
        return None

    def settings_for(self, capability: Capability) -> str | None:
        """The settings that turn ``capability`` on, for a message saying what to add;
        None when this provider cannot do it at all."""
        if capability not in self.CAPABILITIES:
            return None
        return self.TURNED_ON_BY.get(capability, f"see the {self.provider} provider's settings")


class LatestVersion(BaseModel):
    """Where a CI provider's "latest build" comes from when a deploy names no version."""

    model_config = ConfigDict(extra="forbid")
    branch: str | None = Field(None, min_length=1, description="the newest commit on this "
                               "branch whose build succeeded (its full SHA)")
    tag_pattern: str | None = Field(None, min_length=1, description="the highest tag "
                                    "matching this glob, e.g. v*")

    @model_validator(mode="after")
    def _exactly_one(self) -> LatestVersion:
        if (self.branch is None) == (self.tag_pattern is None):
            raise ValueError("set exactly one of branch or tag_pattern")
        return self


class RunState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class JobSpec(BaseModel):
    """What to run: the engine's view of one CI build or deploy step."""

    key: str = Field(description="Idempotency key, unique per deployment and step")
    service: str
    env: str
    version: str
    artifact: str | None = Field(
        None, description="What the build produced (an image reference or digest): deploy "
        "steps put this on the environment, so every environment runs the same build")
    strategy: str = Field("rolling", description="how the engine rolls this version out "
                          "(rolling, canary, blue-green): a target that splits traffic "
                          "itself replaces the stable version at start only when rolling")


class Finding(BaseModel):
    """A check the target ran on its own (an Argo AnalysisRun) and how it ended: the
    engine shows it in the thread when the run that saw it ends or waits."""

    name: str
    phase: str  # the target's word: "Successful", "Failed", "Inconclusive"
    passed: bool | None  # None: could not decide
    message: str = ""
    lines: list[str] = Field(default_factory=list)  # per metric: phase, measured values


class RunStatus(BaseModel):
    """Where a started run stands. ``detail`` is a human sentence for the thread."""

    state: RunState
    exit_code: int | None = None
    output_tail: str = ""
    url: str | None = None
    detail: str = ""
    # A succeeded build's product and source, recorded so the next environment deploys
    # this build instead of building again ("build once, promote the artifact").
    artifact: str | None = None
    commit: str | None = None
    # A RUNNING deploy that waits for a human (an Argo ``pause: {}`` step): why, in words.
    # The engine pauses the deployment; Promote calls the target's ``promote`` to go on.
    waiting: str | None = None
    position: str | None = None  # where the target's own rollout stands, for the card
    findings: list[Finding] = Field(default_factory=list)  # its own checks that ended


class Commit(BaseModel):
    """One commit between the running and the new version, as a changelog shows it."""

    sha: str
    title: str
    author: str
    pr: int | None = None  # the pull/merge request that brought it, when known
    url: str | None = None


class Comparison(BaseModel):
    """The commits from ``base`` (exclusive) to ``head``: at most a page of them in
    ``commits`` (oldest first), and how many there are in all."""

    commits: list[Commit]
    total: int
    url: str | None = None  # the provider's compare page


class ChangeSource(Protocol):
    """A CI provider that knows the repository: what changed between two versions."""

    async def compare(self, base: str, head: str) -> Comparison: ...


class CheckState(StrEnum):
    PASSED = "passed"
    PENDING = "pending"  # queued, running, or not reported on this commit yet
    FAILED = "failed"


class CheckResult(BaseModel):
    """One required check of a commit (a check run, a commit status) and where it stands."""

    name: str
    state: CheckState
    detail: str = ""  # what the provider said: "failure", "in progress", "not reported"
    url: str | None = None


class CheckSource(Protocol):
    """A CI provider that knows the repository's checks: the quality gate asks it before
    a commit is deployed."""

    async def checks(self, ref: str) -> list[CheckResult]:
        """The required checks of ``ref`` (a SHA, tag or branch) as configured; a
        required check that has not reported is PENDING."""
        ...


class MirrorState(StrEnum):
    """A deployment's state as GitHub's deployment statuses name them."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    SUCCESS = "success"
    FAILURE = "failure"
    ERROR = "error"
    INACTIVE = "inactive"


class MirrorUpdate(BaseModel):
    """One state change of a Shipbot deployment, for a system that mirrors deployments."""

    key: str = Field(description="unique per Shipbot deployment: finds the mirror's "
                     "deployment again after a crash")
    deployment_id: int
    service: str
    env: str
    version: str
    state: MirrorState
    description: str = ""
    log_url: str | None = None  # the Slack thread
    mirror_id: str | None = None  # the mirror's deployment, once created
    # The commit being deployed when known (the build reported it, or the reused build
    # did): the mirror's deployment is created for it rather than for the version's name.
    commit: str | None = None
    # An earlier attempt may have reached the mirror (a replica died delivering it, or
    # the answer was lost): look before sending it again.
    maybe_sent: bool = False


class DeploymentMirror(Protocol):
    """Tells another system (GitHub's Environments page) what Shipbot deploys."""

    async def report(self, update: MirrorUpdate) -> str:
        """Record ``update`` there, creating (or finding, by ``key``) the mirror's
        deployment when ``mirror_id`` is None; return the mirror's deployment id."""
        ...


class CIProvider(Protocol):
    """Builds a version (or checks that it was built) before it is deployed."""

    async def start(self, job: JobSpec) -> str:
        """Start (or find the already started) run for ``job.key``; return its id."""
        ...

    async def poll(self, run_id: str) -> RunStatus: ...

    async def cancel(self, run_id: str) -> None: ...

    async def latest_version(self, service: str) -> str | None:
        """The newest version CI has built for ``service``, or None if unknown."""
        ...


class DeployTarget(Protocol):
    """Puts a version on an environment."""

    async def start(self, job: JobSpec) -> str: ...

    async def poll(self, run_id: str) -> RunStatus: ...

    async def cancel(self, run_id: str) -> None: ...


class TrafficTarget(Protocol):
    """A deploy target that can split traffic (canary) or switch it (blue-green).

    Each call starts a run keyed by ``job.key`` (idempotent like ``start``) whose outcome
    is read with the target's ``poll``. Targets without these methods cannot run canary
    or blue-green strategies; ``shipbot config check`` refuses such a combination.
    """

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        """Send ``weight`` percent of traffic to the new version (0-100)."""
        ...

    async def promote(self, job: JobSpec) -> str:
        """Make the new version the stable one and retire the old one."""
        ...

    async def abort(self, job: JobSpec) -> str:
        """Undo: all traffic back to the previous version, remove the new one."""
        ...


class HealthTarget(Protocol):
    """A deploy target that can say whether the new version is healthy."""

    async def health(self, job: JobSpec) -> str: ...


class RollbackTarget(Protocol):
    """A deploy target with its own undo (``kubectl rollout undo``, Argo's abort...).

    Rollbacks use it when present; otherwise, or when it raises ``NoUndo``, they deploy
    the earlier version with ``start``. The run is polled and cancelled with the target's
    ``poll``/``cancel``.
    """

    async def rollback(self, job: JobSpec) -> str: ...


@dataclass(frozen=True)
class CIBundle:
    """A CI provider and its optional capabilities, filled once at start-up."""

    ci: CIProvider
    changes: ChangeSource | None = None
    checks: CheckSource | None = None


class FullTarget(DeployTarget, TrafficTarget, HealthTarget, RollbackTarget, Protocol):
    """A provider class that implements every deploy capability; its config decides
    which of them a given service may use (``DeployBundle.of``)."""


@dataclass(frozen=True)
class DeployBundle:
    """A deploy target and the optional capabilities it has, as typed fields filled once
    at start-up: the engine checks ``traffic is None`` instead of probing attributes."""

    target: DeployTarget
    traffic: TrafficTarget | None = None
    health: HealthTarget | None = None
    rollback: RollbackTarget | None = None

    @classmethod
    def of(cls, provider: FullTarget, capabilities: frozenset[Capability]) -> DeployBundle:
        """``provider`` for what its config turned on, None for the rest."""
        return cls(target=provider,
                   traffic=provider if Capability.TRAFFIC in capabilities else None,
                   health=provider if Capability.HEALTH in capabilities else None,
                   rollback=provider if Capability.ROLLBACK in capabilities else None)
