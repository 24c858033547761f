"""The ``kubernetes`` provider's settings, checked when the config is loaded.

A Deployment (``namespace``/``deployment``) whose container ``container`` gets the
image ``image`` names (a template with ``{version}``); ``cluster:`` says how to reach
the API server (see ``integrations.kube_config``). ``canary:`` turns traffic shifting on:
by pod count (``mode: replicas``) or by an HTTPRoute's weights (``mode: gateway``).
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from integrations.base import Capability, JobSpec, ProviderConfig
from integrations.command_templates import JOB_PLACEHOLDERS, check_placeholders, render
from integrations.kube_config import KubeConnection

# A DNS-1123 label (namespaces, Services, containers) and subdomain (object names), as
# Kubernetes checks them.
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
CANARY_SUFFIX = "-canary"


def _label(value: str) -> str:
    if len(value) > 63 or not _LABEL.fullmatch(value):
        raise ValueError("must be a Kubernetes name (DNS-1123 label): at most 63 lowercase "
                         "letters, digits and '-', starting and ending with a letter or "
                         "digit, e.g. api")
    return value


def _object_name(value: str) -> str:
    if len(value) > 253 - len(CANARY_SUFFIX) or not _SUBDOMAIN.fullmatch(value):
        raise ValueError("must be a Kubernetes object name (DNS-1123 subdomain): lowercase "
                         "letters, digits, '-' and '.', starting and ending with a letter "
                         "or digit, e.g. api")
    return value


Label = Annotated[str, AfterValidator(_label)]
ObjectName = Annotated[str, AfterValidator(_object_name)]


class CanaryConfig(BaseModel):
    """How the new version gets a share of the traffic before it replaces the stable one."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    mode: Literal["replicas", "gateway"] = Field(
        description="replicas: a <deployment>-canary Deployment behind the same Service, "
        "the share is its share of the pods; gateway: exact weights on an HTTPRoute")
    httproute: ObjectName | None = Field(
        None, description="gateway: the HTTPRoute whose weights change")
    stable_service: Label | None = Field(None, description="gateway: the stable pods' Service")
    canary_service: Label | None = Field(None, description="gateway: the canary pods' Service")

    @model_validator(mode="after")
    def _gateway_names(self) -> CanaryConfig:
        names = (self.httproute, self.stable_service, self.canary_service)
        if self.mode == "gateway" and None in names:
            raise ValueError("mode: gateway needs httproute, stable_service and "
                             "canary_service")
        if self.mode == "replicas" and names != (None, None, None):
            raise ValueError("httproute, stable_service and canary_service are for "
                             "mode: gateway; mode: replicas splits by pod count")
        if self.mode == "gateway" and self.stable_service == self.canary_service:
            raise ValueError("stable_service and canary_service must differ")
        return self


class KubernetesConfig(ProviderConfig):
    """Sets a Deployment's container image and follows the rollout as kubectl does."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.HEALTH, Capability.ROLLBACK, Capability.TRAFFIC})
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {Capability.TRAFFIC: "canary:"}

    provider: Literal["kubernetes"] = "kubernetes"
    cluster: KubeConnection = Field(default_factory=KubeConnection)
    namespace: Label
    deployment: ObjectName = Field(description="the apps/v1 Deployment")
    container: Label = Field(description="the container (by name) whose image changes")
    image: str = Field(min_length=1, description="e.g. registry.example.com/api:{version}; "
                       "{service} {env} {version}. A build's recorded artifact wins")
    canary: CanaryConfig | None = None
    timeout_seconds: float = Field(900.0, gt=0, description="the whole rollout")

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        check_placeholders([value], JOB_PLACEHOLDERS)
        if any(c.isspace() for c in value):
            raise ValueError("an image reference has no spaces")
        return value

    def capabilities(self) -> frozenset[Capability]:
        on = {Capability.CANCEL, Capability.HEALTH, Capability.ROLLBACK}
        if self.canary is not None:
            on.add(Capability.TRAFFIC)
        return frozenset(on)

    def image_for(self, job: JobSpec) -> str:
        """What the build recorded when it did (build once, deploy that), else the
        template filled with the job's version."""
        if job.artifact:
            return job.artifact
        return render(self.image, {"service": job.service, "env": job.env,
                                   "version": job.version})

    @property
    def canary_name(self) -> str:
        return self.deployment + CANARY_SUFFIX
