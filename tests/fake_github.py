"""A small stateful GitHub Actions API for tests: dispatch, list/get runs, jobs, cancel, tags.

Answers are built from the fixtures in tests/fixtures/github (shaped as GitHub's REST docs
show them), with the run's own id, status and names filled in. Time moves with ``tick()``
(or with every read of a run, ``auto_advance``): a dispatched run is listed after
``list_delay`` ticks, then goes queued → in_progress → completed. The version input says
how it ends: ``fail*`` fails in job ``build`` at step ``Run Tests``, ``slow*`` runs until
cancelled, anything else succeeds. ``faults`` answers the next requests instead (a rate
limit, a 502, a timeout). ``handler`` serves httpx.MockTransport; ``app`` serves it on
loopback for a whole bot.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from tests.fake_http import serving_app

FIXTURES = Path(__file__).parent / "fixtures" / "github"
FIRST_RUN_ID = 30433642  # the id in GitHub's own example


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def iso(when: float) -> str:
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Run:
    id: int
    number: int
    ref: str
    inputs: dict[str, str]
    created: float
    event: str = "workflow_dispatch"
    head_sha: str = "acb5820ced9479c074f688cc328bf03f341a511d"
    hidden_ticks: int = 0
    status: str = "queued"
    conclusion: str | None = None
    cancel_requested: bool = False


@dataclass
class FakeGitHub:
    token: str
    repo: str = "acme/api"
    workflow: str = "build.yml"
    declared: frozenset[str] = frozenset({"service", "environment", "version", "shipbot_id"})
    run_name: str | None = "{service} {version} ({shipbot_id})"  # the workflow's run-name
    refs: frozenset[str] = frozenset({"main"})
    run_details: bool = True  # False: an older GitHub that refuses return_run_details
    list_delay: int = 0
    auto_advance: bool = False
    clock: Callable[[], float] = time.time
    runs: dict[int, Run] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    # The default branch's history, oldest first: (sha, message, author login or None),
    # what compare answers from; a tag or SHA names a commit by ``commit_names``.
    history: list[tuple[str, str, str | None]] = field(default_factory=list)
    commit_names: dict[str, str] = field(default_factory=dict)  # tag -> sha
    # Every commit's checks: check runs (name, status, conclusion) and commit statuses
    # (context, state), as "List check runs for a Git reference" and "Get the combined
    # status for a specific reference" answer them.
    check_runs: list[tuple[str, str, str | None]] = field(default_factory=list)
    statuses: list[tuple[str, str]] = field(default_factory=list)
    # A GitHub App: its id, its installation, its public key (n, e) to verify JWTs with;
    # installation tokens it issued (token -> expiry) are accepted like ``token``.
    github_app: tuple[int, int, tuple[int, int]] | None = None
    issued: dict[str, float] = field(default_factory=dict)
    jwts: list[dict[str, Any]] = field(default_factory=list)  # the claims it verified
    # Deployments (id -> the created deployment's JSON) and each one's statuses, in order.
    deployments: dict[int, dict[str, Any]] = field(default_factory=dict)
    deployment_statuses: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    deployments_down: bool = False  # the Deployments API answers 502 (the rest works)
    requests: list[httpx.Request] = field(default_factory=list)
    faults: list[httpx.Response | Exception] = field(default_factory=list)

    # -- driving it --------------------------------------------------------------------

    def tick(self) -> None:
        for run in self.runs.values():
            self._advance(run)

    def _advance(self, run: Run) -> None:
        if run.hidden_ticks > 0:  # dispatched, not created yet
            run.hidden_ticks -= 1
            return
        if run.status == "completed":
            return
        version = run.inputs.get("version", "")
        if run.cancel_requested:
            run.status, run.conclusion = "completed", "cancelled"
        elif run.status == "queued":
            run.status = "in_progress"
        elif not version.startswith("slow"):
            run.status = "completed"
            run.conclusion = "failure" if version.startswith("fail") else "success"

    def add_run(self, *, branch: str, sha: str, conclusion: str, event: str = "push") -> Run:
        """A run that happened before the test (for the latest version)."""
        run = self._new_run(branch, {}, event=event)
        run.head_sha, run.status, run.conclusion = sha, "completed", conclusion
        return run

    def _new_run(self, ref: str, inputs: dict[str, str], event: str = "workflow_dispatch"
                 ) -> Run:
        number = len(self.runs) + 1
        run = Run(FIRST_RUN_ID + number - 1, number, ref, inputs, self.clock(), event,
                  hidden_ticks=self.list_delay)
        self.runs[run.id] = run
        return run

    def sent(self, method: str | None = None) -> list[tuple[str, str]]:
        """(method, path?query) of every request, in order."""
        return [(r.method, r.url.raw_path.decode()) for r in self.requests
                if method is None or r.method == method]

    def dispatches(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests
                if r.method == "POST" and r.url.path.endswith("/dispatches")]

    # -- the API -----------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, Exception):
                raise fault
            return fault
        if request.url.path.startswith("/app/installations/"):
            return self._installation_token(request)
        if not self._authorized(request.headers.get("authorization", "")):
            return httpx.Response(401, json=fixture("error_bad_credentials.json"))
        prefix = f"/repos/{self.repo}"
        path = request.url.path
        if not path.startswith(prefix + "/"):
            return _not_found()
        parts = path[len(prefix) + 1:].split("/")
        if self.deployments_down and parts[0] == "deployments":
            return _error(502, "Server Error")
        match request.method, parts:
            case "POST", ["actions", "workflows", workflow, "dispatches"]:
                return self._dispatch(workflow, json.loads(request.content))
            case "GET", ["actions", "workflows", workflow, "runs"]:
                return self._list(workflow, request.url.params)
            case "GET", ["actions", "runs", run_id]:
                return self._get(run_id, self._read, advance=self.auto_advance)
            case "GET", ["actions", "runs", run_id, "jobs"]:
                return self._get(run_id, lambda run: httpx.Response(200, json=self._jobs(run)))
            case "POST", ["actions", "runs", run_id, "cancel"]:
                return self._get(run_id, self._cancel)
            case "GET", ["tags"]:
                return httpx.Response(200, json=[self._tag(name) for name in self.tags])
            case "GET", ["commits", *ref, "check-runs"]:
                return httpx.Response(200, json=self._check_runs("/".join(ref)))
            case "GET", ["commits", *ref, "status"]:
                return httpx.Response(200, json=self._combined("/".join(ref)))
            case "POST", ["deployments"]:
                return self._create_deployment(json.loads(request.content))
            case "GET", ["deployments"]:
                return self._list_deployments(request.url.params)
            case "POST", ["deployments", deployment_id, "statuses"]:
                return self._deployment_status(deployment_id, json.loads(request.content))
            case "GET", ["deployments", deployment_id, "statuses"]:
                found = self.deployment_statuses.get(int(deployment_id)
                                                     if deployment_id.isdigit() else 0)
                return _not_found() if found is None else \
                    httpx.Response(200, json=found[::-1])  # the newest first
            case "GET", ["compare", basehead]:
                return self._compare(basehead, request.url.params)
        return _not_found()

    def _dispatch(self, workflow: str, body: dict[str, Any]) -> httpx.Response:
        if workflow != self.workflow:
            return _not_found()
        if "return_run_details" in body and not self.run_details:
            return _error(422, 'Invalid request.\n\n"return_run_details" is not a permitted '
                               "key.")
        inputs = body.get("inputs") or {}
        unexpected = sorted(set(inputs) - self.declared)
        if unexpected:
            return _error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}")
        if body.get("ref") not in self.refs:
            return _error(422, f"No ref found for: {body.get('ref')}")
        run = self._new_run(body["ref"], inputs)
        if not body.get("return_run_details"):
            return httpx.Response(204)
        details = fixture("dispatch_run_details.json")
        return httpx.Response(200, json=json.loads(self._ours(json.dumps(details), run.id)))

    def _list(self, workflow: str, params: httpx.QueryParams) -> httpx.Response:
        if workflow != self.workflow:
            return _not_found()
        found = [r for r in self.runs.values() if r.hidden_ticks == 0]
        if "event" in params:
            found = [r for r in found if r.event == params["event"]]
        if "branch" in params:
            found = [r for r in found if r.ref == params["branch"]]
        if "status" in params:
            found = [r for r in found if params["status"] in (r.status, r.conclusion)]
        if params.get("created", "").startswith(">="):
            found = [r for r in found if iso(r.created) >= params["created"][2:]]
        found.sort(key=lambda r: r.id, reverse=True)
        page = found[: int(params.get("per_page", "30"))]
        return httpx.Response(200, json={"total_count": len(found),
                                         "workflow_runs": [self._run(r) for r in page]})

    def _get(self, run_id: str, answer: Callable[[Run], httpx.Response],
             advance: bool = False) -> httpx.Response:
        run = self.runs.get(int(run_id)) if run_id.isdigit() else None
        if run is None:
            return _not_found()
        if advance:
            self._advance(run)
        return answer(run)

    def _read(self, run: Run) -> httpx.Response:
        return httpx.Response(200, json=self._run(run))

    def _cancel(self, run: Run) -> httpx.Response:
        if run.status == "completed":
            return httpx.Response(409, json=fixture("error_cannot_cancel.json"))
        run.cancel_requested = True
        return httpx.Response(202, json={})

    def _ours(self, text: str, run_id: int) -> str:
        return text.replace(str(FIRST_RUN_ID), str(run_id)).replace("octo-org/octo-repo",
                                                                     self.repo)

    def _run(self, run: Run) -> dict[str, Any]:
        data = json.loads(self._ours((FIXTURES / "workflow_run.json").read_text(), run.id))
        title = self.run_name.format(**run.inputs) if self.run_name and run.inputs else "Build"
        data.update(run_number=run.number, event=run.event, display_title=title,
                    status=run.status, conclusion=run.conclusion, head_branch=run.ref,
                    head_sha=run.head_sha, created_at=iso(run.created),
                    updated_at=iso(run.created), path=f".github/workflows/{self.workflow}@main")
        return dict(data)

    def _jobs(self, run: Run) -> dict[str, Any]:
        data = copy.deepcopy(fixture("jobs.json"))
        job = data["jobs"][0]
        job.update(run_id=run.id, status=run.status, conclusion=run.conclusion)
        if run.conclusion == "failure":
            for step in job["steps"]:
                if step["name"] == "Run Tests":
                    step["conclusion"] = "failure"
                elif step["number"] > 7:
                    step["conclusion"] = "skipped"
        return dict(data)

    def _authorized(self, header: str) -> bool:
        token = header.removeprefix("Bearer ")
        return token == self.token or self.issued.get(token, 0) > self.clock()

    def _installation_token(self, request: httpx.Request) -> httpx.Response:
        """POST /app/installations/{id}/access_tokens, authenticated by the App's JWT."""
        claims = self._verified_jwt(request.headers.get("authorization", ""))
        if self.github_app is None or claims is None or request.method != "POST":
            return httpx.Response(401, json={
                "message": "A JSON web token could not be decoded",
                "documentation_url": "https://docs.github.com/rest"})
        app_id, installation, _ = self.github_app
        if request.url.path != f"/app/installations/{installation}/access_tokens":
            return _not_found()
        now = self.clock()
        if claims.get("iss") != str(app_id) or not claims["iat"] <= now < claims["exp"] or \
                claims["exp"] - claims["iat"] > 600:
            return httpx.Response(401, json={
                "message": "'Expiration time' claim ('exp') is too far in the future",
                "documentation_url": "https://docs.github.com/rest"})
        self.jwts.append(claims)
        token = f"ghs_{len(self.issued) + 1:036d}"
        self.issued[token] = now + 3600
        data = fixture("installation_token.json")
        data.update(token=token, expires_at=iso(now + 3600),
                    repositories=[{**data["repositories"][0], "full_name": self.repo}])
        return httpx.Response(201, json=data)

    def _verified_jwt(self, header: str) -> dict[str, Any] | None:
        if self.github_app is None or not header.startswith("Bearer "):
            return None
        n, e = self.github_app[2]
        try:
            head, body, signature = header.removeprefix("Bearer ").split(".")
            raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            size = (n.bit_length() + 7) // 8
            em = pow(int.from_bytes(raw, "big"), e, n).to_bytes(size, "big")
            digest = hashlib.sha256(f"{head}.{body}".encode()).digest()
            expected = (b"\x00\x01" + b"\xff" * (size - 54) + b"\x00"
                        + bytes.fromhex("3031300d060960864801650304020105000420") + digest)
            if em != expected or json.loads(_unb64(head)) != {"alg": "RS256", "typ": "JWT"}:
                return None
            return dict(json.loads(_unb64(body)))
        except (ValueError, OverflowError):
            return None

    def states(self, deployment_id: int) -> list[str]:
        """The states a deployment's statuses went through."""
        return [s["state"] for s in self.deployment_statuses.get(deployment_id, [])]

    def _create_deployment(self, body: dict[str, Any]) -> httpx.Response:
        if not isinstance(body.get("ref"), str) or not body["ref"]:
            return _error(422, "Invalid request.\n\n\"ref\" wasn't supplied.")
        if body["ref"].startswith("noref"):  # a version that is no tag, branch or SHA
            return _error(422, f"No ref found for: {body['ref']}")
        number = len(self.deployments) + 1
        data = json.loads(json.dumps(fixture("deployment.json"))
                          .replace("octocat/example", self.repo)
                          .replace("/deployments/1/", f"/deployments/{number}/")
                          .replace("/deployments/1\"", f"/deployments/{number}\""))
        environment = body.get("environment", "production")
        data.update(id=number, ref=body["ref"], sha=self.commit_names.get(body["ref"],
                                                                           data["sha"]),
                    task=body.get("task", "deploy"), payload=body.get("payload", {}),
                    environment=environment, original_environment=environment,
                    description=body.get("description"),
                    created_at=iso(self.clock()), updated_at=iso(self.clock()),
                    production_environment=environment == "production")
        self.deployments[number] = data
        self.deployment_statuses[number] = []
        return httpx.Response(201, json=data)

    def _list_deployments(self, params: httpx.QueryParams) -> httpx.Response:
        found = [d for d in self.deployments.values()
                 if all(params.get(key) in (None, d[key]) for key in ("environment", "ref"))]
        return httpx.Response(200, json=sorted(found, key=lambda d: -d["id"]))

    def _deployment_status(self, deployment_id: str, body: dict[str, Any]) -> httpx.Response:
        number = int(deployment_id) if deployment_id.isdigit() else 0
        deployment = self.deployments.get(number)
        if deployment is None:
            return _not_found()
        allowed = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
        if body.get("state") not in allowed:
            return _error(422, "Invalid request.\n\nstate is not included in the list.")
        status = json.loads(json.dumps(fixture("deployment_status.json"))
                            .replace("octocat/example", self.repo)
                            .replace("/deployments/42", f"/deployments/{number}"))
        status.update(id=sum(map(len, self.deployment_statuses.values())) + 1,
                      state=body["state"], description=body.get("description", ""),
                      environment=body.get("environment", deployment["environment"]),
                      log_url=body.get("log_url", ""), target_url=body.get("log_url", ""),
                      environment_url=body.get("environment_url", ""),
                      created_at=iso(self.clock()), updated_at=iso(self.clock()))
        self.deployment_statuses[number].append(status)
        if body["state"] == "success" and body.get("auto_inactive", True):
            for other, earlier in self.deployments.items():  # what GitHub does itself
                states = self.states(other)
                if other != number and earlier["environment"] == deployment["environment"] \
                        and states and states[-1] == "success":
                    self.deployment_statuses[other].append(
                        {**status, "state": "inactive", "description": "superseded"})
        return httpx.Response(201, json=status)

    def _check_runs(self, ref: str) -> dict[str, Any]:
        template = fixture("check_runs.json")["check_runs"][0]
        runs = []
        for number, (name, status, conclusion) in enumerate(self.check_runs, start=1):
            run = json.loads(json.dumps(template).replace("github/hello-world", self.repo)
                             .replace("/runs/4", f"/runs/{number}")
                             .replace("/check-runs/4", f"/check-runs/{number}"))
            run.update(id=number, name=name, status=status, conclusion=conclusion,
                       head_sha=self.commit_names.get(ref, ref),
                       completed_at=run["completed_at"] if status == "completed" else None)
            runs.append(run)
        return {"total_count": len(runs), "check_runs": runs}

    def _combined(self, ref: str) -> dict[str, Any]:
        data = fixture("combined_status.json")
        template = data["statuses"][0]
        data["statuses"] = [{**template, "id": number, "context": context, "state": state,
                             "target_url": f"https://ci.example.com/{number}/output",
                             "description": f"{context}: {state}"}
                            for number, (context, state) in enumerate(self.statuses, start=1)]
        said = {state for _, state in self.statuses}
        data.update(total_count=len(self.statuses), sha=self.commit_names.get(ref, ref),
                    state="failure" if said & {"failure", "error"} else
                    "pending" if "pending" in said or not said else "success")
        return dict(data)

    def add_commits(self, *messages: str, author: str | None = "octocat",
                    tag: str | None = None) -> list[str]:
        """Commits on the default branch (their SHAs); ``tag`` names the last one."""
        shas = []
        for message in messages:
            sha = f"{len(self.history) + 1:040x}"
            self.history.append((sha, message, author))
            shas.append(sha)
        if tag is not None and shas:
            self.commit_names[tag] = shas[-1]
        return shas

    def _index(self, name: str) -> int | None:
        sha = self.commit_names.get(name, name)
        found = [i for i, (s, _, _) in enumerate(self.history) if s.startswith(sha)]
        return found[0] if len(found) == 1 and len(sha) >= 7 else None

    def _compare(self, basehead: str, params: httpx.QueryParams) -> httpx.Response:
        base, _, head = basehead.partition("...")
        first, last = self._index(base), self._index(head)
        if first is None or last is None:
            return _not_found()
        between = self.history[first + 1:last + 1]
        page = between[: int(params.get("per_page", "250"))]
        data = fixture("compare.json")
        template = data["commits"][0]
        data["commits"] = [self._commit(template, sha, message, login)
                           for sha, message, login in page]
        data.update(total_commits=len(between), ahead_by=len(between), behind_by=0,
                    status="ahead" if between else "identical",
                    html_url=f"https://github.com/{self.repo}/compare/{basehead}",
                    url=f"https://api.github.com/repos/{self.repo}/compare/{basehead}")
        return httpx.Response(200, json=data)

    def _commit(self, template: dict[str, Any], sha: str, message: str,
                login: str | None) -> dict[str, Any]:
        old = template["sha"]
        commit = json.loads(json.dumps(template).replace(old, sha)
                            .replace("octocat/Hello-World", self.repo))
        commit["commit"]["message"] = message
        if login is None:  # an e-mail no GitHub account has: GitHub sends null
            commit["author"] = None
        else:
            commit["author"]["login"] = login
        return dict(commit)

    def _tag(self, name: str) -> dict[str, Any]:
        tag = fixture("tags.json")[0]
        return {**tag, "name": name,
                "zipball_url": tag["zipball_url"].replace("v0.1", name),
                "tarball_url": tag["tarball_url"].replace("v0.1", name)}

    # -- on loopback, for a whole bot ----------------------------------------------------

    def app(self) -> web.Application:
        return serving_app(self.handler)


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _error(status: int, message: str) -> httpx.Response:
    return httpx.Response(status, json={
        "message": message, "status": str(status),
        "documentation_url": "https://docs.github.com/rest/actions/workflows"})


def _not_found() -> httpx.Response:
    return httpx.Response(404, json=fixture("error_not_found.json"))
