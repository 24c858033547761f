"""The providers of each service, built once from the config."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from bot.config import ShipbotConfig
from bot.store.models import Deployment
from integrations.base import (
    ChangeSource,
    CheckSource,
    CIProvider,
    DeploymentMirror,
    DeployTarget,
    HealthTarget,
    IntegrationError,
    JobSpec,
    NoUndo,
    RollbackTarget,
    TrafficTarget,
)
from integrations.registry import ProviderContext, build_ci, build_deploy, build_mirror

STEP_GRACE_SECONDS = 120.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceProviders:
    """A service's CI and deploy target, with the target's optional capabilities as typed
    fields (None: the target cannot, or is not configured to)."""

    ci: CIProvider | None
    target: DeployTarget
    ci_timeout: float
    deploy_timeout: float
    traffic: TrafficTarget | None = None
    health: HealthTarget | None = None
    rollback: RollbackTarget | None = None
    changes: ChangeSource | None = None  # the CI's repository: commits between versions
    build_once: bool = True  # deploy an earlier build of the version instead of rebuilding
    checks: CheckSource | None = None  # the CI's required checks: the quality gate
    mirror: DeploymentMirror | None = None  # GitHub Deployments: told of each state change

    def need_traffic(self) -> TrafficTarget:
        """The traffic capability; config check refuses canary/blue-green without it, so
        this only fails if the config changed under a running rollout."""
        if self.traffic is None:
            raise IntegrationError("this deploy target cannot shift traffic")
        return self.traffic

    async def start_deploy(self, job: JobSpec, *, rollback: bool) -> str:
        """Start a deploy run; a rollback uses the target's own undo when it has one and
        that undo can return to ``job.version`` (else the version is deployed again)."""
        if rollback and self.rollback is not None:
            try:
                return await self.rollback.rollback(job)
            except NoUndo as exc:
                log.info("%s %s: %s", job.service, job.env, exc)
        return await self.target.start(job)


def build_providers(config: ShipbotConfig, ctx: ProviderContext
                    ) -> dict[str, ServiceProviders]:
    result: dict[str, ServiceProviders] = {}
    for name, svc in config.services.items():
        deploy = build_deploy(svc.deploy, ctx)
        ci = build_ci(svc.ci, ctx) if svc.ci else None
        result[name] = ServiceProviders(
            ci=ci.ci if ci else None, changes=ci.changes if ci else None,
            checks=ci.checks if ci else None,
            mirror=build_mirror(svc.github_deployments, ctx) if svc.github_deployments
            else None,
            target=deploy.target, traffic=deploy.traffic, health=deploy.health,
            rollback=deploy.rollback,
            ci_timeout=(svc.ci.timeout_seconds if svc.ci else 0) + STEP_GRACE_SECONDS,
            deploy_timeout=svc.deploy.timeout_seconds + STEP_GRACE_SECONDS,
            build_once=svc.build == "once",
        )
    return result


def job(dep: Deployment, step: str) -> JobSpec:
    """The provider's view of one step; the key makes a repeated start find the same run."""
    assert dep.version is not None
    # The request key is unique forever, ids are not (a fresh database starts at 1 again).
    request = hashlib.sha256(dep.request_key.encode()).hexdigest()[:12]
    return JobSpec(key=f"deployment-{dep.id}-{request}-{step}", service=dep.service,
                   env=dep.env, version=dep.version, artifact=dep.artifact,
                   strategy=dep.strategy)
