"""The ``argo_rollouts`` deploy target: an Argo Rollouts ``Rollout`` (argoproj.io/v1alpha1).

``start`` sets the image of one container of the Rollout's pod template (a JSON patch:
the API server has no strategic merge for custom resources) and records the engine's
key in the annotation ``shipbot.io/deploy-key`` in the same patch, so a start repeated
after a restart finds it and patches nothing. Promote, abort and retry act exactly as
``kubectl argo rollouts`` does: merge patches of ``status`` through the status
subresource (``pauseConditions: null``, ``promoteFull: true``, ``abort: true|false``).

Run ids are self-describing (``argo:<kind>:<step or generation>:<key hash>``): a new
process polls them from the Rollout alone. A failed AnalysisRun (step or background)
makes Argo abort; the poll then fails with that AnalysisRun's failed metrics and
measured values as its detail, which becomes the rollback's reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from integrations.argo_rollouts_config import ArgoRolloutsConfig
from integrations.argo_status import (
    BAD,
    FINISHED,
    RolloutView,
    failure_text,
    finding,
    first_step,
    images,
    in_steps,
    key_hash,
    parse_run,
    promoted_text,
    view,
    waiting_text,
)
from integrations.base import Finding, IntegrationError, JobSpec, RunState, RunStatus
from integrations.http import HttpOptions, NotFound, TokenRefused
from integrations.kube_api import KubeAPI, KubeRef

GROUP = "argoproj.io/v1alpha1"
DEPLOY_KEY = "shipbot.io/deploy-key"
PROMOTED = "shipbot.io/promoted"  # "<key hash>@<step index it promoted past>"
CANCELLED = "shipbot.io/cancelled"
log = logging.getLogger(__name__)
FOLLOWS_PROGRESS = ("deploy", "weight", "promote", "continue")  # cancel aborts these


class ArgoRolloutsProvider:
    """``FullTarget`` on one Rollout; see the module docstring."""

    def __init__(self, config: ArgoRolloutsConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self._config = config
        self._api = KubeAPI(config.cluster, provider="argo_rollouts", options=options,
                            environ=environ)
        self._ref = KubeRef(GROUP, "rollouts", "Rollout", config.namespace, config.rollout)
        self._runs = KubeRef(GROUP, "analysisruns", "AnalysisRun", config.namespace)

    async def _read(self) -> dict[str, Any]:
        try:
            return await self._api.get(self._ref)
        except NotFound as exc:
            raise NotFound(f"Rollout {self._config.namespace}/{self._config.rollout} was not "
                           "found (HTTP 404): check namespace: and rollout: in shipbot.yml, "
                           "and that the Argo Rollouts CRDs are installed in the cluster "
                           "(kubectl get crd rollouts.argoproj.io)", exc.status) from exc

    async def _status_patch(self, body: dict[str, Any]) -> None:
        await self._api.patch(self._ref, {"status": body}, "merge", subresource="status")

    async def _annotate(self, **values: str) -> dict[str, Any]:
        return await self._api.patch(self._ref, {"metadata": {"annotations": values}}, "merge")

    # -- starting work -------------------------------------------------------------

    async def start(self, job: JobSpec) -> str:
        """Put the job's image on the Rollout once per key; the same image on an aborted
        Rollout is ``kubectl argo rollouts retry`` (``status.abort: false``)."""
        return await self._set_image(job, "deploy")

    async def rollback(self, job: JobSpec) -> str:
        """``kubectl argo rollouts undo`` by image: the template back to the earlier
        version, which Argo recognises as its stable ReplicaSet and restores at once."""
        return await self._set_image(job, "rollback")

    async def _set_image(self, job: JobSpec, kind: str) -> str:
        h, image = key_hash(job.key), self._config.image_for(job)
        rollout = await self._read()
        current = view(rollout)
        if current.annotations.get(DEPLOY_KEY) == h:
            return f"argo:{kind}:{current.generation}:{h}"  # started before this restart
        index, running = self._container(rollout)
        if self._config.analysis == "shipbot" and not current.steps:
            raise IntegrationError(
                f"the Rollout {self._config.namespace}/{self._config.rollout} has no canary "
                "steps for Shipbot's canary to walk: give it setWeight + pause: {} steps that "
                "mirror the Shipbot strategy, or set analysis: argo")
        if running != image:
            rollout = await self._api.patch(self._ref, self._image_ops(rollout, index, image,
                                                                       h), "json")
        else:
            if current.aborted:
                await self._status_patch({"abort": False})  # retry
            rollout = await self._annotate(**{DEPLOY_KEY: h})
        return f"argo:{kind}:{view(rollout).generation}:{h}"

    def _container(self, rollout: dict[str, Any]) -> tuple[int, str]:
        found = images(rollout)
        for index, (name, image) in enumerate(found):
            if name == self._config.container:
                return index, image
        names = ", ".join(n for n, _ in found) or "none"
        raise IntegrationError(f"the Rollout {self._config.namespace}/{self._config.rollout} "
                               f"has no container named {self._config.container!r} (it has: "
                               f"{names}): fix container: in shipbot.yml")

    @staticmethod
    def _image_ops(rollout: dict[str, Any], index: int, image: str, h: str
                   ) -> list[dict[str, Any]]:
        """Test the container's name at its index (the list may have changed since it was
        read), set its image, and record the key, in one atomic JSON patch."""
        path = f"/spec/template/spec/containers/{index}"
        name = images(rollout)[index][0]
        has_annotations = isinstance(rollout.get("metadata", {}).get("annotations"), dict)
        note = {"op": "add", "path": "/metadata/annotations/shipbot.io~1deploy-key",
                "value": h} if has_annotations else \
            {"op": "add", "path": "/metadata/annotations", "value": {DEPLOY_KEY: h}}
        return [{"op": "test", "path": f"{path}/name", "value": name},
                {"op": "replace", "path": f"{path}/image", "value": image}, note]

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        """Go on to Argo's next pause (``kubectl argo rollouts promote``) unless Argo
        already waits at ``weight`` or more: Shipbot's steps mirror the Rollout's."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise IntegrationError(f"traffic weight must be a whole number 0-100, not {weight!r}")
        h = key_hash(job.key)
        rollout = await self._read()
        now = view(rollout)
        done = self._promoted_step(now, h)
        if done is not None:
            return f"argo:weight:{weight}@{done}:{h}"
        step = now.step_index or 0
        if now.waits_for_human and now.weight >= weight:
            return f"argo:weight:{weight}@{step - 1}:{h}"  # already there: nothing to do
        if now.paused and not now.aborted:
            await self._promote_past(rollout, now, h)
        elif step < len(now.steps) and now.steps[step].get("pause") == {}:
            step -= 1  # on its way to the pause at this step (promoted before a restart)
        return f"argo:weight:{weight}@{step}:{h}"

    async def promote(self, job: JobSpec) -> str:
        """``analysis: shipbot``: a full promotion (``status.promoteFull``), as ``promote
        --full``; ``analysis: argo``: go on past the current pause, as ``promote``."""
        h = key_hash(job.key)
        rollout = await self._read()
        now = view(rollout)
        if self._config.analysis == "argo":
            done = self._promoted_step(now, h)
            if done is None and now.paused:
                await self._promote_past(rollout, now, h)
            return f"argo:continue:{done if done is not None else now.step_index or 0}:{h}"
        if now.annotations.get(PROMOTED, "").split("@")[0] != h and not now.on_new_version:
            if rollout.get("spec", {}).get("paused") is True:
                await self._api.patch(self._ref, {"spec": {"paused": False}}, "merge")
            await self._status_patch({"promoteFull": True})
            await self._annotate(**{PROMOTED: f"{h}@{now.step_index or 0}"})
        return f"argo:promote:{now.generation}:{h}"

    def _promoted_step(self, now: RolloutView, h: str) -> int | None:
        """The step this key promoted past, if it did and Argo has moved on since (still
        paused at that very step: the promote did not land, do it again)."""
        said = now.annotations.get(PROMOTED, "")
        key, _, step = said.partition("@")
        if key != h or not step.isdigit():
            return None
        return None if now.paused and now.step_index == int(step) else int(step)

    async def _promote_past(self, rollout: dict[str, Any], now: RolloutView, h: str) -> None:
        if rollout.get("spec", {}).get("paused") is True:
            await self._api.patch(self._ref, {"spec": {"paused": False}}, "merge")
        if now.pause_reasons:
            await self._status_patch({"pauseConditions": None})
        await self._annotate(**{PROMOTED: f"{h}@{now.step_index or 0}"})

    async def abort(self, job: JobSpec) -> str:
        """``kubectl argo rollouts abort``: all traffic back to the stable ReplicaSet; a
        run that fails in words if the job's image already is the stable one (promoted
        in full, by hand): only a rollback (the earlier image) goes back from there."""
        rollout = await self._read()
        now = view(rollout)
        if now.on_new_version and not now.aborted and \
                self._container(rollout)[1] == self._config.image_for(job):
            return f"argo:promoted:{now.generation}:{key_hash(job.key)}"
        if not now.aborted and not now.on_new_version:
            await self._status_patch({"abort": True})
        return f"argo:abort:{now.generation}:{key_hash(job.key)}"

    async def health(self, job: JobSpec) -> str:
        now = view(await self._read())
        return f"argo:health:{now.generation}:{key_hash(job.key)}"

    async def cancel(self, run_id: str) -> None:
        """Stop a deploy or a step: abort the Rollout (the stable version keeps serving)."""
        kind, _, _, h = parse_run(run_id)
        if kind not in FOLLOWS_PROGRESS:
            return
        now = view(await self._read())
        if not now.aborted and not now.on_new_version:
            await self._annotate(**{CANCELLED: h})
            await self._status_patch({"abort": True})

    # -- following it ---------------------------------------------------------------

    async def poll(self, run_id: str) -> RunStatus:
        kind, number, since, h = parse_run(run_id)
        rollout = await self._read()
        now = view(rollout)
        if kind == "promoted":  # an abort that found the job's image promoted in full
            return RunStatus(state=RunState.FAILED, position=now.where(),
                             detail=promoted_text(self._container(rollout)[1], now))
        status = await self._poll(now, kind, number, since, h)
        return status if status.position else status.model_copy(
            update={"position": now.where()})

    async def _poll(self, now: RolloutView, kind: str, number: int, since: int | None,
                    h: str) -> RunStatus:
        if kind in ("abort", "rollback", "health"):
            return await self._poll_undo(kind, now)
        if now.failed:
            return await self._failed(now, h)
        end = now.step_index if now.step_index is not None else len(now.steps)
        start = first_step(kind, number, since, now.steps, end)
        if now.healthy:
            return await self._done(now, f"{now.where()}: the rollout is complete", start)
        if not now.observed:
            return RunStatus(state=RunState.RUNNING, detail=now.where())
        if kind == "continue" and (not now.paused or (now.step_index or 0) > number):
            return await self._done(now, f"Argo went on: {now.where()}", start)
        if kind in ("deploy", "weight") and now.waits_for_human and \
                (kind == "deploy" or end >= start):
            if kind == "deploy" and self._config.analysis == "argo":
                return RunStatus(state=RunState.RUNNING, detail=now.where(),
                                 waiting=waiting_text(now),
                                 findings=await self._segment(now, start))
            asked = f" (Shipbot asked for {number} %)" if kind == "weight" and \
                number != now.weight else ""
            return await self._done(now, f"{now.where()}{asked}", start)
        return RunStatus(state=RunState.RUNNING, detail=now.where())

    async def _poll_undo(self, kind: str, now: RolloutView) -> RunStatus:
        if kind == "abort" and ((now.aborted and now.weight == 0) or now.healthy):
            return RunStatus(state=RunState.SUCCEEDED, detail="Argo aborted the rollout: all "
                             f"traffic is on the stable ReplicaSet {now.stable_hash}")
        if kind == "abort":
            return RunStatus(state=RunState.RUNNING, detail=f"aborting: {now.where()}")
        if now.observed and now.healthy:
            return RunStatus(state=RunState.SUCCEEDED, detail=now.where())
        if kind == "health" and now.observed and now.waits_for_human:
            return RunStatus(state=RunState.SUCCEEDED, detail=now.where())
        if now.failed:
            return RunStatus(state=RunState.FAILED, detail=await self._failure(now))
        return RunStatus(state=RunState.RUNNING, detail=now.where())

    async def _done(self, now: RolloutView, detail: str, start: int) -> RunStatus:
        return RunStatus(state=RunState.SUCCEEDED, detail=detail, position=detail,
                         findings=await self._segment(now, start))

    async def _failed(self, now: RolloutView, h: str) -> RunStatus:
        if now.aborted and now.annotations.get(CANCELLED) == h:
            return RunStatus(state=RunState.FAILED, detail="cancelled: Shipbot aborted the "
                             "Rollout; the stable ReplicaSet serves all traffic")
        bad = [f for f in await self._analysis_runs(now) if f.phase in BAD]
        return RunStatus(state=RunState.FAILED, detail=await self._failure(now, bad),
                         findings=bad[-1:])

    async def _failure(self, now: RolloutView, bad: list[Finding] | None = None) -> str:
        """The failed AnalysisRun's metrics and values, else Argo's own message."""
        if bad is None:
            bad = [f for f in await self._analysis_runs(now) if f.phase in BAD]
        if bad:
            return failure_text(bad[-1])
        what = "Argo aborted the rollout" if now.aborted else "the Rollout is Degraded"
        return f"{what}: {now.message or now.phase}"

    async def _segment(self, now: RolloutView, start: int) -> list[Finding]:
        """The AnalysisRuns that ended in the steps from ``start`` to where Argo is now (a
        background analysis once the rollout ended), each reported by one run only."""
        end = now.step_index if now.step_index is not None else len(now.steps)
        runs = await self._analysis_runs(now, (start, end), background=now.healthy)
        return [f for f in runs if f.phase in FINISHED]

    async def _analysis_runs(self, now: RolloutView, steps: tuple[int, int] | None = None,
                             *, background: bool = True) -> list[Finding]:
        if not now.current_hash:
            return []
        try:
            runs = await self._api.list(self._runs, labelSelector=
                                        f"rollouts-pod-template-hash={now.current_hash}")
        except TokenRefused as exc:  # the README's Role grants it; Argo's message remains
            log.warning("cannot read AnalysisRuns (results and failure reasons): %s", exc)
            return []
        picked = [r for r in runs if steps is None or in_steps(r, steps, background)]
        picked.sort(key=lambda r: str(r.get("metadata", {}).get("creationTimestamp", "")))
        return [finding(r) for r in picked]


