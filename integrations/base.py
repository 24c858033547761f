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
