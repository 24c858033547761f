"""A small stateful GitLab REST API (v4) for tests: create or trigger a pipeline, list and
get pipelines, their variables and jobs, cancel, tags, compare.

Answers are built from the fixtures in tests/fixtures/gitlab (shaped as GitLab's API docs
show them), with each pipeline's own id, status, ref and sha filled in. The project is
reached by its id or its URL-encoded path (``acme%2Fapi``), as on GitLab; an unencoded path
is a 404. Time moves with ``tick()`` (or with every read of a pipeline, ``auto_advance``):
created → pending → running → success. The ``SHIPBOT_VERSION`` variable says how a
pipeline ends: ``fail*`` fails in job ``teaspoon`` of stage ``test``, ``slow*`` runs until
cancelled, anything else succeeds. ``faults`` answers the next requests instead (a rate
limit, a 502, a timeout). ``handler`` serves httpx.MockTransport; ``app`` serves it on
loopback for a whole bot.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from aiohttp import web

from tests.fake_http import serving_app

FIXTURES = Path(__file__).parent / "fixtures" / "gitlab"
FIRST_PIPELINE_ID = 287  # the id in GitLab's "Get a single pipeline" example
WEB = "https://gitlab.example.com"
VERSION_VARIABLE = "SHIPBOT_VERSION"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Pipeline:
    id: int
    iid: int
    ref: str
    variables: dict[str, str]
    created: float
    source: str = "api"
    sha: str = "50f0acb76a40e34a4ff304f7347dcc6587da8a14"
    status: str = "created"
    cancel_requested: bool = False

    @property
    def version(self) -> str:
        return self.variables.get(VERSION_VARIABLE, "")


@dataclass
class FakeGitLab:
    token: str
    trigger_token: str | None = None
    project: str = "acme/api"
    project_id: int = 21
    api_prefix: str = "/api/v4"
    refs: frozenset[str] = frozenset({"main"})
    auto_advance: bool = False
    clock: Callable[[], float] = time.time
    pipelines: dict[int, Pipeline] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)  # commits, oldest first
    requests: list[httpx.Request] = field(default_factory=list)
    faults: list[httpx.Response | Exception] = field(default_factory=list)

    # -- driving it --------------------------------------------------------------------

    def tick(self) -> None:
        for pipeline in self.pipelines.values():
            self._advance(pipeline)

    def _advance(self, pipeline: Pipeline) -> None:
        if pipeline.status in ("success", "failed", "canceled", "skipped"):
            return
        if pipeline.cancel_requested:
            pipeline.status = "canceled"
        elif pipeline.status == "created":
            pipeline.status = "pending"
        elif pipeline.status == "pending":
            pipeline.status = "running"
        elif not pipeline.version.startswith("slow"):
            pipeline.status = "failed" if pipeline.version.startswith("fail") else "success"

    def add_pipeline(self, *, ref: str, sha: str, status: str, source: str = "push",
                     variables: dict[str, str] | None = None,
                     created: float | None = None) -> Pipeline:
        """A pipeline that happened before the test (the latest version, a search)."""
        pipeline = self._new(ref, variables or {}, source)
        pipeline.sha, pipeline.status = sha, status
        if created is not None:
            pipeline.created = created
        return pipeline

    def _new(self, ref: str, variables: dict[str, str], source: str) -> Pipeline:
        number = len(self.pipelines) + 1
        pipeline = Pipeline(FIRST_PIPELINE_ID + number - 1, 143 + number, ref, variables,
                            self.clock(), source)
        self.pipelines[pipeline.id] = pipeline
        return pipeline

    def sent(self, method: str | None = None) -> list[tuple[str, str]]:
        """(method, raw path?query) of every request, in order."""
        return [(r.method, r.url.raw_path.decode()) for r in self.requests
                if method is None or r.method == method]

    def created(self) -> list[dict[str, Any]]:
        """The bodies of every request that created a pipeline."""
        return [json.loads(r.content) for r in self.requests if r.method == "POST"
                and r.url.path.endswith(("/pipeline", "/trigger/pipeline"))]

    # -- the API -----------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        raw = request.url.raw_path.decode().split("?")[0]
        prefix = f"{self.api_prefix}/projects/"
        if not raw.startswith(prefix):
            return _error(404, "404 Not Found")
        project, _, rest = raw[len(prefix):].partition("/")
        if project not in (str(self.project_id), quote(self.project, safe="")):
            return _json(404, fixture("error_project_not_found.json"))
        parts = rest.split("/")
        if request.method == "POST" and parts == ["trigger", "pipeline"]:
            return self._trigger(_body(request))
        if request.headers.get("private-token") != self.token:
            return _json(401, fixture("error_unauthorized.json"))
        params = request.url.params
        match request.method, parts:
            case "POST", ["pipeline"]:
                body = _body(request)
                variables = {v["key"]: v["value"] for v in body.get("variables") or []}
                return self._create(body.get("ref"), variables, "api")
            case "GET", ["pipelines"]:
                return self._list(params)
            case "GET", ["pipelines", pipeline_id]:
                return self._get(pipeline_id, self._read, advance=self.auto_advance)
            case "GET", ["pipelines", pipeline_id, "variables"]:
                return self._get(pipeline_id, lambda p: _json(200, [
                    {"key": k, "variable_type": "env_var", "value": v}
                    for k, v in p.variables.items()]))
            case "GET", ["pipelines", pipeline_id, "jobs"]:
                return self._get(pipeline_id, lambda p: _json(200, self._jobs(p, params)))
            case "POST", ["pipelines", pipeline_id, "cancel"]:
                return self._get(pipeline_id, self._cancel)
            case "GET", ["repository", "tags"]:
                return _json(200, [self._tag(name) for name in self.tags])
            case "GET", ["repository", "compare"]:
                return self._compare(params)
        return _error(404, "404 Not Found")

    def _trigger(self, body: dict[str, Any]) -> httpx.Response:
        if self.trigger_token is None or body.get("token") != self.trigger_token:
            return _error(404, "404 Not Found")
        return self._create(body.get("ref"), dict(body.get("variables") or {}), "trigger")

    def _create(self, ref: Any, variables: dict[str, str], source: str) -> httpx.Response:
        if not ref:
            return _json(400, fixture("error_missing_attribute.json"))
        if ref not in self.refs:
            return _json(400, fixture("error_reference_not_found.json"))
        pipeline = self._new(ref, variables, source)
        data = fixture("create_pipeline.json")
        data.update(self._fields(pipeline))
        return _json(201, data)

    def _fields(self, pipeline: Pipeline) -> dict[str, Any]:
        return {"id": pipeline.id, "iid": pipeline.iid, "project_id": self.project_id,
                "ref": pipeline.ref, "sha": pipeline.sha, "status": pipeline.status,
                "source": pipeline.source, "created_at": iso(pipeline.created),
                "updated_at": iso(pipeline.created),
                "web_url": f"{WEB}/{self.project}/-/pipelines/{pipeline.id}"}

    def _list(self, params: httpx.QueryParams) -> httpx.Response:
        found = list(self.pipelines.values())
        for key in ("ref", "source", "status"):
            if key in params:
                found = [p for p in found if getattr(p, key) == params[key]]
        if "updated_after" in params:
            found = [p for p in found if iso(p.created) > params["updated_after"]]
        found.sort(key=lambda p: p.id, reverse=params.get("sort", "desc") == "desc")
        template = fixture("pipelines.json")[0]
        page = found[: int(params.get("per_page", "20"))]
        return _json(200, [{**template, **{k: v for k, v in self._fields(p).items()
                                           if k in template}} for p in page])

    def _get(self, pipeline_id: str, answer: Callable[[Pipeline], httpx.Response],
             advance: bool = False) -> httpx.Response:
        pipeline = self.pipelines.get(int(pipeline_id)) if pipeline_id.isdigit() else None
        if pipeline is None:
            return _json(404, fixture("error_not_found.json"))
        if advance:
            self._advance(pipeline)
        return answer(pipeline)

    def _read(self, pipeline: Pipeline) -> httpx.Response:
        data = fixture("pipeline.json")
        data.update(self._fields(pipeline))
        data["detailed_status"]["group"] = pipeline.status
        return _json(200, data)

    def _cancel(self, pipeline: Pipeline) -> httpx.Response:
        if pipeline.status not in ("success", "failed", "canceled", "skipped"):
            pipeline.cancel_requested = True
        return self._read(pipeline)  # 200 whatever the state, as the docs say

    def _jobs(self, pipeline: Pipeline, params: httpx.QueryParams) -> list[dict[str, Any]]:
        jobs = copy.deepcopy(fixture("jobs.json"))  # rspec:other, teaspoon
        for job in jobs:
            job["pipeline"].update(id=pipeline.id, ref=pipeline.ref, sha=pipeline.sha,
                                   status=pipeline.status)
            job["status"], job["failure_reason"] = "success", None
        if pipeline.status == "failed":
            jobs[1]["status"], jobs[1]["failure_reason"] = "failed", "script_failure"
        scopes = params.get_list("scope[]")
        jobs.sort(key=lambda j: j["id"], reverse=True)  # newest first, as GitLab lists
        return [j for j in jobs if not scopes or j["status"] in scopes]

    def _tag(self, name: str) -> dict[str, Any]:
        return {**fixture("tags.json")[0], "name": name}

    def _compare(self, params: httpx.QueryParams) -> httpx.Response:
        ids = [c["id"] for c in self.history]
        base, head = params.get("from"), params.get("to")
        if base not in ids or head not in ids:
            return _error(404, "404 Ref Not Found")
        commits = self.history[ids.index(base) + 1: ids.index(head) + 1]
        data = fixture("compare.json")
        data.update(commits=commits, diffs=[], compare_same_ref=base == head,
                    commit=commits[-1] if commits else None)
        return _json(200, data)

    # -- on loopback, for a whole bot ----------------------------------------------------

    def app(self) -> web.Application:
        return serving_app(self.handler)


def commit(n: int, title: str, *, author: str = "Example User",
           message: str | None = None) -> dict[str, Any]:
    """A commit as the compare example shows it, the ``n``th of a history."""
    sha = f"{n:040x}"
    data = {**fixture("compare.json")["commits"][0], "id": sha, "short_id": sha[:11],
            "title": title, "author_name": author}
    if message is not None:
        data["message"] = message
    return data


def _body(request: httpx.Request) -> dict[str, Any]:
    try:
        body = json.loads(request.content or b"{}")
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json(status: int, body: Any) -> httpx.Response:
    return httpx.Response(status, json=body)


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={"message": message})
