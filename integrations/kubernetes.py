"""The ``kubernetes`` deploy target: a Deployment's container image, followed as kubectl.

``start`` sets the named container's image with a strategic-merge patch and writes
Shipbot's annotations on the Deployment's own metadata (not on the pod template, which
would restart the pods): ``shipbot.io/deploy-key`` (the job), ``shipbot.io/image`` and
``kubernetes.io/change-cause`` (what ``kubectl rollout history`` shows). A repeated start
with the same key finds its key there and patches nothing. Run ids describe themselves
(``rollout/<namespace>/<deployment>/<generation>/<key>``): a new process polls them
with nothing in memory.

``cancel`` of a rollout does what an on-call engineer does when a rollout must stop:
``kubectl rollout undo`` to the revision before it (a paused half-rollout would leave
old and new pods serving side by side until someone resumes it). The run is marked
(``shipbot.io/cancelled``) in the same patch as the undo, so its poll says it was
cancelled only once it was. A rollback, a health check
or a traffic step is only marked: undoing a rollback would put back the version it
replaced, and the engine follows a stopped traffic step with ``abort``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.http import HttpOptions
from integrations.kube_api import KubeAPI, KubeRef
from integrations.kubernetes_canary import Canary
from integrations.kubernetes_config import KubernetesConfig
from integrations.kubernetes_rollout import (
    CANCELLED,
    CHANGE_CAUSE,
    IMAGE,
    KEY,
    RunRef,
    annotation_ops,
    generation,
    health_status,
    image_of,
    image_patch,
    keyed_patch,
    marks,
    notes_of,
    owned_history,
    previous_template,
    rollout_status,
    selector,
)


class KubernetesProvider:
    """Implements every deploy capability (``FullTarget``) on one Deployment; its config
    says which the service may use (traffic only with ``canary:``)."""

    def __init__(self, config: KubernetesConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self._config = config
        self._api = KubeAPI(config.cluster, options=options, environ=environ)
        self._canary = Canary(config, self._api)

    def _ref(self, name: str | None = None, namespace: str | None = None) -> KubeRef:
        return KubeRef("apps/v1", "deployments", "Deployment",
                       namespace or self._config.namespace, name or self._config.deployment)

    # -- start, poll, cancel ---------------------------------------------------------

    async def start(self, job: JobSpec) -> str:
        """Set the new image; once per ``job.key``. A canary or blue-green rollout sets
        it on the canary Deployment (the stable one changes at ``promote``)."""
        if self._config.canary is not None and job.strategy != "rolling":
            return await self._canary.start(job)
        ref, image = self._ref(), self._config.image_for(job)

        def body(dep: dict[str, Any]) -> dict[str, Any]:
            self._check_container(dep)
            return image_patch(self._config.container, image, marks(job, image))

        done, _ = await keyed_patch(self._api, ref, job.key, body)
        return str(RunRef("rollout", ref.namespace, ref.name or "", generation(done),
                          job.key))

    def _check_container(self, dep: dict[str, Any]) -> None:
        template = dep.get("spec", {}).get("template", {})
        if image_of(template, self._config.container) is None:
            names = ", ".join(str(c.get("name")) for c in
                              template.get("spec", {}).get("containers") or []) or "none"
            raise IntegrationError(
                f"Deployment {self._config.namespace}/{self._config.deployment} has no "
                f"container named {self._config.container!r} (it has: {names}): fix "
                "container: in shipbot.yml")

    def _parse(self, run_id: str) -> RunRef:
        """A run of this target's Deployments only: an id naming any other object (a
        config changed under a running deployment) is refused, not followed."""
        run = RunRef.parse(run_id)
        names = (self._config.deployment, self._config.canary_name)
        if run.namespace != self._config.namespace or run.name not in names:
            raise IntegrationError(
                f"the Kubernetes run {run_id[:200]!r} is on Deployment {run.namespace}/"
                f"{run.name}, not on {self._config.namespace}/{self._config.deployment} as "
                "configured now: was shipbot.yml changed during the deployment?")
        return run

    async def poll(self, run_id: str) -> RunStatus:
        run = self._parse(run_id)
        dep = await self._api.get(self._ref(run.name, run.namespace))
        marked = notes_of(dep)
        if marked.get(CANCELLED) == run.key:
            return RunStatus(state=RunState.FAILED, detail="was cancelled" + (
                ("; the Deployment is paused, so nothing was undone" if _paused(dep) else
                 " and rolled back to the previous revision") if self._undoes(run) else ""))
        if run.kind == "weight":
            return await self._canary.poll_weight(run, dep)
        if run.kind == "health":
            return health_status(dep)
        if run.kind != "abort" and generation(dep) > run.number and (
                marked.get(KEY) != run.key or
                image_of(dep.get("spec", {}).get("template", {}),
                         self._config.container) != marked.get(IMAGE)):
            return RunStatus(state=RunState.FAILED, detail=(
                f"someone else changed the Deployment {run.namespace}/{run.name} "
                f"(generation {generation(dep)}, Shipbot's change was {run.number})"))
        status = rollout_status(dep)
        if status.state is RunState.RUNNING and _paused(dep):
            status.detail += (f" (the Deployment is paused: kubectl rollout resume "
                              f"deployment/{run.name} -n {run.namespace})")
        if run.kind == "promote" and status.state is RunState.SUCCEEDED:
            return await self._canary.retire(status)
        if run.kind == "abort" and status.state is RunState.SUCCEEDED:
            status.detail = f"the canary was removed; {status.detail}"
        return status

    def _undoes(self, run: RunRef) -> bool:
        return run.kind in ("rollout", "promote") and run.name == self._config.deployment

    async def cancel(self, run_id: str) -> None:
        """Stop a run that is still going; see the module's docstring for what that does
        to the Deployment. A finished run is left as it ended."""
        run = self._parse(run_id)
        if (await self.poll(run_id)).state is not RunState.RUNNING:
            return
        # One write: the mark and what it stands for land together, so a cancel cut
        # short is repeated whole, never found marked with nothing undone.
        ref, mark = self._ref(run.name, run.namespace), {CANCELLED: run.key}
        if self._undoes(run) and not _paused(await self._api.get(ref)):
            await self._undo(ref, run.key + "-cancel", None, "cancelled", mark=mark)
        elif run.kind == "rollout" and run.name == self._config.canary_name:
            await self._api.patch(ref, {"metadata": {"annotations": mark},  # being prepared
                                        "spec": {"replicas": 0}})
        else:  # paused: left to whoever paused it
            await self._api.patch(ref, {"metadata": {"annotations": mark}})

    # -- health and rollback -----------------------------------------------------------

    async def health(self, job: JobSpec) -> str:
        """A run that succeeds once the Deployment (the canary, with ``canary:``) is
        Available, and fails if its rollout exceeded its progress deadline."""
        name = self._config.canary_name \
            if self._config.canary is not None and job.strategy != "rolling" else None
        ref = self._ref(name)
        dep = await self._api.get(ref)
        return str(RunRef("health", ref.namespace, ref.name or "", generation(dep), job.key))

    async def rollback(self, job: JobSpec) -> str:
        """``kubectl rollout undo``: the previous revision's pod template back on the
        Deployment (the newest earlier one running ``job.version``'s image when there is
        one), then followed like a rollout."""
        ref = self._ref()
        dep = await self._api.get(ref)
        if notes_of(dep).get(KEY) == job.key:
            return str(RunRef("undo", ref.namespace, ref.name or "", generation(dep),
                              job.key))
        done = await self._undo(ref, job.key, self._config.image_for(job),
                                f"{job.service} {job.version}", dep)
        return str(RunRef("undo", ref.namespace, ref.name or "", generation(done), job.key))

    async def _undo(self, ref: KubeRef, key: str, image: str | None, what: str,
                    dep: dict[str, Any] | None = None, *,
                    mark: dict[str, str] | None = None) -> dict[str, Any]:
        dep = dep or await self._api.get(ref)
        if _paused(dep):
            raise IntegrationError(f"{ref.label} is paused (kubectl rollout pause): resume "
                                   "it with kubectl rollout resume before rolling back")
        rs_ref = KubeRef("apps/v1", "replicasets", "ReplicaSet", ref.namespace)
        history = owned_history(dep, await self._api.list(rs_ref,
                                                          labelSelector=selector(dep)))
        number, template = previous_template(dep, history, self._config.container, image)
        restored = image_of(template, self._config.container) or "?"
        cause = f"shipbot: rollback of {what} to revision {number} by deployment key {key}"
        ops: list[dict[str, Any]] = [{"op": "replace", "path": "/spec/template",
                                      "value": template}]
        ops += annotation_ops(dep, {KEY: key, IMAGE: restored, CHANGE_CAUSE: cause,
                                    **(mark or {})})
        return await self._api.patch(ref, ops, "json")

    # -- traffic (with canary:) ---------------------------------------------------------

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        return await self._canary.set_weight(job, weight)

    async def promote(self, job: JobSpec) -> str:
        return await self._canary.promote(job)

    async def abort(self, job: JobSpec) -> str:
        return await self._canary.abort(job)


def _paused(dep: dict[str, Any]) -> bool:
    """``kubectl rollout pause``: the controller leaves the rollout where it is."""
    return bool(dep.get("spec", {}).get("paused"))
