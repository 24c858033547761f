"""The Deployment controller as the fake Kubernetes API server plays it (see
``tests.fake_kubernetes``): ReplicaSets per pod template with their revisions, and the
status ``kubectl rollout status`` reads, one stage per tick."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures" / "kubernetes"
REVISION = "deployment.kubernetes.io/revision"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Rollout:
    """Where the controller is with a Deployment's latest change."""

    stage: int = 0  # 0: not observed yet, 1: creating, 2: old terminating, 3: available...
    template_changed: bool = True
    replica_set: str = ""  # the new ReplicaSet's name


class DeploymentController:
    """Mixed into the fake server, whose state (objects, counters) it moves on."""

    namespace: str
    replica_sets: dict[str, dict[str, Any]]
    rollouts: dict[str, Rollout]

    def _next_version(self) -> str:
        raise NotImplementedError

    def _controller_sees(self, dep: dict[str, Any],
                         before: dict[str, Any] | None = None) -> None:
        name = dep["metadata"]["name"]
        changed = before is None or _plain(before) != _plain(dep["spec"]["template"])
        previous = self.rollouts.get(name)
        self.rollouts[name] = Rollout(stage=0, template_changed=changed,
                                      replica_set=previous.replica_set if previous else "")
        if not changed:
            return
        owned = [rs for rs in self.replica_sets.values()
                 if rs["metadata"]["ownerReferences"][0]["uid"] == dep["metadata"]["uid"]]
        top = max((int(rs["metadata"]["annotations"][REVISION]) for rs in owned), default=0)
        same = [rs for rs in owned if _plain(rs["spec"]["template"]) ==
                _plain(dep["spec"]["template"])]
        rs = same[0] if same else self._new_replica_set(dep)
        rs["metadata"]["annotations"][REVISION] = str(top + 1)
        self.rollouts[name].replica_set = rs["metadata"]["name"]
        dep["metadata"].setdefault("annotations", {})[REVISION] = str(top + 1)

    def _new_replica_set(self, dep: dict[str, Any]) -> dict[str, Any]:
        template = copy.deepcopy(dep["spec"]["template"])
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
        pod_hash = digest[:10]
        rs = fixture("replicaset.json")
        name = f"{dep['metadata']['name']}-{pod_hash}"
        labels = {**template["metadata"].get("labels", {}), "pod-template-hash": pod_hash}
        template["metadata"]["labels"] = labels
        rs["metadata"].update(name=name, namespace=self.namespace, labels=labels,
                              uid=uid(name), resourceVersion=self._next_version())
        rs["metadata"]["ownerReferences"][0].update(name=dep["metadata"]["name"],
                                                    uid=dep["metadata"]["uid"])
        rs["spec"].update(template=template, replicas=dep["spec"]["replicas"])
        rs["spec"]["selector"]["matchLabels"] = {
            **dep["spec"]["selector"]["matchLabels"], "pod-template-hash": pod_hash}
        self.replica_sets[name] = rs
        return rs

    def _set_status(self, dep: dict[str, Any]) -> None:
        """The status kubectl reads, for the rollout's stage and its image's fate."""
        rollout = self.rollouts[dep["metadata"]["name"]]
        want = int(dep["spec"]["replicas"])
        tag = _tag(dep)
        stage = rollout.stage if rollout.template_changed else max(rollout.stage, 3)
        if rollout.stage == 0:
            return  # the controller has not seen the change yet: observedGeneration lags
        st = dep["status"]
        st["observedGeneration"] = dep["metadata"]["generation"]
        updated = want if stage >= 2 else max(0, want - 1)
        old = 1 if stage <= 2 and want > 0 else 0
        available = want if stage >= 4 else max(0, want - 1)
        if tag.startswith(("slow", "fail")) and want > 0:  # its pods never become ready
            available, stage = 0, min(stage, 3)
        st.update(replicas=updated + old, updatedReplicas=updated, readyReplicas=available,
                  availableReplicas=available)
        progressing = {"type": "Progressing", "status": "True",
                       "reason": "NewReplicaSetAvailable" if stage >= 4 else
                       "ReplicaSetUpdated", "message": "ReplicaSet is progressing."}
        if tag.startswith("fail") and want > 0 and rollout.stage >= 3:
            progressing.update(status="False", reason="ProgressDeadlineExceeded",
                               message=f'ReplicaSet "{rollout.replica_set}" has timed '
                               "out progressing.")
        available_cond = {"type": "Available", "status": "True" if (available >= want - 1 and
                          available > 0) or want == 0 else "False",
                          "reason": "MinimumReplicasAvailable",
                          "message": "Deployment has minimum availability."}
        st["conditions"] = [available_cond, progressing]


def uid(name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def _plain(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template without the hash label: what the controller compares."""
    plain = copy.deepcopy(template)
    plain.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    return plain


def _tag(dep: dict[str, Any]) -> str:
    images = [c.get("image", "") for c in dep["spec"]["template"]["spec"]["containers"]]
    return images[0].rsplit(":", 1)[-1] if images else ""
