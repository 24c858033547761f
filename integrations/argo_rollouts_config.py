"""The ``argo_rollouts`` deploy target's config: which Rollout, which container, how the
image is named, and who judges the canary (Shipbot's analysis or Argo's own)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, field_validator

from integrations.base import Capability, JobSpec, ProviderConfig
from integrations.kube_config import KubeConnection

_DNS_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


class ArgoRolloutsConfig(ProviderConfig):
    """``analysis: shipbot``: Shipbot's canary steps walk the Rollout's ``pause: {}``
    steps and Shipbot's judges decide; ``analysis: argo``: Shipbot deploys (rolling) and
    follows Argo's whole rollout, its AnalysisRuns deciding."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.TRAFFIC, Capability.HEALTH, Capability.ROLLBACK})

    provider: Literal["argo_rollouts"]
    cluster: KubeConnection = Field(default_factory=KubeConnection,
                                    description="the API server; default: in-cluster")
    namespace: str = Field(pattern=_DNS_NAME, max_length=63)
    rollout: str = Field(pattern=_DNS_NAME, description="the Rollout's metadata.name")
    container: str = Field(pattern=_DNS_NAME, max_length=63,
                           description="the container of the pod template to update")
    image: str = Field(min_length=1, description="image reference template, e.g. "
                       "registry.example.com/api:{version}; a build's recorded artifact wins")
    analysis: Literal["shipbot", "argo"] = "shipbot"

    @field_validator("image")
    @classmethod
    def _template(cls, image: str) -> str:
        try:
            image.format(version="v1")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError("image may use only {version} (e.g. "
                             "registry.example.com/api:{version})") from exc
        if any(c.isspace() for c in image):
            raise ValueError("image must not contain spaces")
        return image

    def strategy_refusal(self, kind: str, analysis: bool) -> str | None:
        if self.analysis == "argo" and (kind != "rolling" or analysis):
            return ("with analysis: argo the Rollout's own steps and AnalysisRuns run the "
                    "rollout (its pauses become Shipbot pauses): use the rolling strategy "
                    "without Shipbot analysis, or set analysis: shipbot to drive the Rollout "
                    "with a Shipbot canary whose steps mirror it")
        if self.analysis == "shipbot" and kind != "canary":
            return (f"the argo_rollouts target drives a canary Rollout step by step: a "
                    f"{kind} strategy would leave it waiting at its first pause. Use a canary "
                    "whose steps mirror the Rollout's (setWeight + pause: {} per weight), or "
                    "analysis: argo with the rolling strategy")
        return None

    def image_for(self, job: JobSpec) -> str:
        """What the Rollout's container should run for ``job``."""
        return job.artifact or self.image.format(version=job.version)
