"""Facts of a deployment's request, approvals, build and deploy."""

from __future__ import annotations

from typing import Literal

from bot.engine.facts.base import Fact, Untrusted


class LatestVersion(Fact):
    kind = "latest_version"
    version: str


class MoreApprovalsNeeded(Fact):
    kind = "more_approvals_needed"
    by: str
    received: int
    required: int


class Approved(Fact):
    kind = "approved"
    by: str
    received: int
    required: int
    version: str | None
    env: str


class Rejected(Fact):
    kind = "rejected"
    by: str
    reason: Untrusted  # "" when none was given
    requester: str


class RequestExpired(Fact):
    kind = "request_expired"
    requester: str
    received: int
    required: int
    service: str
    env: str
    version: str | None


class StoppedBeforeStart(Fact):
    """A lock or freeze began while the deployment waited in the queue."""

    kind = "stopped_before_start"
    MRKDWN = frozenset({"why"})
    why: str


class Cancelled(Fact):
    kind = "cancelled"
    by: str
    env: str


# --- build and deploy --------------------------------------------------------------

class BuildStarted(Fact):
    kind = "build_started"
    version: str | None


class BuildRunning(Fact):
    """The CI run has a page to follow it on."""

    kind = "build_running"
    link: str


class ChecksRefused(Fact):
    """The quality gate: the version's required checks failed or are still pending."""

    kind = "checks_refused"
    MRKDWN = frozenset({"reason"})
    reason: str
    failed: bool  # False: only pending ones
    service: str
    env: str
    version: str
    link: str | None = None


class BuildReused(Fact):
    """Build once: this version's build from another environment is deployed again."""

    kind = "build_reused"
    version: str | None
    built_in: str  # the environment it was built for
    built_by: int | None  # the deployment that built it
    artifact: Untrusted | None = None


class ManyCommits(Fact):
    """The version ships more commits than the environment's max_commits: refused, or
    deployed because the requester overrode the limit (also announced)."""

    kind = "many_commits"
    service: str
    previous_version: str
    version: str | None
    env: str
    commits: int
    limit: int
    overridden_by: str | None = None


class BuildPassed(Fact):
    kind = "build_passed"
    detail: Untrusted
    output: str = ""
    link: str | None = None


class Deploying(Fact):
    kind = "deploying"
    version: str | None
    env: str
    rollback: bool = False


class AwaitingHealth(Fact):
    kind = "awaiting_health"
    version: str | None
    env: str


class Healthy(Fact):
    kind = "healthy"
    version: str | None
    env: str
    output: str = ""


class RunFailed(Fact):
    """The build or the deploy failed, or ran past its deadline and was stopped."""

    kind = "run_failed"
    step: Literal["build", "deploy"]
    timed_out: bool = False
    detail: Untrusted = ""
    during_deploy: bool = False  # the target may have changed partly
    service: str
    env: str
    version: str | None
    previous_version: str | None
    output: str = ""
    link: str | None = None


class TakenOver(Fact):
    """Another replica restarts a run whose replica is gone."""

    kind = "taken_over"
    what: str  # build, deploy, rollback, traffic change
    gone: str
    replica: str


class RateLimited(Fact):
    """A provider asked Shipbot to wait: the step waits, it is no failed attempt."""

    kind = "rate_limited"
    MRKDWN = frozenset({"reason"})
    reason: str
    wait_seconds: float


class GaveUp(Fact):
    """A step failed too often in a row; nothing more runs."""

    kind = "gave_up"
    MRKDWN = frozenset({"reason"})
    state: str
    reason: str
    service: str
    env: str
    version: str | None


class ExpiredUnhandled(Fact):
    """The approval wait failed too often in a row: the request expired."""

    kind = "expired_unhandled"
    MRKDWN = frozenset({"reason"})
    reason: str
    attempts: int
    service: str
    env: str
    version: str | None
