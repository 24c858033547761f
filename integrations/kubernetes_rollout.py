"""What Shipbot reads off a Deployment, as ``kubectl`` reads it (no API calls here).

- ``rollout_status``: ``kubectl rollout status`` for a Deployment (kubectl's
  ``DeploymentStatusViewer``): nothing is decided until ``status.observedGeneration``
  has caught up with ``metadata.generation``; then a ``Progressing`` condition with
  reason ``ProgressDeadlineExceeded`` fails, fewer updated replicas than
  ``spec.replicas``, old replicas still terminating, or updated replicas not yet
  available keep it running; else it rolled out.
- ``previous_template``: ``kubectl rollout undo`` (kubectl's ``DeploymentRollbacker``):
  the Deployment's ReplicaSets (owned by its uid), by their
  ``deployment.kubernetes.io/revision``, the one before the current revision, its pod
  template without the ``pod-template-hash`` label.
- ``RunRef``: the self-describing run id (``<kind>/<namespace>/<name>/<n>/<key>``) that a
  new process can poll with nothing in memory.
- ``keyed_patch``: the one write that must happen once per key, guarded by the
  ``resourceVersion`` that was read.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

from integrations.base import IntegrationError, JobSpec, NoUndo, RunState, RunStatus
from integrations.kube_api import CONFLICT_ATTEMPTS, Conflict

if TYPE_CHECKING:
    from integrations.kube_api import KubeAPI, KubeRef

KEY = "shipbot.io/deploy-key"  # the job whose change the Deployment carries
IMAGE = "shipbot.io/image"  # the image that job set: anything else is someone else's
CANCELLED = "shipbot.io/cancelled"  # the key of a run that was cancelled
TOTAL = "shipbot.io/total-replicas"  # on a canary: stable + canary pods to keep
CHANGE_CAUSE = "kubernetes.io/change-cause"  # what `kubectl rollout history` shows
REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"
TIMED_OUT = "ProgressDeadlineExceeded"

Kind = Literal["rollout", "undo", "health", "weight", "promote", "abort"]
KINDS: tuple[Kind, ...] = ("rollout", "undo", "health", "weight", "promote", "abort")


@dataclass(frozen=True)
class RunRef:
    """One run: what it did (``kind``) to which Deployment, at which generation (for
    ``weight``: the percentage), for which job key."""

    kind: Kind
    namespace: str
    name: str
    number: int
    key: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}/{self.number}/{self.key}"

    @classmethod
    def parse(cls, run_id: str) -> RunRef:
        parts = run_id.split("/", 4)
        if len(parts) != 5 or parts[0] not in KINDS or not parts[3].isdigit() \
                or not all(parts):
            raise IntegrationError(f"unknown Kubernetes run: {run_id[:200]!r} (Shipbot's "
                                   "runs look like rollout/<namespace>/<deployment>/...)")
        return cls(cast(Kind, parts[0]), parts[1], parts[2], int(parts[3]), parts[4])


def notes_of(obj: dict[str, Any]) -> dict[str, str]:
    found = obj.get("metadata", {}).get("annotations")
    return found if isinstance(found, dict) else {}


def replicas_of(obj: dict[str, Any]) -> int:
    """``spec.replicas`` (1 when unset, as the API server defaults it)."""
    return int(obj.get("spec", {}).get("replicas", 1))


def generation(obj: dict[str, Any]) -> int:
    return int(obj.get("metadata", {}).get("generation") or 0)


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    found = template.get("spec", {}).get("containers")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def image_of(template: dict[str, Any], container: str) -> str | None:
    for c in containers(template):
        if c.get("name") == container:
            return str(c.get("image"))
    return None


def condition(dep: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in dep.get("status", {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def _running(detail: str) -> RunStatus:
    return RunStatus(state=RunState.RUNNING, detail=detail)


def rollout_status(dep: dict[str, Any]) -> RunStatus:
    """Where the Deployment's latest rollout stands, decided as kubectl decides it."""
    name = dep.get("metadata", {}).get("name", "?")
    status, spec = dep.get("status", {}), dep.get("spec", {})
    if generation(dep) > int(status.get("observedGeneration") or 0):
        return _running("waiting for the Deployment controller to see the change")
    progressing = condition(dep, "Progressing")
    if progressing is not None and progressing.get("reason") == TIMED_OUT:
        said = progressing.get("message") or "no message"
        return RunStatus(state=RunState.FAILED, detail=f"Deployment {name} exceeded its "
                         f"progress deadline ({TIMED_OUT}: {said})")
    want = int(spec.get("replicas", 1))
    updated = int(status.get("updatedReplicas") or 0)
    replicas = int(status.get("replicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    if updated < want:
        return _running(f"{updated} of {want} new pods updated")
    if replicas > updated:
        return _running(f"{replicas - updated} old pods pending termination")
    if available < updated:
        return _running(f"{available} of {updated} updated pods available")
    return RunStatus(state=RunState.SUCCEEDED,
                     detail=f"Deployment {name} rolled out: {updated} of {want} pods "
                     "updated and available")


def health_status(dep: dict[str, Any]) -> RunStatus:
    """Healthy when ``Available`` is True and the rollout has not missed its deadline."""
    name = dep.get("metadata", {}).get("name", "?")
    progressing = condition(dep, "Progressing")
    if progressing is not None and progressing.get("reason") == TIMED_OUT:
        return RunStatus(state=RunState.FAILED, detail=f"Deployment {name} exceeded its "
                         f"progress deadline: {progressing.get('message') or TIMED_OUT}")
    available = condition(dep, "Available")
    if available is not None and available.get("status") == "True":
        return RunStatus(state=RunState.SUCCEEDED, detail=f"Deployment {name} is Available "
                         f"({available.get('message') or available.get('reason')})")
    why = (available or {}).get("message") or "no Available condition yet"
    return _running(f"Deployment {name} is not Available yet: {why}")


def selector(dep: dict[str, Any]) -> str:
    """The ``labelSelector`` query for the Deployment's ``spec.selector.matchLabels``."""
    labels = dep.get("spec", {}).get("selector", {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def revision(obj: dict[str, Any]) -> int:
    try:
        return int(notes_of(obj).get(REVISION, "0"))
    except ValueError:
        return 0


def owned_history(dep: dict[str, Any], replica_sets: list[dict[str, Any]]
                  ) -> list[dict[str, Any]]:
    """The ReplicaSets the Deployment owns (its uid as controller), newest revision first."""
    uid = dep.get("metadata", {}).get("uid")
    owned = [rs for rs in replica_sets
             if any(ref.get("uid") == uid and ref.get("controller", True)
                    for ref in rs.get("metadata", {}).get("ownerReferences") or [])]
    return sorted(owned, key=revision, reverse=True)


def previous_template(dep: dict[str, Any], history: list[dict[str, Any]], container: str,
                      image: str | None) -> tuple[int, dict[str, Any]]:
    """The revision to go back to and its pod template. kubectl takes the one before the
    current revision; when ``image`` (the version to return to) is known, the newest
    earlier revision running it, and ``NoUndo`` when none does (the engine then deploys
    that version again)."""
    current = revision(dep) or (revision(history[0]) if history else 0)
    earlier = [rs for rs in history if revision(rs) != current]
    name = dep.get("metadata", {}).get("name", "?")
    if not earlier:
        raise NoUndo(
            f"Deployment {name} has no earlier revision to roll back to (only revision "
            f"{current} is kept): deploy the earlier version instead")
    if image is not None:  # only its revision: another would bring back another version
        earlier = [rs for rs in earlier if image_of(_template(rs), container) == image]
        if not earlier:
            kept = ", ".join(str(n) for n in sorted(revision(rs) for rs in history))
            raise NoUndo(
                f"no revision of Deployment {name} that Kubernetes kept runs {image} (kept: "
                f"revisions {kept}): Shipbot deploys {_tag(image)} again instead of kubectl "
                "rollout undo")
    chosen = earlier[0]
    template = copy.deepcopy(_template(chosen))
    template.get("metadata", {}).get("labels", {}).pop(HASH_LABEL, None)
    return revision(chosen), template


def _tag(image: str) -> str:
    """The version in an image reference (what follows the last ``:`` after the last
    ``/``), else the whole reference."""
    name, _, tag = image.rpartition("/")[2].partition("@")[0].rpartition(":")
    return tag if name else image


def _template(rs: dict[str, Any]) -> dict[str, Any]:
    found = rs.get("spec", {}).get("template")
    return found if isinstance(found, dict) else {}


def marks(job: JobSpec, image: str) -> dict[str, str]:
    """The annotations that make a start idempotent and ``rollout history`` readable."""
    return {KEY: job.key, IMAGE: image,
            CHANGE_CAUSE: f"shipbot: {job.service} {job.version} by deployment key "
                          f"{job.key}"}


def image_patch(container: str, image: str, notes: dict[str, str],
                replicas: int | None = None) -> dict[str, Any]:
    """A strategic-merge patch: containers merge by name, so only this one's image
    changes; the annotations go on the Deployment, not on its pod template."""
    spec: dict[str, Any] = {"template": {"spec": {"containers": [
        {"name": container, "image": image}]}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"annotations": notes}, "spec": spec}


def annotation_ops(dep: dict[str, Any], notes: dict[str, str]) -> list[dict[str, Any]]:
    """JSON-patch operations setting ``notes`` among the Deployment's annotations."""
    if not notes_of(dep):
        return [{"op": "add", "path": "/metadata/annotations", "value": notes}]
    return [{"op": "add", "path": "/metadata/annotations/" +
             k.replace("~", "~0").replace("/", "~1"), "value": v} for k, v in notes.items()]


async def keyed_patch(api: KubeAPI, ref: KubeRef, key: str,
                      body: Callable[[dict[str, Any]], dict[str, Any]]
                      ) -> tuple[dict[str, Any], bool]:
    """Read; if the object carries ``key`` already, nothing to do; else a strategic-merge
    patch made from what was read, applied only if nothing changed since (its
    ``resourceVersion``). On 409 read again: a second process with the same key then sees
    the first one's key instead of patching twice. Returns the object and whether it was
    patched now."""
    for _ in range(CONFLICT_ATTEMPTS):
        current = await api.get(ref)
        if notes_of(current).get(KEY) == key:
            return current, False
        patch = body(current)
        patch.setdefault("metadata", {})["resourceVersion"] = \
            current.get("metadata", {}).get("resourceVersion")
        try:
            return await api.patch(ref, patch, "strategic"), True
        except Conflict:
            continue
    raise IntegrationError(f"{ref.label} kept changing while Shipbot updated it "
                           f"({CONFLICT_ATTEMPTS} conflicts in a row); will retry")
