"""Small Protocols, one per integration role, and the value types they exchange.

The engine only ever talks to these; each provider module implements one role.
Every call that starts work takes an idempotency ``key`` chosen by the engine, so
that a restart that repeats ``start`` finds the existing run instead of starting
a second one.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, Field


class IntegrationError(Exception):
    """Base of every provider error; its message is safe to show to users."""


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


class RunStatus(BaseModel):
    """Where a started run stands. ``detail`` is a human sentence for the thread."""

    state: RunState
    exit_code: int | None = None
    output_tail: str = ""
    url: str | None = None
    detail: str = ""


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


def reports_health(target: object) -> bool:
    """Has ``health``, and (for configurable providers) is configured to use it."""
    return callable(getattr(target, "health", None)) and bool(getattr(target, "has_health", True))


def can_split_traffic(target: object) -> bool:
    """Has the methods, and (for configurable providers) is configured to use them."""
    methods = all(callable(getattr(target, n, None)) for n in ("set_weight", "promote", "abort"))
    return methods and bool(getattr(target, "splits_traffic", True))


class RollbackTarget(Protocol):
    """A deploy target with its own undo (``kubectl rollout undo``, Argo's abort...).

    Rollbacks use it when present; otherwise they deploy the earlier version with
    ``start``. The run is polled and cancelled with the target's ``poll``/``cancel``.
    """

    can_rollback: bool

    async def rollback(self, job: JobSpec) -> str: ...


def has_native_rollback(target: object) -> bool:
    return callable(getattr(target, "rollback", None)) and bool(
        getattr(target, "can_rollback", True))


async def start_run(target: DeployTarget, job: JobSpec, *, rollback: bool) -> str:
    """Start a deploy run; a rollback uses the target's own undo when it has one."""
    if rollback and has_native_rollback(target):
        return await target.rollback(job)  # type: ignore[attr-defined,no-any-return]
    return await target.start(job)
