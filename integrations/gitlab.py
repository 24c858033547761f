"""The ``gitlab`` provider: a build (or deploy) is a GitLab CI pipeline.

``start`` creates a pipeline on the configured ref (``POST /projects/:id/pipeline`` with
the access token, or ``POST /projects/:id/trigger/pipeline`` with a trigger token) with the
job's variables plus a correlation id derived from the engine's idempotency key
(``SHIPBOT_CORRELATION_ID``). The engine's run id is GitLab's pipeline id.

GitLab cannot list pipelines by variable, so a start repeated after a crash (same key;
the bot died between creating the pipeline and recording its id) looks for its pipeline
among the newest ``MAX_CANDIDATES`` pipelines of the ref that this kind of request
created (``source`` api or trigger) and were updated within ``LOOKBACK_SECONDS``, and
reads each one's variables. A pipeline further down than that is not found, and the
restarted step creates a second one: the limit keeps a start to a bounded number of
requests.
"""

from __future__ import annotations

import fnmatch
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from integrations.base import (
    Comparison,
    IntegrationError,
    JobSpec,
    RateLimited,
    RunState,
    RunStatus,
)
from integrations.command_templates import render, run_id_for
from integrations.gitlab_config import GitLabConfig
from integrations.gitlab_pipelines import (
    comparison,
    describe_pipeline,
    failed_job_lines,
    gitlab_message,
    newest_tag,
)
from integrations.http import (
    HttpOptions,
    Rejected,
    new_client,
    raise_for_status,
    send,
    snippet,
)
from integrations.rest import JsonReads

PROVIDER = "gitlab"
LOOKBACK_SECONDS = 24 * 3600  # how far back a repeated start looks for its pipeline
MAX_CANDIDATES = 20  # pipelines whose variables a repeated start reads, newest first
MAX_REMEMBERED = 1000  # correlation ids -> pipeline ids kept in memory
ARTIFACT_VARIABLE = "SHIPBOT_ARTIFACT"  # set when the job carries a build's artifact


