"""Canary releases of a Deployment without a service mesh.

The new version runs in a second Deployment, ``<deployment>-canary``, made from the
stable one's spec: the same selector and pod labels plus ``track: canary`` (overriding a
``track`` label the stable pods may have), and the new image. A canary Deployment an
earlier release left is given the stable one's whole pod template of now again (env,
sidecars, resources changed since), so the canary runs what promote will ship.

- ``mode: replicas``: a Service selecting the labels both share (not ``track``) sends
  each pod an equal share, so the canary's share of the pods is its share of the
  traffic. ``set_weight(w)`` gives the canary ``round(w x total / 100)`` pods (at least
  one for w > 0) and the stable one the rest, so the total stays what it was when the
  canary started (``shipbot.io/total-replicas`` on the canary).
- ``mode: gateway``: exact weights on an HTTPRoute (Gateway API v1) whose rule sends to
  ``stable_service`` and ``canary_service``; the canary runs as many pods as the stable.

``promote`` sets the stable Deployment to the new image (and its full replica count);
once that rollout is done its poll retires the canary (route back to 100/0, canary
scaled to 0: no delete permission needed). ``abort`` retires the canary at once and
gives the stable Deployment its pods back. Each call is keyed by ``job.key`` through the
canary's ``shipbot.io/deploy-key``.
"""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.http import NotFound
from integrations.kube_api import KubeRef
from integrations.kubernetes_rollout import (
    CHANGE_CAUSE,
    IMAGE,
    KEY,
    TOTAL,
    RunRef,
    annotation_ops,
    generation,
    image_patch,
    keyed_patch,
    marks,
    notes_of,
    replicas_of,
    rollout_status,
)
from integrations.kubernetes_route import Route

if TYPE_CHECKING:
    from integrations.kube_api import KubeAPI
    from integrations.kubernetes_config import KubernetesConfig

TRACK = "track"
_DROP = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields",
         "selfLink", "ownerReferences")


def canary_replicas(weight: int, total: int) -> int:
    """``round(weight x total / 100)`` (halves up), at least one pod for any weight > 0."""
    if weight <= 0:
        return 0
    return min(total, max(1, math.floor(weight * total / 100 + 0.5)))


