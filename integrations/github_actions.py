"""The ``github_actions`` provider: a build (or deploy) is a workflow_dispatch run.

``start`` dispatches the workflow with the job's inputs plus a correlation id derived from
the engine's idempotency key, and asks GitHub for the run's id (``return_run_details``).
The workflow puts that id in its ``run-name``, so the run can also be found by listing
the workflow's runs: that is how a start repeated after a crash (same key) finds the run
it already dispatched instead of dispatching again, and how a GitHub that answers a
dispatch without the id (older Enterprise Server) is followed. A run id handed to the
engine is GitHub's run id, or ``dispatch:<correlation>:<unix time>`` until the run shows.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from integrations.base import (
    CheckResult,
    Comparison,
    IntegrationError,
    JobSpec,
    RunState,
    RunStatus,
)
from integrations.command_templates import render, run_id_for
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_auth import GitHubCredentials
from integrations.github_runs import (
    check_results,
    comparison,
    describe_run,
    failed_job_lines,
    newest_tag,
    required_results,
)
from integrations.http import HttpOptions, Rejected
from integrations.rest import JsonReads

PROVIDER = "github_actions"
LOOKBACK_SECONDS = 24 * 3600  # how far back a repeated start looks for its run
COMPARE_PAGE = 100  # commits asked for in one compare (the oldest first)
MAX_REMEMBERED = 1000  # correlation ids -> run ids kept in memory (found again if dropped)
_PENDING = re.compile(r"dispatch:([A-Za-z0-9_.-]+):([0-9]+)")


class GitHubActionsProvider(JsonReads):
    """``CIProvider`` and ``DeployTarget`` (start, poll, cancel) on GitHub Actions, and the
    repository's ``ChangeSource`` (compare)."""

    def __init__(self, config: GitHubActionsConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.time) -> None:
        self._config, self._options = config, options or HttpOptions()
        self._environ, self._clock = environ, clock
        self._credentials = GitHubCredentials(
            config, PROVIDER, environ=environ, options=self._options, clock=clock,
            request_timeout_seconds=config.request_timeout_seconds)
        self._found: dict[str, int] = {}  # correlation id -> run id, once seen
        # engine run id -> (first poll, last fetch, what it said): the polling backoff
        self._polled: dict[str, tuple[float, float, RunStatus | None]] = {}
        repo = config.repository
        self._runs = f"/repos/{repo}/actions/workflows/{config.workflow}/runs"

    # -- the calls -------------------------------------------------------------------

    async def _call(self, method: str, path: str, missing: str, **kwargs: Any
                    ) -> httpx.Response:
        return await self._credentials.request(
            method, path, missing, f"the github_actions provider for {self._config.repository}",
            **kwargs)

    def _unexpected(self, path: str, what: str) -> IntegrationError:
        return IntegrationError(f"{self._config.label} answered {path} with {what}; is "
                                "base_url the API's URL (https://HOST/api/v3 for Enterprise)?")

    # -- CIProvider / DeployTarget ------------------------------------------------------

    async def start(self, job: JobSpec) -> str:
        """Find the run dispatched for ``job.key`` before (a restart), else dispatch it."""
        correlation = run_id_for(job.key)
        found = await self._find(correlation, since=self._clock() - LOOKBACK_SECONDS)
        if found is not None:
            return str(found["id"])
        dispatched_at = int(self._clock())
        run_id = await self._dispatch(job, correlation)
        if run_id is not None:
            return str(run_id)
        return f"dispatch:{correlation}:{dispatched_at}"

    async def _dispatch(self, job: JobSpec, correlation: str) -> int | None:
        values = {"service": job.service, "env": job.env, "version": job.version}
        inputs = {name: render(template, values)
                  for name, template in self._config.inputs.items()}
        body: dict[str, Any] = {"ref": render(self._config.ref, values),
                                "inputs": {**inputs, self._config.correlation_input:
                                           correlation},
                                "return_run_details": True}
        path = f"/repos/{self._config.repository}/actions/workflows/" \
               f"{self._config.workflow}/dispatches"
        missing = f"workflow {self._config.workflow} in {self._config.repository}"
        try:
            response = await self._call("POST", path, missing, json=body)
        except Rejected as exc:  # a GitHub that predates return_run_details: without it
            if "return_run_details" not in str(exc):
                raise
            del body["return_run_details"]
            response = await self._call("POST", path, missing, json=body)
        if response.status_code != 200:
            return None  # 204: no details, found later by its correlation id
        try:
            run_id = response.json().get("workflow_run_id")
        except (ValueError, AttributeError):
            return None
        return run_id if isinstance(run_id, int) else None

    async def _find(self, correlation: str, since: float) -> dict[str, Any] | None:
        """The workflow_dispatch run whose run-name carries ``correlation``, if listed."""
        created = datetime.fromtimestamp(since - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        data = await self._object(self._runs, self._missing_workflow(),
                                  event="workflow_dispatch", created=f">={created}",
                                  per_page="100", exclude_pull_requests="true")
        for run in data.get("workflow_runs") or []:
            if isinstance(run, dict) and isinstance(run.get("id"), int) and \
                    correlation in str(run.get("display_title") or ""):
                self._remember(correlation, int(run["id"]))
                return dict(run)
        return None

    def _remember(self, correlation: str, run_id: int) -> None:
        if len(self._found) >= MAX_REMEMBERED:
            self._found.clear()
        self._found[correlation] = run_id

    async def _resolve(self, run_id: str) -> tuple[int | None, float]:
        """GitHub's id for an engine run id, and when it was dispatched (0 if unknown)."""
        if run_id.isdigit():
            return int(run_id), 0.0
        match = _PENDING.fullmatch(run_id)
        if match is None:
            raise IntegrationError(f"unknown GitHub Actions run id {run_id[:80]!r}")
        correlation, dispatched = match.group(1), float(match.group(2))
        if correlation not in self._found:
            await self._find(correlation, since=dispatched)
        return self._found.get(correlation), dispatched

    async def poll(self, run_id: str) -> RunStatus:
        """The run's state, asked of GitHub at most every tenth of the run's age so far
        (capped at ``max_poll_seconds``): the engine polls every few seconds, and a long
        build must not spend the token's hourly request budget."""
        now = self._clock()
        first, fetched, last = self._polled.get(run_id, (now, 0.0, None))
        pause = min(self._config.max_poll_seconds, (now - first) / 10)
        if last is not None and last.state is RunState.RUNNING and now - fetched < pause:
            return last
        status = await self._fetch(run_id)
        if len(self._polled) >= MAX_REMEMBERED:
            self._polled.clear()
        self._polled[run_id] = (first, now, status)
        return status

    async def _fetch(self, run_id: str) -> RunStatus:
        github_id, dispatched = await self._resolve(run_id)
        if github_id is None:
            return self._not_yet_listed(dispatched)
        run = await self._object(f"/repos/{self._config.repository}/actions/runs/{github_id}",
                               f"workflow run {github_id} in {self._config.repository}")
        state, detail = describe_run(run)
        tail = ""
        if state is RunState.FAILED and run.get("conclusion") == "failure":
            jobs = await self._json(f"/repos/{self._config.repository}/actions/runs/"
                                    f"{github_id}/jobs", f"workflow run {github_id}",
                                    filter="latest", per_page="100")
            lines = failed_job_lines(jobs)
            if lines:  # the first in the sentence; all of them below it when several
                detail = f"{detail}: {lines[0]}"
                tail = "\n".join(lines) if len(lines) > 1 else ""
        url, sha = run.get("html_url"), run.get("head_sha")
        return RunStatus(state=state, detail=detail, output_tail=tail,
                         url=url if isinstance(url, str) else None,
                         commit=sha if isinstance(sha, str) and sha else None)

    def _not_yet_listed(self, dispatched: float) -> RunStatus:
        waited = self._clock() - dispatched
        if waited < self._config.appear_within_seconds:
            return RunStatus(state=RunState.RUNNING, detail="is waiting for GitHub to list "
                             "the dispatched run")
        return RunStatus(state=RunState.FAILED, detail=(
            f"no run of {self._config.workflow} carrying Shipbot's id showed up within "
            f"{waited:.0f} s of the dispatch: does the workflow set `run-name:` with "
            f"${{{{ inputs.{self._config.correlation_input} }}}}?"))

    async def cancel(self, run_id: str) -> None:
        github_id, _ = await self._resolve(run_id)
        if github_id is None:
            raise IntegrationError("the dispatched run is not listed by GitHub yet, so it "
                                   "cannot be cancelled yet; try again in a moment")
        path = f"/repos/{self._config.repository}/actions/runs/{github_id}/cancel"
        try:
            await self._call("POST", path, f"workflow run {github_id} in "
                                           f"{self._config.repository}")
        except Rejected as exc:
            if exc.status != 409:  # 409: it had completed already, nothing to stop
                raise

    async def latest_version(self, service: str) -> str | None:
        latest = self._config.latest_version
        if latest is None:
            return None
        if latest.branch is not None:
            data = await self._object(self._runs, self._missing_workflow(),
                                      branch=latest.branch, status="success", per_page="1",
                                      exclude_pull_requests="true")
            runs = data.get("workflow_runs") or []
            sha = runs[0].get("head_sha") if runs and isinstance(runs[0], dict) else None
            return sha if isinstance(sha, str) and sha else None
        assert latest.tag_pattern is not None
        tags = await self._json(f"/repos/{self._config.repository}/tags",
                                f"repository {self._config.repository}", per_page="100")
        names = [str(t.get("name")) for t in tags if isinstance(t, dict)] \
            if isinstance(tags, list) else []
        return newest_tag([n for n in names if fnmatch.fnmatchcase(n, latest.tag_pattern)])

    # -- CheckSource ---------------------------------------------------------------------

    async def checks(self, ref: str) -> list[CheckResult]:
        """The required check runs and commit statuses of ``ref`` (``required_checks``)."""
        required = self._config.required_checks
        if required is None:
            return []
        _check_ref(ref)
        repo, quoted = self._config.repository, urllib.parse.quote(ref, safe="/")
        missing = f"commit {ref} in {repo}"
        runs = await self._object(f"/repos/{repo}/commits/{quoted}/check-runs", missing,
                                  filter="latest", per_page="100")
        combined = await self._object(f"/repos/{repo}/commits/{quoted}/status", missing,
                                      per_page="100")
        return required_results(check_results(runs, combined), required, ref)

    # -- ChangeSource --------------------------------------------------------------------

    async def compare(self, base: str, head: str) -> Comparison:
        """The commits after ``base`` up to ``head`` (versions, tags, branches or SHAs):
        the first page of them, oldest first, and how many there are in all."""
        for ref in (base, head):
            _check_ref(ref, "compare")
        repo = self._config.repository
        basehead = f"{urllib.parse.quote(base, safe='/')}...{urllib.parse.quote(head, safe='/')}"
        data = await self._object(f"/repos/{repo}/compare/{basehead}",
                                  f"commit {base} or {head} in {repo}",
                                  per_page=str(COMPARE_PAGE))
        return comparison(data)

    def _missing_workflow(self) -> str:
        return f"workflow {self._config.workflow} in {self._config.repository}"


def _check_ref(ref: str, doing: str = "check") -> None:
    """A tag, branch or SHA that can go in a URL path as it is (quoted)."""
    if not ref or ref.startswith("/") or ".." in ref or any(c.isspace() for c in ref):
        raise IntegrationError(f"cannot {doing} {ref[:80]!r}: not a tag, branch or commit SHA")
