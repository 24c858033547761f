"""The ``github_actions`` provider's settings, checked when the config is loaded.

The token is never in the config: ``token_env`` names the environment variable that
holds it (read per request, so a rotated token needs no restart), or a GitHub App signs
in with the key in ``private_key_env`` (``github_auth.GitHubAccess``); those variables'
values are redacted from everything Shipbot shows.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from integrations.base import Capability, LatestVersion, ProviderConfig
from integrations.command_templates import JOB_PLACEHOLDERS, check_placeholders
from integrations.github_auth import GitHubAccess

_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")
_WORKFLOW = re.compile(r"[0-9]+|[A-Za-z0-9._-]+\.ya?ml")
_INPUT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,99}")
MAX_INPUTS = 25  # GitHub's limit for workflow_dispatch inputs




class GitHubActionsConfig(ProviderConfig, GitHubAccess):
    """Dispatches a workflow (``on: workflow_dispatch``) and follows the run it started."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.LATEST_VERSION, Capability.COMPARE, Capability.CHECKS})
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {
        Capability.LATEST_VERSION: "latest_version.branch or latest_version.tag_pattern",
        Capability.CHECKS: "required_checks"}

    provider: Literal["github_actions"] = "github_actions"
    repository: str = Field(description="owner/name, e.g. acme/api")
    workflow: str = Field(description="the workflow's file name (build.yml) or numeric id")
    ref: str = Field(min_length=1, description="branch or tag to run the workflow from; "
                     "{service} {env} {version}")
    inputs: dict[str, str] = Field(
        default_factory=lambda: {"service": "{service}", "environment": "{env}",
                                 "version": "{version}"},
        description="workflow inputs, templated with {service} {env} {version}; the "
                    "workflow must declare each of them")
    correlation_input: str = Field(
        "shipbot_id", description="input carrying Shipbot's id for the run; the workflow's "
                                  "run-name must contain it")
    timeout_seconds: float = Field(3600.0, gt=0, description="the whole run, queue included")
    request_timeout_seconds: float = Field(30.0, gt=0, le=300)
    max_poll_seconds: float = Field(
        30.0, ge=0, le=600, description="the longest pause between two looks at a run; "
        "early on it is looked at more often (a tenth of its age so far)")
    appear_within_seconds: float = Field(
        300.0, gt=0, description="a dispatch whose run does not show up by then has failed")
    latest_version: LatestVersion | None = None
    required_checks: list[str] | Literal["all"] | None = Field(
        None, description="the quality gate: a commit is deployed only once these check runs "
        "or commit statuses (by name/context) passed on it; `all`: every one reported")

    def capabilities(self) -> frozenset[Capability]:
        found = {Capability.CANCEL, Capability.COMPARE}
        if self.latest_version is not None:
            found.add(Capability.LATEST_VERSION)
        if self.required_checks is not None:
            found.add(Capability.CHECKS)
        return frozenset(found)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not _REPOSITORY.fullmatch(value):
            raise ValueError(f"must be owner/name (e.g. acme/api), not {value!r}")
        return value

    @field_validator("workflow")
    @classmethod
    def _workflow(cls, value: str) -> str:
        if not _WORKFLOW.fullmatch(value):
            raise ValueError("must be the workflow's file name (build.yml, as in "
                             f".github/workflows/) or its numeric id, not {value!r}")
        return value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        check_placeholders([value], JOB_PLACEHOLDERS)
        return value

    @field_validator("required_checks")
    @classmethod
    def _check_names(cls, value: list[str] | str | None) -> list[str] | str | None:
        if isinstance(value, list):
            if not value:
                raise ValueError("name at least one check, or `all`; leave it out for no gate")
            if any(not name.strip() for name in value):
                raise ValueError("a check's name must not be empty")
            if len(set(value)) != len(value):
                raise ValueError("a check is named twice")
        return value

    @model_validator(mode="after")
    def _inputs(self) -> GitHubActionsConfig:
        for name, template in self.inputs.items():
            if not _INPUT.fullmatch(name):
                raise ValueError(f"inputs: {name!r} is not a valid input name")
            check_placeholders([template], JOB_PLACEHOLDERS)
        if not _INPUT.fullmatch(self.correlation_input):
            raise ValueError("correlation_input: not a valid input name")
        if self.correlation_input in self.inputs:
            raise ValueError(f"inputs: {self.correlation_input} is the correlation input, "
                             "which Shipbot fills itself")
        if len(self.inputs) + 1 > MAX_INPUTS:
            raise ValueError(f"inputs: GitHub takes at most {MAX_INPUTS} inputs, the "
                             "correlation input included")
        return self
