"""Reading an Argo Rollout and its AnalysisRuns: where the rollout stands, in words.

Field names are those of the ``argoproj.io/v1alpha1`` API (``RolloutStatus``,
``CanaryStatus``, ``AnalysisRunStatus``); see tests/fixtures/argo/README.md. Everything
here is pure: the provider reads the objects, this module says what they mean.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from integrations.base import Finding, IntegrationError

FINISHED = ("Successful", "Failed", "Error", "Inconclusive")
BAD = ("Failed", "Error")
MAX_VALUES = 5
# "@<since>": the step a weight run went on from; -1 before a ``pause: {}`` at step 0.
_RUN = re.compile(r"argo:(deploy|rollback|weight|promote|continue|abort|promoted|health)"
                  r":(\d+)(?:@(-1|\d+))?:([0-9a-f]{12})")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class RolloutView:
    """The parts of a Rollout Shipbot acts on."""

    generation: int
    observed: bool  # the controller has seen the latest spec
    phase: str  # Healthy, Progressing, Paused, Degraded ("" before the controller saw it)
    message: str
    aborted: bool
    paused: bool  # pause conditions, or spec.paused
    pause_reasons: tuple[str, ...]
    step_index: int | None
    steps: tuple[dict[str, Any], ...]
    current_hash: str
    stable_hash: str
    weight: int  # the canary's effective traffic weight
    step_run: dict[str, Any]  # canary.currentStepAnalysisRunStatus
    background_run: dict[str, Any]
    annotations: dict[str, str]

    @property
    def on_new_version(self) -> bool:
        """Fully promoted: the stable ReplicaSet is the current pod template's."""
        return bool(self.current_hash) and self.current_hash == self.stable_hash

    @property
    def healthy(self) -> bool:
        return self.observed and self.phase == "Healthy" and self.on_new_version and \
            not self.aborted

    @property
    def failed(self) -> bool:
        return self.observed and (self.aborted or self.phase == "Degraded")

    @property
    def waits_for_human(self) -> bool:
        """Paused until someone promotes: ``pause: {}``, an inconclusive analysis, or a
        manual pause; a ``pause: {duration}`` step continues on its own."""
        if not self.paused or self.aborted:
            return False
        step = self.steps[self.step_index] if self.step_index is not None and \
            self.step_index < len(self.steps) else {}
        timed = isinstance(step.get("pause"), dict) and "duration" in step["pause"]
        return not (timed and self.pause_reasons == ("CanaryPauseStep",))

    def where(self) -> str:
        """``Argo step 3/8, canary weight 25 %, Paused``: for the thread and the card."""
        step = f"Argo step {self.step_index}/{len(self.steps)}, " if self.steps and \
            self.step_index is not None else ""
        phase = self.phase or "not yet seen by the controller"
        return f"{step}canary weight {self.weight} %, {phase}"


def view(rollout: dict[str, Any]) -> RolloutView:
    meta, spec, status = (_dict(rollout.get(k)) for k in ("metadata", "spec", "status"))
    canary = _dict(status.get("canary"))
    steps = tuple(_dict(s) for s in _list(_dict(_dict(spec.get("strategy")).get("canary"))
                                          .get("steps")))
    generation = int(meta.get("generation") or 0)
    observed_at = str(status.get("observedGeneration") or "")
    index = status.get("currentStepIndex")
    reasons = tuple(str(_dict(c).get("reason")) for c in _list(status.get("pauseConditions")))
    step_index = index if isinstance(index, int) else None
    aborted = status.get("abort") is True
    return RolloutView(
        generation=generation,
        # A string of the generation since Argo Rollouts 1.0 (a hash before: not compared).
        observed=int(observed_at) >= generation if observed_at.isdigit() else bool(observed_at),
        phase=str(status.get("phase") or ""), message=str(status.get("message") or ""),
        aborted=aborted, paused=bool(reasons) or spec.get("paused") is True,
        pause_reasons=reasons, step_index=step_index, steps=steps,
        current_hash=str(status.get("currentPodHash") or ""),
        stable_hash=str(status.get("stableRS") or ""),
        weight=_weight(canary, steps, step_index, aborted, status),
        step_run=_dict(canary.get("currentStepAnalysisRunStatus")),
        background_run=_dict(canary.get("currentBackgroundAnalysisRunStatus")),
        annotations={str(k): str(v) for k, v in _dict(meta.get("annotations")).items()})


