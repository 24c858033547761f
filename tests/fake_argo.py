"""A small stateful Argo Rollouts API for tests: one ``Rollout`` and its AnalysisRuns,
with a controller (tests/fake_argo_controller.py) that moves it on one step per reconcile.

Objects are built from tests/fixtures/argo (shaped as the Argo Rollouts specification
and ``pkg/apis/rollouts/v1alpha1`` define them; see its README). The API answers as a
Kubernetes API server does for a custom resource with a status subresource: merge and
JSON patches (a strategic merge patch is refused with 415), ``status`` only through
``/status``, ``generation`` bumped by spec changes, ``resourceVersion`` checked (409),
``Status`` errors (401, 403 naming the user, 404). ``reconcile()`` is one pass of the
controller (also run by every GET of the Rollout while ``auto_advance``):

- a new pod template (image) starts a revision at step 0; the stable template again is
  a rollback: Argo goes straight back to the stable ReplicaSet, skipping the steps;
- ``setWeight`` sets the canary weight; ``pause: {}`` pauses (``CanaryPauseStep``) until
  promoted; ``pause: {duration}`` continues after ``pause_polls`` reconciles;
- ``analysis`` creates an AnalysisRun that ends on the next reconcile: ``Failed`` (with
  its measured values) when the image tag starts with ``fail``, else ``Successful``; a
  failed one aborts the rollout (``Degraded``), as Argo does;
- images tagged ``slow*`` never become available (the rollout stays ``Progressing``);
- promote (``pauseConditions: null``: the controller, which set ``controllerPause``
  when it paused, finds the condition gone and goes on), ``promoteFull``, ``abort`` and retry
  (``abort: false``) act as the controller does on them.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from tests.fake_argo_controller import ArgoController, fixture, pod_hash
from tests.fake_http import serving_app

ROOT = "/apis/argoproj.io/v1alpha1/namespaces"
USER = "system:serviceaccount:shipbot:shipbot"


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 merge patch, in place: null deletes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


@dataclass
class FakeArgo(ArgoController):
    token: str = "k8s-token-abcdef"
    namespace: str = "prod"
    name: str = "api"
    auto_advance: bool = True
    pause_polls: int = 2
    deny: set[str] = field(default_factory=set)  # "patch rollouts/status", "list analysisruns"
    faults: list[int] = field(default_factory=list)  # the next answers' codes (0: as usual)
    requests: list[tuple[str, str, str, Any]] = field(default_factory=list)
    rollout: dict[str, Any] = field(default_factory=lambda: fixture("rollout.json"))
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    revision: int = 1
    _pause_left: int = 0

    def __post_init__(self) -> None:
        template = self.rollout["spec"]["template"]
        self.rollout["status"]["currentPodHash"] = self.rollout["status"]["stableRS"] = \
            pod_hash(template)
        for side in ("canary", "stable"):
            self.rollout["status"]["canary"]["weights"][side]["podTemplateHash"] = \
                pod_hash(template)

    # -- what tests look at -----------------------------------------------------------

    def writes(self) -> list[tuple[str, str, Any]]:
        """(path, content type, body) of each PATCH, in order."""
        return [(p, t, b) for m, p, t, b in self.requests if m == "PATCH"]

    def set_steps(self, steps: list[dict[str, Any]]) -> None:
        self.rollout["spec"]["strategy"]["canary"]["steps"] = steps
        self.status["currentStepIndex"] = len(steps)

    # -- the API ---------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        kind = request.headers.get("content-type", "")
        self.requests.append((request.method, request.url.path, kind, body))
        code = self.faults.pop(0) if self.faults else 0  # 0: answer this one as usual
        if code:
            return _status(code, {409: "status_conflict.json",
                                  422: "status_invalid.json"}.get(code, "status_invalid.json"))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"kind": "Status", "code": 401,
                                             "message": "Unauthorized", "reason": "Unauthorized"})
        path = request.url.path
        rollout = f"{ROOT}/{self.namespace}/rollouts/{self.name}"
        if path in (rollout, f"{rollout}/status"):
            return self._rollout(request.method, path.endswith("/status"), kind, body)
        if path.startswith(f"{ROOT}/{self.namespace}/analysisruns"):
            return self._analysis_runs(request, path)
        return _status(404, "status_not_found.json")

    def _denied(self, verb: str, resource: str) -> httpx.Response | None:
        if f"{verb} {resource}" not in self.deny:
            return None
        answer = fixture("status_forbidden.json")
        answer["message"] = (f'{resource.split("/")[0]}.argoproj.io "{self.name}" is forbidden: '
                             f'User "{USER}" cannot {verb} resource "{resource}" in API group '
                             f'"argoproj.io" in the namespace "{self.namespace}"')
        return httpx.Response(403, json=answer)

    def _rollout(self, method: str, status: bool, kind: str, body: Any) -> httpx.Response:
        resource = "rollouts/status" if status else "rollouts"
        verb = {"GET": "get", "PATCH": "patch"}.get(method, method.lower())
        denied = self._denied(verb, resource)
        if denied is not None:
            return denied
        if method == "GET":
            if self.auto_advance:
                self.reconcile()
            return httpx.Response(200, json=self.rollout)
        if method != "PATCH":
            return httpx.Response(405, json={"kind": "Status", "code": 405})
        return self._patch(status, kind, body)

    def _patch(self, status: bool, kind: str, body: Any) -> httpx.Response:
        if kind == "application/strategic-merge-patch+json":
            return _status(415, "status_unsupported_media.json")
        before = copy.deepcopy(self.rollout)
        if kind == "application/json-patch+json":
            failed = _json_patch(self.rollout, body)
            if failed:
                self.rollout = before
                return _status(422, "status_invalid.json", failed)
        else:
            wanted = (body or {}).get("metadata", {}).get("resourceVersion")
            if wanted is not None and wanted != self.rollout["metadata"]["resourceVersion"]:
                return _status(409, "status_conflict.json")
            part = {"status": body.get("status")} if status else \
                {k: v for k, v in body.items() if k != "status"}
            merge(self.rollout, part)
        self.rollout["status"] = self.rollout.get("status") or {}
        if not status:
            self.rollout["status"] = before["status"]  # the status subresource owns it
        if self.rollout["spec"] != before["spec"]:
            self.rollout["metadata"]["generation"] += 1
        meta = self.rollout["metadata"]
        meta["resourceVersion"] = str(int(before["metadata"]["resourceVersion"]) + 1)
        return httpx.Response(200, json=self.rollout)

    def _analysis_runs(self, request: httpx.Request, path: str) -> httpx.Response:
        name = path.rpartition("/analysisruns")[2].strip("/")
        denied = self._denied("get" if name else "list", "analysisruns")
        if denied is not None:
            return denied
        if name:
            run = self.runs.get(name)
            return httpx.Response(200, json=run) if run else \
                _status(404, "status_not_found.json")
        wanted = request.url.params.get("labelSelector", "")
        key, _, value = wanted.partition("=")
        items = [r for r in self.runs.values() if not key or
                 r["metadata"]["labels"].get(key) == value]
        return httpx.Response(200, json={"apiVersion": "argoproj.io/v1alpha1",
                                         "kind": "AnalysisRunList", "metadata": {},
                                         "items": items})

    # -- on loopback, for a whole bot ----------------------------------------------------

    def app(self) -> web.Application:
        return serving_app(self.handler)


def _json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> str:
    """RFC 6902 (test, add, replace) in place; the failed operation's words, or ""."""
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~")
                          for p in op["path"].split("/")[1:]]
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.get(part)
            if node is None:
                return f"the path {op['path']} does not exist"
        key: Any = int(last) if isinstance(node, list) else last
        if op["op"] == "test" and node[key] != op["value"]:
            return f"the test at {op['path']} failed"
        if op["op"] in ("add", "replace"):
            node[key] = op["value"]
    return ""


def _status(code: int, name: str, message: str | None = None) -> httpx.Response:
    answer = fixture(name)
    answer["code"] = code
    if message:
        answer["message"] = message
    return httpx.Response(code, json=answer)
