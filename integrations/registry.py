"""Provider selection by name: the config's ``provider:`` field picks an entry here.

Each entry ties a name to its pydantic config model (which declares the provider's
capabilities) and to factories for the roles it can play. The config's discriminated
unions, hence the JSON Schema and ``shipbot config check``, are built from this table,
so a new provider is one module plus one line in ``_ENTRIES``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Generic, Literal, TypeVar, Union

from pydantic import Field

from integrations.argo_rollouts import ArgoRolloutsProvider
from integrations.argo_rollouts_config import ArgoRolloutsConfig
from integrations.base import (
    Capability,
    CIBundle,
    DeployBundle,
    DeploymentMirror,
    ProviderConfig,
)
from integrations.command import CommandConfig, CommandProvider
from integrations.github_actions import GitHubActionsProvider
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_deployments import GitHubDeployments, GitHubDeploymentsConfig
from integrations.gitlab import GitLabProvider
from integrations.gitlab_config import GitLabConfig
from integrations.helm import HelmProvider
from integrations.helm_config import HelmConfig
from integrations.http import HttpOptions
from integrations.kubernetes import KubernetesProvider
from integrations.kubernetes_config import KubernetesConfig
from integrations.webhook import WebhookProvider
from integrations.webhook_config import WebhookConfig

Role = Literal["ci", "deploy"]
C = TypeVar("C", bound=ProviderConfig)


@dataclass(frozen=True)
class ProviderContext:
    """What a factory may use besides the provider's own config."""

    state_dir: Path
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    http: HttpOptions = field(default_factory=HttpOptions)


@dataclass(frozen=True)
class ProviderEntry(Generic[C]):
    name: str
    config: type[C]
    ci: Callable[[C, ProviderContext], CIBundle] | None = None
    deploy: Callable[[C, ProviderContext], DeployBundle] | None = None

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What the provider can do at most (a given config may turn less on)."""
        return self.config.CAPABILITIES

    @property
    def roles(self) -> tuple[Role, ...]:
        found: list[Role] = []
        if self.ci is not None:
            found.append("ci")
        if self.deploy is not None:
            found.append("deploy")
        return tuple(found)


def _command_ci(config: CommandConfig, ctx: ProviderContext) -> CIBundle:
    return CIBundle(CommandProvider(config, ctx.state_dir / "ci"))


def _command_deploy(config: CommandConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle.of(CommandProvider(config, ctx.state_dir / "deploy"),
                           config.capabilities())


def _github(config: GitHubActionsConfig, ctx: ProviderContext) -> GitHubActionsProvider:
    return GitHubActionsProvider(config, options=ctx.http, environ=ctx.environ)


def _github_ci(config: GitHubActionsConfig, ctx: ProviderContext) -> CIBundle:
    provider = _github(config, ctx)  # the repository it builds: compare, and its checks
    checks = provider if Capability.CHECKS in config.capabilities() else None
    return CIBundle(provider, changes=provider, checks=checks)


def _github_deploy(config: GitHubActionsConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle(target=_github(config, ctx))  # start, poll, cancel: nothing more


def _gitlab(config: GitLabConfig, ctx: ProviderContext) -> GitLabProvider:
    return GitLabProvider(config, options=ctx.http, environ=ctx.environ)


def _gitlab_ci(config: GitLabConfig, ctx: ProviderContext) -> CIBundle:
    provider = _gitlab(config, ctx)
    return CIBundle(provider, changes=provider if config.compare else None)


def _gitlab_deploy(config: GitLabConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle(target=_gitlab(config, ctx))  # start, poll, cancel: nothing more


def _argo_deploy(config: ArgoRolloutsConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle.of(ArgoRolloutsProvider(config, options=ctx.http, environ=ctx.environ),
                           config.capabilities())


def _helm_deploy(config: HelmConfig, ctx: ProviderContext) -> DeployBundle:
    helm, on = HelmProvider(config, ctx.state_dir / "helm"), config.capabilities()
    return DeployBundle(target=helm, health=helm if Capability.HEALTH in on else None,
                        rollback=helm if Capability.ROLLBACK in on else None)


def _webhook_deploy(config: WebhookConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle.of(WebhookProvider(config, options=ctx.http, environ=ctx.environ),
                           config.capabilities())


def _kubernetes_deploy(config: KubernetesConfig, ctx: ProviderContext) -> DeployBundle:
    return DeployBundle.of(KubernetesProvider(config, options=ctx.http, environ=ctx.environ),
                           config.capabilities())


_ENTRIES: tuple[ProviderEntry[Any], ...] = (
    ProviderEntry("command", CommandConfig, ci=_command_ci, deploy=_command_deploy),
    ProviderEntry("github_actions", GitHubActionsConfig, ci=_github_ci,
                  deploy=_github_deploy),
    ProviderEntry("gitlab", GitLabConfig, ci=_gitlab_ci, deploy=_gitlab_deploy),
    ProviderEntry("helm", HelmConfig, deploy=_helm_deploy),
    ProviderEntry("kubernetes", KubernetesConfig, deploy=_kubernetes_deploy),
    ProviderEntry("webhook", WebhookConfig, deploy=_webhook_deploy),
    ProviderEntry("argo_rollouts", ArgoRolloutsConfig, deploy=_argo_deploy),
)
REGISTRY: dict[str, ProviderEntry[Any]] = {e.name: e for e in _ENTRIES}
PROVIDERS = tuple(REGISTRY)


def _union(role: Role) -> Any:
    models = tuple(e.config for e in _ENTRIES if role in e.roles)
    return Annotated[Union[models], Field(discriminator="provider")]  # noqa: UP007


if TYPE_CHECKING:  # what the engine may rely on, whichever provider was chosen
    CIConfig = ProviderConfig
    DeployConfig = ProviderConfig
else:
    CIConfig = _union("ci")
    DeployConfig = _union("deploy")


def _entry(config: ProviderConfig, role: Role) -> ProviderEntry[Any]:
    entry = REGISTRY.get(config.provider)
    if entry is None or not isinstance(config, entry.config) or role not in entry.roles:
        raise ValueError(f"no {role} provider named {config.provider!r}")
    return entry


def build_ci(config: ProviderConfig, ctx: ProviderContext) -> CIBundle:
    factory = _entry(config, "ci").ci
    assert factory is not None
    return factory(config, ctx)


def build_deploy(config: ProviderConfig, ctx: ProviderContext) -> DeployBundle:
    factory = _entry(config, "deploy").deploy
    assert factory is not None
    return factory(config, ctx)


def build_mirror(config: GitHubDeploymentsConfig, ctx: ProviderContext) -> DeploymentMirror:
    """The deployments mirror a service's ``github_deployments`` stanza describes."""
    return GitHubDeployments(config, options=ctx.http, environ=ctx.environ)
