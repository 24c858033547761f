"""In-memory CI and deploy target for fast engine tests (and the conformance suite).

A ``FakeWorld`` holds every run, so a second ``FakeCI``/``FakeTarget`` over the same
world is a restarted bot: it finds the runs the first one started. The version says how
a run ends: ``fail...`` fails, ``slow...`` runs until cancelled, anything else succeeds
after ``polls`` polls; a deploy of ``wait...`` waits for a person (``RunStatus.waiting``,
with a finished check of its own) until the target is asked to promote. Queue errors
with ``world.fail_next`` to see how callers cope.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from integrations.base import (
    Commit,
    Comparison,
    Finding,
    IntegrationError,
    JobSpec,
    RunState,
    RunStatus,
)


@dataclass
class FakeRun:
    run_id: str
    job: JobSpec
    action: str
    polls_left: int
    state: RunState = RunState.RUNNING
    detail: str = "is running"


@dataclass
class FakeWorld:
    polls: int = 1  # polls that answer RUNNING before a run ends
    runs: dict[str, FakeRun] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)  # (action, key or run id)
    latest: str | None = None
    errors: list[IntegrationError] = field(default_factory=list)

    def fail_next(self, *errors: IntegrationError) -> None:
        self.errors.extend(errors)

    def _raise_queued(self) -> None:
        if self.errors:
            raise self.errors.pop(0)

    def started(self, action: str | None = None) -> list[FakeRun]:
        return [r for r in self.runs.values() if action is None or r.action == action]


class FakeCI:
    """``CIProvider`` in memory; runs keyed by the engine's idempotency key."""

    name = "fake"

    def __init__(self, world: FakeWorld | None = None) -> None:
        self.world = world or FakeWorld()

    async def start(self, job: JobSpec) -> str:
        return await self._start(job, "start")

    async def _start(self, job: JobSpec, action: str) -> str:
        self.world._raise_queued()
        self.world.calls.append((action, job.key))
        run_id = f"{self.name}-{job.key}"
        if run_id not in self.world.runs:  # a repeated start finds the run
            self.world.runs[run_id] = FakeRun(run_id, job, action, self.world.polls)
        return run_id

    def _run(self, run_id: str) -> FakeRun:
        run = self.world.runs.get(run_id)
        if run is None:
            raise IntegrationError(f"unknown {self.name} run: {run_id!r}")
        return run

    async def poll(self, run_id: str) -> RunStatus:
        self.world._raise_queued()
        self.world.calls.append(("poll", run_id))
        run = self._run(run_id)
        if run.state is RunState.RUNNING and not run.job.version.startswith("slow"):
            if run.polls_left > 0:
                run.polls_left -= 1
            elif run.job.version.startswith("fail"):
                run.state, run.detail = RunState.FAILED, f"{run.action} failed"
            else:
                run.state, run.detail = RunState.SUCCEEDED, f"{run.action} passed"
        return RunStatus(state=run.state, detail=run.detail,
                         url=f"https://ci.example.com/{run_id}")

    async def cancel(self, run_id: str) -> None:
        self.world._raise_queued()
        self.world.calls.append(("cancel", run_id))
        run = self._run(run_id)
        if run.state is RunState.RUNNING:
            run.state, run.detail = RunState.FAILED, "was cancelled"

    async def latest_version(self, service: str) -> str | None:
        self.world._raise_queued()
        return self.world.latest


class FakeTarget(FakeCI):
    """A deploy target with every capability (``FullTarget``), each call a keyed run."""

    name = "fake-target"

    WAITING = "The target waits for a person at its step 2 (weight 10 %)."

    async def poll(self, run_id: str) -> RunStatus:
        run = self._run(run_id)
        if run.action == "start" and run.job.version.startswith("wait") and \
                not self.world.started("promote"):
            self.world.calls.append(("poll", run_id))
            return RunStatus(state=RunState.RUNNING, detail="is waiting", waiting=self.WAITING,
                             findings=[Finding(name="smoke-check", phase="Successful",
                                               passed=True, lines=["latency: 120 ms"])])
        return await super().poll(run_id)

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        return await self._start(job, f"set_weight {weight}")

    async def promote(self, job: JobSpec) -> str:
        return await self._start(job, "promote")

    async def abort(self, job: JobSpec) -> str:
        return await self._start(job, "abort")

    async def health(self, job: JobSpec) -> str:
        return await self._start(job, "health")

    async def rollback(self, job: JobSpec) -> str:
        return await self._start(job, "rollback")


class FakeChanges:
    """``ChangeSource`` in memory: ``total`` commits between any two versions, the first
    20 listed (as GitHub's and GitLab's compare pages are), oldest first."""

    def __init__(self, world: FakeWorld, total: int = 3) -> None:
        self.world, self.total = world, total

    async def compare(self, base: str, head: str) -> Comparison:
        self.world.calls.append(("compare", f"{base}...{head}"))
        self.world._raise_queued()
        commits = [Commit(sha=f"{i:07x}" + "0" * 33, title=f"Change {i} <of> {head}",
                          author=f"dev{i % 3}", pr=100 + i if i % 2 else None)
                   for i in range(1, min(self.total, 20) + 1)]
        return Comparison(commits=commits, total=self.total,
                          url=f"https://git.example/compare/{base}...{head}")
