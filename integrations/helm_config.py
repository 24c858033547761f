"""The ``helm`` deploy target's config: which release, which chart, where, and how the
version reaches the chart's values. Checked at load; the argv is built per run from it
(``integrations.helm``) and run by the command provider's supervisor."""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from integrations.base import Capability, ProviderConfig
from integrations.command_templates import ProviderEnvName, check_placeholders

# A Helm values path as --set takes it: keys separated by dots, list indexes in brackets.
_SET_PATH = re.compile(r"[A-Za-z0-9_-]+(\[[0-9]+\])?(\.[A-Za-z0-9_-]+(\[[0-9]+\])?)*")
# Helm's own rule for release names (DNS-1123 label-ish, at most 53 characters).
_RELEASE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


class HelmConfig(ProviderConfig):
    """``helm upgrade --install`` of one release per service and environment."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.ROLLBACK, Capability.HEALTH})
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {
        Capability.ROLLBACK: "native_rollback: true",
        Capability.HEALTH: "health: true"}

    provider: Literal["helm"] = "helm"
    release: str = Field(min_length=1, description="the release name; {service} {env} "
                         "allowed, e.g. `{service}-{env}`")
    chart: str = Field(min_length=1, description="a chart reference as helm takes it: "
                       "./charts/api, bitnami/nginx or oci://registry/charts/api")
    chart_version: str | None = Field(None, min_length=1, description="--version")
    namespace: str | None = Field(None, min_length=1, description="--namespace "
                                  "(created if missing: --create-namespace)")
    kube_context: str | None = Field(None, min_length=1, description="--kube-context")
    kubeconfig: str | None = Field(None, min_length=1, description="passed to helm as "
                                   "$KUBECONFIG")
    values_files: list[str] = Field(default_factory=list, description="-f, in order; "
                                    "{service} {env} allowed")
    set_path: str = Field("image.tag", description="the value that gets the version "
                          "(--set-string PATH=<version>)")
    set_artifact_path: str | None = Field(
        None, description="the value that gets the build's recorded artifact (e.g. "
        "image.digest); left out when the build recorded none")
    binary: str = Field("helm", min_length=1, description="the helm executable")
    timeout_seconds: float = Field(600.0, gt=0, description="helm's --timeout")
    pass_env: list[ProviderEnvName] = Field(
        default_factory=list, description="names of the bot's environment variables helm "
        "gets (besides PATH, HOME, locale, TZ and KUBECONFIG)")
    secret_env: list[ProviderEnvName] = Field(
        default_factory=list, description="like pass_env, and redacted from what Shipbot shows")
    workdir: str | None = Field(None, description="where helm runs: relative chart and "
                                "values paths start here")
    output_lines: int = Field(20, ge=0, le=1000)
    native_rollback: bool = Field(True, description="roll back with `helm rollback` to the "
                                  "revision that ran the earlier version")
    health: bool = Field(False, description="check `helm status` says deployed after a deploy")
    create_namespace: bool = Field(False, description="--create-namespace")

    @field_validator("release")
    @classmethod
    def _release(cls, release: str) -> str:
        check_placeholders([release], ("service", "env"))
        literal = release.replace("{service}", "a").replace("{env}", "a")
        if not _RELEASE.fullmatch(literal) or len(literal) > 53:
            raise ValueError("a release name is lower-case letters, digits and '-' (at "
                             "most 53), starting and ending with a letter or digit")
        return release

    @field_validator("values_files")
    @classmethod
    def _values_files(cls, files: list[str]) -> list[str]:
        for name in files:
            if not name:
                raise ValueError("a values file name must not be empty")
        check_placeholders(files, ("service", "env"))
        return files

    @field_validator("set_path", "set_artifact_path")
    @classmethod
    def _set_path(cls, path: str | None) -> str | None:
        if path is not None and not _SET_PATH.fullmatch(path):
            raise ValueError(f"{path!r} is not a values path as --set takes it (e.g. "
                             "image.tag or containers[0].tag)")
        return path

    @field_validator("chart", "chart_version", "namespace", "kube_context", "binary")
    @classmethod
    def _not_an_option(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("-"):
            raise ValueError("must not start with '-': helm would read it as an option")
        check_placeholders([value or ""], ("service", "env"))
        return value

    @model_validator(mode="after")
    def _distinct_paths(self) -> HelmConfig:
        if self.set_artifact_path == self.set_path:
            raise ValueError("set_artifact_path must differ from set_path: one value "
                             "cannot hold both the version and the artifact")
        if both := sorted(set(self.pass_env) & set(self.secret_env)):
            raise ValueError(f"secret_env: {', '.join(both)} is also in pass_env; list a "
                             "secret in secret_env only")
        if "KUBECONFIG" in (*self.pass_env, *self.secret_env) and self.kubeconfig:
            raise ValueError("KUBECONFIG is both passed on and set by kubeconfig; keep one")
        return self

    def capabilities(self) -> frozenset[Capability]:
        on = {Capability.CANCEL}
        if self.native_rollback:
            on.add(Capability.ROLLBACK)
        if self.health:
            on.add(Capability.HEALTH)
        return frozenset(on)
