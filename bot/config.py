"""``shipbot.yml``: services, environments and integrations, validated by pydantic.

``check_config`` turns every validation problem into one line with its location and,
where we can guess, a suggestion, so that ``shipbot config check`` is useful in CI.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.config_alerts import AlertsConfig, AutoRollbackConfig
from bot.config_analysis import JudgeKind
from bot.config_delivery import StrategyConfig
from bot.config_policy import ApprovalConfig, FreezeWindowConfig, Roles
from integrations.base import Capability
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_deployments import GitHubDeploymentsConfig, lent_by_ci
from integrations.metrics_registry import METRICS_PROVIDERS, MetricsConfig, provider_of
from integrations.registry import PROVIDERS, CIConfig, DeployConfig

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_UNION_MEMBER = re.compile(r"^([A-Z]\w*Config|literal\[.*\]|function-.*)$")
CHANNEL_RE = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{8,})$")


class ConfigError(Exception):
    """The config file cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


PROTECTED_NAMES = ("production", "prod")


class EnvironmentConfig(BaseModel):
    """One environment; their order in the file is the promotion order."""

    model_config = ConfigDict(extra="forbid")
    description: str = ""
    requires: str | None = Field(
        default=None, description="An environment where the same version must have succeeded")
    approval: ApprovalConfig | Literal[False] | None = Field(
        default=None, description="Required approvals; `false` opts a production env out")
    roles: Roles = Roles()
    max_commits: int | None = Field(
        default=None, ge=1, description="Refuse a deploy that ships more commits than this "
        "(needs a CI provider that can compare versions); `--allow-many-commits` overrides "
        "it, announced and audited")

    @property
    def approval_rules(self) -> ApprovalConfig | None:
        return self.approval or None


class ServiceConfig(BaseModel):
    """One deployable service: where it reports, how it is built and deployed."""

    model_config = ConfigDict(extra="forbid")
    channel: str = Field(description="Channel ID (C0123ABCD) or name (#deploys-api)")
    ci: CIConfig | None = Field(default=None, description="Omit to deploy versions as given")
    deploy: DeployConfig
    build: Literal["once", "per_environment"] = Field(
        default="once", description="once: a version is built for the first environment and "
        "that build (its artifact) is deployed to the next ones; per_environment: built "
        "again for each")
    environments: list[str] | None = Field(
        default=None, description="Environments this service deploys to (default: all)"
    )
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    strategies: dict[str, StrategyConfig] = Field(
        default_factory=dict, description="Per-environment strategy overrides")
    auto_rollback: AutoRollbackConfig | None = Field(
        default=None, description="Roll back without a click when these alerts fire soon "
                                  "after a deploy")
    github_deployments: GitHubDeploymentsConfig | None = Field(
        default=None, description="Mirror each deployment as a GitHub Deployment (the "
                                  "repository's Environments page); `{}` uses the CI's "
                                  "repository and token")

    @model_validator(mode="after")
    def _mirror_repository(self) -> ServiceConfig:
        if self.github_deployments is not None:
            ci = self.ci if isinstance(self.ci, GitHubActionsConfig) else None
            try:
                self.github_deployments = lent_by_ci(
                    self.github_deployments, ci, ci.repository if ci else None)
            except ValueError as exc:
                raise ValueError(f"github_deployments: {exc}") from None
        return self

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if not CHANNEL_RE.match(v):
            raise ValueError("must be a channel ID like C0123ABCD or a name like #deploys-api")
        return v


class ShipbotConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")
    environments: dict[str, EnvironmentConfig] = Field(min_length=1)
    services: dict[str, ServiceConfig] = Field(min_length=1)
    poll_interval_seconds: float = Field(default=2.0, gt=0, le=300)
    freeze_windows: list[FreezeWindowConfig] = []
    metrics: MetricsConfig | None = Field(
        default=None, description="Metrics provider for canary analysis: prometheus (the "
                                  "default when provider is omitted) or datadog")
    announce_channel: str | None = Field(
        default=None, description="Where freeze windows and locks are announced")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig,
                                 description="Alert webhooks: label mapping, default channel")

    @field_validator("environments", "services")
    @classmethod
    def _names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not NAME_RE.match(name):
                raise ValueError(f"'{name}': names are lowercase letters, digits, '-' and '_'")
        return v

    @model_validator(mode="after")
    def _environment_rules(self) -> ShipbotConfig:
        """Promotion order points backwards; production is approval-gated unless opted out."""
        order = list(self.environments)
        for name, env in self.environments.items():
            if env.requires is not None and env.requires not in order[: order.index(name)]:
                raise ValueError(
                    f"environments.{name}.requires: '{env.requires}' must be an environment "
                    f"listed before {name}{_suggest(env.requires, order)}")
            if name in PROTECTED_NAMES and env.approval is None:
                raise ValueError(
                    f"environments.{name}.approval: {name} needs approvers (set "
                    "approval.approvers), or `approval: false` to opt out explicitly")
        for window in self.freeze_windows:
            for env_name in window.environments:
                if env_name not in self.environments:
                    raise ValueError(
                        f"freeze_windows.{window.name}: unknown environment '{env_name}'"
                        f"{_suggest(env_name, order)}")
        return self

    @model_validator(mode="after")
    def _strategies_are_possible(self) -> ShipbotConfig:
        """Canary and blue-green need a target that splits traffic, analysis a provider."""
        for name, svc in self.services.items():
            mirrored = svc.github_deployments.environment_urls if svc.github_deployments \
                else {}
            for where, envs in (("strategies", svc.strategies),
                                ("github_deployments.environment_urls", mirrored)):
                for env in envs:
                    if env not in self.environments:
                        raise ValueError(f"services.{name}.{where}: unknown environment "
                                         f"'{env}'{_suggest(env, self.environments)}")
            for where, strategy in [("strategy", svc.strategy)] + [
                    (f"strategies.{e}", s) for e, s in svc.strategies.items()]:
                if strategy.kind != "rolling" and \
                        Capability.TRAFFIC not in svc.deploy.capabilities():
                    how = svc.deploy.settings_for(Capability.TRAFFIC)
                    raise ValueError(
                        f"services.{name}.{where}: {strategy.kind} needs a deploy target that "
                        "can split traffic " + (f"(for the {svc.deploy.provider} provider: "
                                                f"{how})" if how else
                                                f"(the {svc.deploy.provider} provider cannot; "
                                                "use the rolling strategy)"))
                refused = svc.deploy.strategy_refusal(strategy.kind, bool(strategy.analysis))
                if refused:
                    raise ValueError(f"services.{name}.{where}: {refused}")
                if strategy.analysis and self.metrics is None:
                    raise ValueError(f"services.{name}.{where}.analysis: configure a metrics "
                                     "provider (top-level `metrics:`) first")
        return self

    def judges(self) -> set[JudgeKind]:
        """The judges some service's canary analysis uses."""
        return {metric.judge for svc in self.services.values()
                for strategy in (svc.strategy, *svc.strategies.values()) if strategy.analysis
                for metric in strategy.analysis.metrics}

    def strategy_for(self, service: str, env: str, kind: str | None = None) -> StrategyConfig:
        """The environment's strategy, or with ``--strategy KIND`` the configured strategy
        of that kind (the environment's, then the service's), so a canary asked for by hand
        still uses the team's steps and analysis rather than bare defaults. The
        environment's own gates (its checks, its pause timeout) come along either way."""
        svc = self.services[service]
        own = svc.strategies.get(env)
        strategy = own or svc.strategy
        if not kind or kind == strategy.kind:
            return strategy
        chosen = svc.strategy if kind == svc.strategy.kind else strategy.with_kind(kind)  # type: ignore[arg-type]
        if own is None:
            return chosen
        gates: dict[str, object] = {f: getattr(own, f) for f in ("checks", "pause_timeout")
                                    if f in own.model_fields_set}
        return chosen.model_copy(update=gates)

    @model_validator(mode="after")
    def _service_environments_exist(self) -> ShipbotConfig:
        for name, svc in self.services.items():
            for env in svc.environments or []:
                if env not in self.environments:
                    raise ValueError(
                        f"services.{name}.environments: unknown environment '{env}'"
                        f"{_suggest(env, self.environments)}"
                    )
        return self

    @model_validator(mode="after")
    def _alert_aliases_exist(self) -> ShipbotConfig:
        for label, env in self.alerts.env_aliases.items():
            if env not in self.environments:
                raise ValueError(f"alerts.env_aliases.{label}: unknown environment '{env}'"
                                 f"{_suggest(env, self.environments)}")
        return self

    @property
    def environment_order(self) -> list[str]:
        return list(self.environments)

    def principals(self) -> list[tuple[str, str]]:
        """(location, principal) for every principal the config names, for `config check`."""
        found: list[tuple[str, str]] = []
        for name, env in self.environments.items():
            if env.approval_rules:
                found += [(f"environments.{name}.approval.approvers", p)
                          for p in env.approval_rules.approvers]
            for role, values in env.roles.model_dump().items():
                found += [(f"environments.{name}.roles.{role}", p) for p in values or []]
        return found

    def environments_of(self, service: str) -> list[str]:
        svc = self.services[service]
        return list(svc.environments) if svc.environments else self.environment_order


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _location(parts: tuple[Any, ...]) -> str:
    """Dotted path, without the provider tag pydantic adds inside a discriminated union."""
    kept = [p for i, p in enumerate(parts)
            if not (i and parts[i - 1] in ("ci", "deploy") and p in PROVIDERS)
            and not (i == 1 and parts[0] == "metrics" and p in METRICS_PROVIDERS)
            and not (isinstance(p, str) and _UNION_MEMBER.match(p))]
    return ".".join(str(p) for p in kept)


def _format_error(err: Any) -> str:
    loc = _location(err["loc"])
    if err["type"] == "union_tag_invalid":
        tag = err["ctx"]["tag"]
        expected = [t.strip(" '") for t in err["ctx"]["expected_tags"].split(",")]
        return f"{loc}.provider: unknown provider '{tag}'{_suggest(tag, expected)}" + (
            f"; known: {', '.join(expected)}"
        )
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown setting (check the spelling; see `shipbot config schema`)"
    if err["type"] == "missing":
        return f"{loc}: required setting is missing"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def parse_config(data: Any) -> ShipbotConfig:
    # Analysis queries are checked in the metrics provider's own query language.
    metrics = data.get("metrics") if isinstance(data, dict) else None
    context = {"metrics_provider": provider_of(metrics)} if metrics is not None else None
    try:
        return ShipbotConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError([_format_error(e) for e in exc.errors()]) from None


def load_config(path: Path) -> ShipbotConfig:
    """Read and validate a config file; every problem is reported at once."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", exc)
        raise ConfigError([f"{path}{where}: not valid YAML ({problem})"]) from None
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping with 'environments' and 'services'"])
    return parse_config(data)


def json_schema() -> dict[str, Any]:
    return ShipbotConfig.model_json_schema()