class GitLabProvider(JsonReads):
    """``CIProvider``, ``ChangeSource`` and ``DeployTarget`` (start, poll, cancel) on
    GitLab CI/CD, gitlab.com or self-managed."""

    def __init__(self, config: GitLabConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.time) -> None:
        self._config, self._options = config, options or HttpOptions()
        self._environ, self._clock = environ, clock
        self._found: dict[str, int] = {}  # correlation id -> pipeline id, once seen
        # engine run id -> (first poll, last fetch, what it said): the polling backoff
        self._polled: dict[str, tuple[float, float, RunStatus | None]] = {}
        self._project = f"/projects/{config.project_ref}"

    # -- the calls -------------------------------------------------------------------

    def _secret(self, env: str, setting: str) -> str:
        token = self._environ.get(env)
        if not token:
            raise IntegrationError(
                f"the environment variable {env} ({setting}) is not set: the gitlab "
                f"provider needs it for project {self._config.project}")
        return token

    def _headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._secret(self._config.token_env, "token_env"),
                "Accept": "application/json", "User-Agent": "shipbot"}

    async def _call(self, method: str, path: str, missing: str, *,
                    headers: dict[str, str] | None = None, token_env: str | None = None,
                    **kwargs: Any) -> httpx.Response:
        config = self._config
        async with new_client(PROVIDER, config.api,
                              headers=self._headers() if headers is None else headers,
                              timeout_seconds=config.request_timeout_seconds,
                              options=self._options) as client:
            response = await send(client, PROVIDER, config.label, self._options, method,
                                  config.api + self._project + path, **kwargs)
        self._raise_for_status(response, missing, token_env or config.token_env)
        return response

    def _raise_for_status(self, response: httpx.Response, missing: str,
                          token_env: str) -> None:
        """The shared mapping, with GitLab's ways: ``RateLimit-Reset`` (no ``x-``) on a 429
        without Retry-After, and field errors (``{"message": {"ref": [...]}}``) in words."""
        code, label = response.status_code, self._config.label
        if code == 429 and "retry-after" not in response.headers:
            wait = _reset_wait(response.headers.get("ratelimit-reset"), self._clock())
            if wait is not None:
                until = datetime.fromtimestamp(self._clock() + wait, UTC)
                raise RateLimited(f"{label}'s rate limit was reached; trying again after "
                                  f"{until:%H:%M:%S} UTC ({wait:.0f} s)", wait)
        if 400 <= code < 500 and code not in (401, 403, 404, 429):
            try:
                said = gitlab_message(response.json())
            except ValueError:
                said = response.text
            raise Rejected(f"{label} refused the request (HTTP {code}): "
                           f"{snippet(said) or 'no details'}", code)
        raise_for_status(response, label=label, token_env=token_env, missing=missing,
                         now=self._clock)

    def _unexpected(self, path: str, what: str) -> IntegrationError:
        return IntegrationError(f"{self._config.label} answered {self._project}{path} with "
                                f"{what}; is base_url the GitLab server's URL "
                                "(https://HOST, without /api/v4)?")

    def _missing_project(self) -> str:
        return (f"project {self._config.project} (write its numeric id or its path "
                "group/subgroup/project as in its URL; Shipbot URL-encodes it)")

    # -- CIProvider / DeployTarget ------------------------------------------------------

    async def start(self, job: JobSpec) -> str:
        """Find the pipeline created for ``job.key`` before (a restart), else create it."""
        correlation = run_id_for(job.key)
        ref = self._ref(job)
        if correlation in self._found:
            return str(self._found[correlation])
        found = await self._find(correlation, ref)
        if found is not None:
            return str(found)
        pipeline_id = await self._create(job, ref, correlation)
        self._remember(correlation, pipeline_id)
        return str(pipeline_id)

    def _values(self, job: JobSpec) -> dict[str, str]:
        return {"service": job.service, "env": job.env, "version": job.version}

    def _ref(self, job: JobSpec) -> str:
        if self._config.ref_from_version:
            return job.version
        return render(self._config.ref, self._values(job))

    def _source(self) -> str:
        return "api" if self._config.trigger_token_env is None else "trigger"

    async def _create(self, job: JobSpec, ref: str, correlation: str) -> int:
        values = self._values(job)
        variables = {name: render(template, values)
                     for name, template in self._config.variables.items()}
        if job.artifact:  # a deploy of a build made earlier: what to put on the environment
            variables.setdefault(ARTIFACT_VARIABLE, job.artifact)
        variables[self._config.correlation_variable] = correlation
        trigger_env = self._config.trigger_token_env
        if trigger_env is None:
            body: dict[str, Any] = {"ref": ref, "variables": [
                {"key": key, "value": value} for key, value in variables.items()]}
            response = await self._call("POST", "/pipeline", self._missing_project(),
                                        json=body)
        else:  # the token goes in the body, never in a URL that proxies log
            token = self._secret(trigger_env, "trigger_token_env")
            body = {"token": token, "ref": ref, "variables": variables}
            response = await self._call(
                "POST", "/trigger/pipeline",
                f"{self._missing_project()}, or the trigger token in {trigger_env} is "
                "not valid for it", headers={"Accept": "application/json",
                                             "User-Agent": "shipbot"},
                token_env=trigger_env, json=body)
        try:
            pipeline_id = response.json().get("id")
        except (ValueError, AttributeError):
            pipeline_id = None
        if not isinstance(pipeline_id, int):
            raise self._unexpected("/pipeline", "no pipeline id")
        return pipeline_id

    async def _find(self, correlation: str, ref: str) -> int | None:
        """The pipeline carrying ``correlation`` among the newest ``MAX_CANDIDATES`` that
        this provider's kind of request created on ``ref`` within ``LOOKBACK_SECONDS``."""
        since = datetime.fromtimestamp(self._clock() - LOOKBACK_SECONDS, UTC)
        pipelines = await self._list(
            "/pipelines", self._missing_project(), ref=ref, source=self._source(),
            updated_after=since.strftime("%Y-%m-%dT%H:%M:%SZ"), order_by="id",
            sort="desc", per_page=str(MAX_CANDIDATES))
        for pipeline in pipelines[:MAX_CANDIDATES]:
            if not isinstance(pipeline, dict) or not isinstance(pipeline.get("id"), int):
                continue
            pipeline_id = int(pipeline["id"])
            variables = await self._list(f"/pipelines/{pipeline_id}/variables",
                                         f"pipeline {pipeline_id} in project "
                                         f"{self._config.project}")
            for variable in variables:
                if isinstance(variable, dict) and \
                        variable.get("key") == self._config.correlation_variable and \
                        variable.get("value") == correlation:
                    self._remember(correlation, pipeline_id)
                    return pipeline_id
        return None

    def _remember(self, correlation: str, pipeline_id: int) -> None:
        if len(self._found) >= MAX_REMEMBERED:
            self._found.clear()
        self._found[correlation] = pipeline_id

    def _pipeline_id(self, run_id: str) -> int:
        if not run_id.isdigit():
            raise IntegrationError(f"unknown GitLab pipeline id {run_id[:80]!r}")
        return int(run_id)

    async def poll(self, run_id: str) -> RunStatus:
        """The pipeline's state, asked of GitLab at most every tenth of the pipeline's age
        so far (capped at ``max_poll_seconds``): the engine polls every few seconds, and a
        long build must not spend the token's rate limit."""
        pipeline_id = self._pipeline_id(run_id)
        now = self._clock()
        first, fetched, last = self._polled.get(run_id, (now, 0.0, None))
        pause = min(self._config.max_poll_seconds, (now - first) / 10)
        if last is not None and last.state is RunState.RUNNING and now - fetched < pause:
            return last
        status = await self._fetch(pipeline_id)
        if len(self._polled) >= MAX_REMEMBERED:
            self._polled.clear()
        self._polled[run_id] = (first, now, status)
        return status

    async def _fetch(self, pipeline_id: int) -> RunStatus:
        missing = f"pipeline {pipeline_id} in project {self._config.project}"
        pipeline = await self._object(f"/pipelines/{pipeline_id}", missing)
        state, detail = describe_pipeline(pipeline)
        tail = ""
        if state is RunState.FAILED and pipeline.get("status") == "failed":
            jobs = await self._list(f"/pipelines/{pipeline_id}/jobs", missing,
                                    **{"scope[]": "failed", "per_page": "100"})
            lines = failed_job_lines(jobs)
            if lines:  # the first in the sentence; all of them below it when several
                detail = f"{detail}: {lines[0]}"
                tail = "\n".join(lines) if len(lines) > 1 else ""
        url, sha = pipeline.get("web_url"), pipeline.get("sha")
        return RunStatus(state=state, detail=detail, output_tail=tail,
                         url=url if isinstance(url, str) else None,
                         commit=sha if isinstance(sha, str) and sha else None)

    async def cancel(self, run_id: str) -> None:
        """Cancel the pipeline's jobs; GitLab answers 200 whatever the pipeline's state,
        so cancelling a finished pipeline is no error."""
        pipeline_id = self._pipeline_id(run_id)
        await self._call("POST", f"/pipelines/{pipeline_id}/cancel",
                         f"pipeline {pipeline_id} in project {self._config.project}")
        self._polled.pop(run_id, None)  # look again at the next poll

    async def latest_version(self, service: str) -> str | None:
        latest = self._config.latest_version
        if latest is None:
            return None
        if latest.branch is not None:
            pipelines = await self._list("/pipelines", self._missing_project(),
                                         ref=latest.branch, status="success",
                                         order_by="id", sort="desc", per_page="1")
            sha = pipelines[0].get("sha") if pipelines and isinstance(pipelines[0], dict) \
                else None
            return sha if isinstance(sha, str) and sha else None
        assert latest.tag_pattern is not None
        tags = await self._list("/repository/tags", self._missing_project(),
                                per_page="100")
        names = [str(t.get("name")) for t in tags if isinstance(t, dict)]
        return newest_tag([n for n in names if fnmatch.fnmatchcase(n, latest.tag_pattern)])

    # -- ChangeSource -------------------------------------------------------------------

    async def compare(self, base: str, head: str) -> Comparison:
        """The commits after ``base`` up to ``head`` (the repository compare API)."""
        data = await self._object("/repository/compare",
                                  f"commit, branch or tag {base!r} or {head!r} in "
                                  f"project {self._config.project}", **{"from": base,
                                                                       "to": head})
        return comparison(data, base=base, head=head, project_url=self._config.project_url)


def _reset_wait(reset: str | None, now: float) -> float | None:
    """Seconds until GitLab's ``RateLimit-Reset`` (a Unix time), if it says one."""
    if reset is None:
        return None
    try:
        return max(0.0, float(reset) - now)
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(reset).timestamp() - now)
        except (TypeError, ValueError):
            return None
