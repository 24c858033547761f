"""The providers of each service, built once from the config."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from bot.config import ShipbotConfig
from bot.store.models import Deployment
from integrations.base import CIProvider, DeployTarget, JobSpec
from integrations.registry import build_ci, build_target

STEP_GRACE_SECONDS = 120.0


@dataclass(frozen=True)
class ServiceProviders:
    ci: CIProvider | None
    target: DeployTarget
    ci_timeout: float
    deploy_timeout: float


def build_providers(config: ShipbotConfig, state_dir: Path) -> dict[str, ServiceProviders]:
    result: dict[str, ServiceProviders] = {}
    for name, svc in config.services.items():
        result[name] = ServiceProviders(
            ci=build_ci(svc.ci, state_dir) if svc.ci else None,
            target=build_target(svc.deploy, state_dir),
            ci_timeout=(svc.ci.timeout_seconds if svc.ci else 0) + STEP_GRACE_SECONDS,
            deploy_timeout=svc.deploy.timeout_seconds + STEP_GRACE_SECONDS,
        )
    return result


def job(dep: Deployment, step: str) -> JobSpec:
    """The provider's view of one step; the key makes a repeated start find the same run."""
    assert dep.version is not None
    # The request key is unique forever, ids are not (a fresh database starts at 1 again).
    request = hashlib.sha256(dep.request_key.encode()).hexdigest()[:12]
    return JobSpec(key=f"deployment-{dep.id}-{request}-{step}", service=dep.service,
                   env=dep.env, version=dep.version)