def _weight(canary: dict[str, Any], steps: tuple[dict[str, Any], ...], index: int | None,
            aborted: bool, status: dict[str, Any]) -> int:
    """The traffic router's weight when there is one (``canary.weights``), else the last
    ``setWeight`` reached, as ``kubectl argo rollouts get`` shows it."""
    if status.get("currentPodHash") and status.get("currentPodHash") == status.get("stableRS"):
        return 100  # fully promoted: the new version is the stable one
    routed = _dict(_dict(canary.get("weights")).get("canary")).get("weight")
    if isinstance(routed, int):
        return routed
    if aborted:
        return 0
    reached = steps[: (index if index is not None else 0) + 1]
    weights = [s["setWeight"] for s in reached if isinstance(s.get("setWeight"), int)]
    return weights[-1] if weights else 0


def images(rollout: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, image) of each container of the pod template, in order."""
    pod = _dict(_dict(_dict(rollout.get("spec")).get("template")).get("spec"))
    return [(str(_dict(c).get("name")), str(_dict(c).get("image")))
            for c in _list(pod.get("containers"))]


def last_wait_before(steps: tuple[dict[str, Any], ...], index: int) -> int:
    """The index after the last indefinite ``pause: {}`` before ``index`` (0 if none):
    where the segment of steps that ends at ``index`` began."""
    for i in range(min(index, len(steps)) - 1, -1, -1):
        pause = steps[i].get("pause")
        if isinstance(pause, dict) and "duration" not in pause:
            return i + 1
    return 0


def finding(run: dict[str, Any]) -> Finding:
    """An AnalysisRun's result: its phase, and each metric's phase and measured values."""
    meta, status = _dict(run.get("metadata")), _dict(run.get("status"))
    phase = str(status.get("phase") or "Pending")
    lines = [_metric_line(_dict(m)) for m in _list(status.get("metricResults"))]
    return Finding(name=str(meta.get("name") or "?"), phase=phase,
                   passed=True if phase == "Successful" else False if phase in BAD else None,
                   message=str(status.get("message") or ""), lines=lines)


def _metric_line(metric: dict[str, Any]) -> str:
    values = [str(_dict(m).get("value")) for m in _list(metric.get("measurements"))
              if _dict(m).get("value") is not None][-MAX_VALUES:]
    messages = [str(_dict(m).get("message")) for m in _list(metric.get("measurements"))
                if _dict(m).get("message")]
    text = f"{metric.get('name')}: {metric.get('phase') or 'Pending'}"
    if values:
        text += f", measured {', '.join(values)}"
    if metric.get("message") or messages:
        text += f" ({metric.get('message') or messages[-1]})"
    return text


def failure_text(found: Finding) -> str:
    """The rollback reason: the AnalysisRun, its failed metrics and their values."""
    bad = [line for line in found.lines if line.split(": ", 1)[-1].startswith(BAD)]
    said = "; ".join(bad or found.lines) or "no metric results"
    why = f" ({found.message})" if found.message and found.message not in said else ""
    return f"Argo AnalysisRun {found.name} {found.phase}: {said}{why}"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def in_steps(run: dict[str, Any], steps: tuple[int, int], background: bool) -> bool:
    """Whether an AnalysisRun belongs to the steps ``[from, to)`` (by its labels)."""
    labels = run.get("metadata", {}).get("labels") or {}
    index = str(labels.get("step-index", ""))
    if labels.get("rollout-type") == "Background":
        return background
    return index.isdigit() and steps[0] <= int(index) < steps[1]


def waiting_text(now: RolloutView) -> str:
    """Why Argo waits, for the card: the same words as long as it waits at that step."""
    step = f"step {now.step_index}/{len(now.steps)}" if now.step_index is not None else \
        "its current step"
    why = "its analysis was inconclusive" if "InconclusiveAnalysisRun" in now.pause_reasons \
        else "a pause step" if now.pause_reasons else "paused by hand (spec.paused)"
    return f"Argo waits at {step} (canary weight {now.weight} %: {why})."


def parse_run(run_id: str) -> tuple[str, int, int | None, str]:
    match = _RUN.fullmatch(run_id)
    if match is None:
        raise IntegrationError(f"unknown Argo Rollouts run: {run_id!r}")
    kind, number, since, h = match.groups()
    return kind, int(number), int(since) if since is not None else None, h


def first_step(kind: str, number: int, since: int | None, steps: tuple[dict[str, Any], ...],
                end: int) -> int:
    """The first step a run went through (its AnalysisRuns are the run's to report): past
    the pause it promoted, none for a full promotion, since the last wait for a deploy."""
    if kind == "weight":
        return (since if since is not None else number) + 1
    if kind == "continue":
        return number + 1
    return len(steps) if kind == "promote" else last_wait_before(steps, end)


def promoted_text(image: str, now: RolloutView) -> str:
    """Why an abort cannot help: the new version is the stable one already."""
    return (f"Argo had already promoted {image} fully (it is the stable ReplicaSet "
            f"{now.stable_hash}): abort cannot move traffic back; roll back with "
            "`/rollback`, which deploys the earlier image again")
