"""The fake Argo Rollouts controller (tests/fake_argo.py): one reconcile moves the
Rollout on as the real controller would, its rules listed in fake_argo's docstring."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "argo"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def pod_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class ArgoController:
    """The controller's half of ``FakeArgo``: it owns ``status``, as Argo does."""

    rollout: dict[str, Any]
    runs: dict[str, dict[str, Any]]
    name: str
    revision: int
    pause_polls: int
    _pause_left: int

    @property
    def status(self) -> dict[str, Any]:
        return self.rollout["status"]  # type: ignore[no-any-return]

    def image(self, container: str = "api") -> str:
        for c in self.rollout["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                return str(c["image"])
        raise KeyError(container)

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