class Canary:
    def __init__(self, config: KubernetesConfig, api: KubeAPI) -> None:
        self._config, self._api = config, api
        ns = config.namespace
        self._stable = KubeRef("apps/v1", "deployments", "Deployment", ns, config.deployment)
        self._canary = self._stable.named(config.canary_name)
        self._collection = KubeRef("apps/v1", "deployments", "Deployment", ns)
        self._route = Route(config.canary, ns, api) \
            if config.canary is not None and config.canary.mode == "gateway" else None

    def _run(self, kind: Any, ref: KubeRef, number: int, key: str) -> str:
        return str(RunRef(kind, ref.namespace, ref.name or "", number, key))

    async def _canary_or_none(self) -> dict[str, Any] | None:
        try:
            return await self._api.get(self._canary)
        except NotFound:
            return None

    async def start(self, job: JobSpec) -> str:
        """The canary Deployment on the new image: no pods yet by pod count (the first
        weight gives it some), as many as the stable one behind a route (at 0 %)."""
        canary = await self._canary_or_none()
        if canary is not None and notes_of(canary).get(KEY) == job.key:
            return self._run("rollout", self._canary, generation(canary), job.key)
        stable = await self._api.get(self._stable)
        total = replicas_of(stable)
        if self._route is None and canary is not None:  # pods a canary left: stable's
            total += replicas_of(canary)
            await self._replicas(self._stable, stable, total)  # before the canary's go
        if self._route is not None:  # no traffic to what a canary left behind
            await self._route.set(0)
        replicas = total if self._route is not None else 0
        image = self._config.image_for(job)
        notes = {**marks(job, image), TOTAL: str(total)}
        if canary is None:
            done = await self._api.create(
                self._collection, self._new_canary(stable, image, replicas, notes))
        else:  # an earlier release's: its whole pod template is the stable one's of now
            ops: list[dict[str, Any]] = [
                {"op": "replace", "path": "/spec/template",
                 "value": self._canary_template(stable, image)},
                {"op": "add", "path": "/spec/replicas", "value": replicas}]
            done = await self._api.patch(self._canary, ops + annotation_ops(canary, notes),
                                         "json")
        return self._run("rollout", self._canary, generation(done), job.key)

    def _canary_template(self, stable: dict[str, Any], image: str) -> dict[str, Any]:
        """The stable Deployment's pod template with the new image and ``track: canary``."""
        template = copy.deepcopy(stable.get("spec", {}).get("template") or {})
        template.setdefault("metadata", {}).setdefault("labels", {})[TRACK] = "canary"
        for container in template.get("spec", {}).get("containers") or []:
            if container.get("name") == self._config.container:
                container["image"] = image
        return template

    def _new_canary(self, stable: dict[str, Any], image: str, replicas: int,
                    notes: dict[str, str]) -> dict[str, Any]:
        spec = copy.deepcopy(stable.get("spec", {}))
        spec.pop("paused", None)
        spec["replicas"] = replicas
        spec.setdefault("selector", {}).setdefault("matchLabels", {})[TRACK] = "canary"
        spec["template"] = self._canary_template(stable, image)
        meta = {k: v for k, v in stable.get("metadata", {}).items() if k not in _DROP}
        kept = {k: v for k, v in notes_of(stable).items()
                if not k.startswith(("deployment.kubernetes.io/", "shipbot.io/"))}
        meta.update(name=self._config.canary_name, annotations={**kept, **notes})
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}

    async def _need_canary(self, what: str) -> dict[str, Any]:
        canary = await self._canary_or_none()
        if canary is None:
            raise IntegrationError(f"cannot {what}: {self._canary.label} does not exist "
                                   "(the deploy step creates it; was it deleted?)")
        return canary

    @staticmethod
    def _total(canary: dict[str, Any]) -> int:
        try:
            return max(1, int(notes_of(canary).get(TOTAL, "")))
        except ValueError:
            return max(1, int(canary.get("spec", {}).get("replicas") or 1))

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        """Send ``weight`` percent to the canary; a run polled until the pods (or the
        route) are there."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise IntegrationError(f"traffic weight must be a whole number 0-100, not {weight!r}")
        canary = await self._need_canary(f"send {weight} % to the canary")
        if self._route is not None:
            if notes_of(canary).get(KEY) != job.key:
                await self._route.set(weight)
                await self._api.patch(self._canary, {"metadata": {"annotations": {
                    KEY: job.key}}})
        else:
            await self._scale(canary, job.key, weight)
        return self._run("weight", self._canary, weight, job.key)

    async def _scale(self, canary: dict[str, Any], key: str, weight: int) -> None:
        """Canary up first, then stable down: capacity never dips below the total. A
        repeat (same key) only finishes what a crash may have cut short."""
        total = self._total(canary)
        pods = canary_replicas(weight, total)
        if notes_of(canary).get(KEY) != key:
            await self._api.patch(self._canary, {"metadata": {"annotations": {KEY: key}},
                                                 "spec": {"replicas": pods}})
        else:
            pods = replicas_of(canary)
        await self._replicas(self._stable, await self._api.get(self._stable), total - pods)

    async def _replicas(self, ref: KubeRef, obj: dict[str, Any], count: int) -> None:
        if replicas_of(obj) != count:
            await self._api.patch(ref, {"spec": {"replicas": count}})

    async def poll_weight(self, run: RunRef, canary: dict[str, Any]) -> RunStatus:
        status = rollout_status(canary)
        if status.state is not RunState.SUCCEEDED:
            return status
        if self._route is not None:
            return await self._route.status(run.number)
        total = self._total(canary)
        pods = replicas_of(canary)
        share = round(100 * pods / total)
        return RunStatus(state=RunState.SUCCEEDED, detail=(
            f"{pods} of {total} pods = {share} % on the canary (asked {run.number} %)"))

    async def promote(self, job: JobSpec) -> str:
        """The stable Deployment on the new image with all its pods; the canary goes once
        that rollout is done (``retire``, from the run's poll)."""
        canary = await self._need_canary("promote")
        image = notes_of(canary).get(IMAGE) or self._config.image_for(job)
        done, _ = await keyed_patch(self._api, self._stable, job.key, lambda _: image_patch(
            self._config.container, image, marks(job, image), self._total(canary)))
        return self._run("promote", self._stable, generation(done), job.key)

    async def retire(self, status: RunStatus) -> RunStatus:
        """All traffic to the stable Deployment, no pods for the canary; idempotent."""
        if self._route is not None:
            await self._route.set(0)
        await self._replicas(self._canary, await self._api.get(self._canary), 0)
        status.detail = f"{status.detail}; the canary was removed"
        return status

    async def abort(self, job: JobSpec) -> str:
        """Back to the stable version: route 100/0 first, then the canary's pods go and
        the stable Deployment gets its full count again."""
        canary = await self._need_canary("abort")
        stable = await self._api.get(self._stable)
        if notes_of(canary).get(KEY) != job.key:
            if self._route is not None:
                await self._route.set(0)
            await self._replicas(self._stable, stable, self._total(canary))
            await self._api.patch(self._canary, {"metadata": {"annotations": {
                KEY: job.key, CHANGE_CAUSE: f"shipbot: aborted by deployment key "
                f"{job.key}"}}, "spec": {"replicas": 0}})
        return self._run("abort", self._stable, generation(stable), job.key)
