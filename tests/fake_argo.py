"""A small stateful Argo Rollouts API for tests: one ``Rollout`` and its AnalysisRuns,
with a controller that moves the rollout on one step per reconcile.

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
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "argo"
ROOT = "/apis/argoproj.io/v1alpha1/namespaces"
USER = "system:serviceaccount:shipbot:shipbot"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def pod_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


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
class FakeArgo:
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

    @property
    def status(self) -> dict[str, Any]:
        return self.rollout["status"]  # type: ignore[no-any-return]

    def image(self, container: str = "api") -> str:
        for c in self.rollout["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                return str(c["image"])
        raise KeyError(container)

    def writes(self) -> list[tuple[str, str, Any]]:
        """(path, content type, body) of each PATCH, in order."""
        return [(p, t, b) for m, p, t, b in self.requests if m == "PATCH"]

    def set_steps(self, steps: list[dict[str, Any]]) -> None:
        self.rollout["spec"]["strategy"]["canary"]["steps"] = steps
        self.status["currentStepIndex"] = len(steps)

    # -- the controller ------------------------------------------------------------------

    def reconcile(self) -> None:
        status, spec = self.status, self.rollout["spec"]
        steps = spec["strategy"]["canary"]["steps"]
        if status.get("observedGeneration") != str(self.rollout["metadata"]["generation"]):
            self._observe()
            return
        if status.get("phase") == "Healthy" or status.get("phase") == "Degraded":
            return
        if status.get("abort"):
            self._aborted("")
        elif status.get("promoteFull"):
            self._complete()
        elif self._tag().startswith("slow"):
            status["message"] = "more replicas need to be updated"
        elif status.get("pauseConditions") or spec.get("paused"):
            self._paused(steps)
        elif status.get("controllerPause"):  # it paused, and someone cleared the pause
            status.pop("controllerPause")
            status["currentStepIndex"] += 1
            status.update(phase="Progressing", message="")
        elif status["currentStepIndex"] >= len(steps):
            self._complete()
        else:
            self._step(steps[status["currentStepIndex"]])

    def _tag(self) -> str:
        return self.image().rpartition(":")[2]

    def _observe(self) -> None:
        status = self.status
        status["observedGeneration"] = str(self.rollout["metadata"]["generation"])
        new = pod_hash(self.rollout["spec"]["template"])
        if new == status["currentPodHash"]:
            return
        status["currentPodHash"] = new  # a new revision starts afresh (abort reset)
        for key in ("abort", "pauseConditions", "promoteFull"):
            status.pop(key, None)
        status["canary"].pop("currentStepAnalysisRunStatus", None)
        if new == status["stableRS"]:  # back to the stable template: no steps
            self._complete()
            return
        self.revision += 1
        status.update(currentStepIndex=0, phase="Progressing",
                      message="more replicas need to be updated")
        status["canary"]["weights"]["canary"].update(podTemplateHash=new, weight=0)

    def _set_weight(self, weight: int) -> None:
        self.status["canary"]["weights"]["canary"]["weight"] = weight
        self.status["canary"]["weights"]["stable"]["weight"] = 100 - weight

    def _step(self, step: dict[str, Any]) -> None:
        status = self.status
        if "setWeight" in step:
            self._set_weight(step["setWeight"])
            status["currentStepIndex"] += 1
            status.update(phase="Progressing", message="")
        elif "pause" in step:
            status["pauseConditions"] = [{"reason": "CanaryPauseStep",
                                          "startTime": "2026-11-02T07:05:00Z"}]
            status["controllerPause"] = True
            status.update(phase="Paused", message="CanaryPauseStep")
            self._pause_left = self.pause_polls
        elif "analysis" in step:
            self._analysis(step)

    def _paused(self, steps: list[dict[str, Any]]) -> None:
        status = self.status
        index = status["currentStepIndex"]
        step = steps[index] if index < len(steps) else {}
        timed = "duration" in (step.get("pause") or {})
        if status.get("pauseConditions") and timed and not self.rollout["spec"].get("paused"):
            self._pause_left -= 1
            if self._pause_left > 0:
                return
            status.pop("pauseConditions", None)
            status.pop("controllerPause", None)
            status["currentStepIndex"] += 1
            status.update(phase="Progressing", message="")

    def _analysis(self, step: dict[str, Any]) -> None:
        status = self.status
        index = status["currentStepIndex"]
        name = f"{self.name}-{status['currentPodHash']}-{self.revision}-{index}"
        current = status["canary"].get("currentStepAnalysisRunStatus")
        if current is None or current.get("name") != name:
            self.runs[name] = self._new_run(name, index)
            status["canary"]["currentStepAnalysisRunStatus"] = {"name": name,
                                                                "status": "Running"}
            status.update(phase="Progressing", message="")
            return
        run = self._finish_run(self.runs[name])
        current.update(status=run["status"]["phase"], message=run["status"].get("message", ""))
        if run["status"]["phase"] == "Failed":
            self._aborted(f'Metric "{run["status"]["metricResults"][0]["name"]}" assessed '
                          "Failed due to failed (1) > failureLimit (0)")
        else:
            status["currentStepIndex"] += 1

    def _new_run(self, name: str, index: int) -> dict[str, Any]:
        run = fixture("analysisrun.json")
        run["metadata"].update(name=name, creationTimestamp=f"2026-11-02T07:{index:02d}:00Z")
        run["metadata"]["labels"].update({"rollouts-pod-template-hash":
                                          self.status["currentPodHash"],
                                          "step-index": str(index)})
        run["status"] = {"phase": "Running", "startedAt": "2026-11-02T07:00:00Z"}
        return run

    def _finish_run(self, run: dict[str, Any]) -> dict[str, Any]:
        if run["status"]["phase"] != "Running":
            return run
        done = fixture("analysisrun.json")["status"]
        if self._tag().startswith("fail"):
            metric = done["metricResults"][0]
            metric.update(phase="Failed", successful=1, failed=1, count=2)
            metric["measurements"] = [*metric["measurements"][:1], {
                "phase": "Failed", "value": "[0.412]", "startedAt": "2026-11-02T07:01:00Z",
                "finishedAt": "2026-11-02T07:01:00Z"}]
            done.update(phase="Failed", message=f'Metric "{metric["name"]}" assessed Failed '
                        "due to failed (1) > failureLimit (0)",
                        runSummary={"count": 1, "failed": 1})
        run["status"] = done
        return run

    def _aborted(self, why: str) -> None:
        status = self.status
        status.update(abort=True, currentStepIndex=0, phase="Degraded",
                      message=f"RolloutAborted: Rollout aborted update to revision "
                      f"{self.revision}" + (f": {why}" if why else ""))
        status.pop("pauseConditions", None)
        status.pop("controllerPause", None)
        self._set_weight(0)

    def _complete(self) -> None:
        status = self.status
        steps = self.rollout["spec"]["strategy"]["canary"]["steps"]
        status.update(stableRS=status["currentPodHash"], currentStepIndex=len(steps),
                      phase="Healthy", message="")
        for key in ("promoteFull", "pauseConditions", "abort", "controllerPause"):
            status.pop(key, None)
        self._set_weight(0)
        status["canary"]["weights"]["stable"]["podTemplateHash"] = status["currentPodHash"]

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
        async def serve(request: web.Request) -> web.Response:
            forwarded = httpx.Request(request.method, str(request.url),
                                      headers=dict(request.headers),
                                      content=await request.read())
            answer = self.handler(forwarded)
            return web.Response(status=answer.status_code, body=answer.content,
                                content_type="application/json")

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        return app


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
