"""The ``gitlab`` provider's settings, checked when the config is loaded.

Secrets are never in the config: ``token_env`` names the variable holding a personal,
project or group access token (sent as ``PRIVATE-TOKEN``), ``trigger_token_env`` the one
holding an optional pipeline trigger token. Both are read per request (a rotated token
needs no restart) and their values are redacted from everything Shipbot shows.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal
from urllib.parse import quote, unquote

import httpx
from pydantic import Field, field_validator, model_validator

from integrations.base import Capability, LatestVersion, ProviderConfig
from integrations.command_templates import JOB_PLACEHOLDERS, ProviderEnvName, check_placeholders
from integrations.http_auth import check_http_url

GITLAB_COM = "https://gitlab.com"
API_PATH = "/api/v4"
_PROJECT_PATH = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_][A-Za-z0-9_.-]*)+")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,254}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
CORRELATION_VARIABLE = "SHIPBOT_CORRELATION_ID"
DEFAULT_VARIABLES = {"SHIPBOT_SERVICE": "{service}", "SHIPBOT_ENV": "{env}",
                     "SHIPBOT_VERSION": "{version}"}




class GitLabConfig(ProviderConfig):
    """Creates a GitLab CI pipeline on a ref, with variables, and follows it."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.LATEST_VERSION, Capability.COMPARE})
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {
        Capability.LATEST_VERSION: "latest_version.branch or latest_version.tag_pattern",
        Capability.COMPARE: "compare: true"}

    provider: Literal["gitlab"] = "gitlab"
    project: str = Field(description="numeric project id, or its path group/sub/project "
                                     "(as in the project's URL; Shipbot URL-encodes it)")
    ref: str = Field("main", min_length=1, description="branch or tag the pipeline runs "
                     "on; {service} {env} {version}")
    ref_from_version: bool = Field(
        False, description="run the pipeline on the tag (or branch) the version names "
        "instead of ref")
    variables: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_VARIABLES),
        description="pipeline variables, templated with {service} {env} {version}")
    correlation_variable: str = Field(
        CORRELATION_VARIABLE, description="variable carrying Shipbot's id for the "
        "pipeline, so a restart finds the pipeline instead of creating another one")
    token_env: ProviderEnvName = Field(
        "GITLAB_TOKEN", description="NAME of the environment variable holding an access "
        "token (scope api; Developer role) sent as PRIVATE-TOKEN")
    trigger_token_env: ProviderEnvName | None = Field(
        None, description="NAME of the environment variable holding a pipeline trigger "
        "token: pipelines are then created with the trigger API (token_env still follows "
        "and cancels them)")
    base_url: str = Field(GITLAB_COM, description="self-managed GitLab: https://HOST (the "
                                                  "API is at {base_url}/api/v4)")
    timeout_seconds: float = Field(3600.0, gt=0, description="the whole pipeline, queue "
                                                             "included")
    request_timeout_seconds: float = Field(30.0, gt=0, le=300)
    max_poll_seconds: float = Field(
        30.0, ge=0, le=600, description="the longest pause between two looks at a "
        "pipeline; early on it is looked at more often (a tenth of its age so far)")
    latest_version: LatestVersion | None = None
    compare: bool = Field(True, description="list the commits between the running and the "
                                            "new version (repository compare API)")

    def capabilities(self) -> frozenset[Capability]:
        found = {Capability.CANCEL}
        if self.latest_version is not None:
            found.add(Capability.LATEST_VERSION)
        if self.compare:
            found.add(Capability.COMPARE)
        return frozenset(found)

    @property
    def label(self) -> str:
        """How messages name the server: "GitLab", or "GitLab at gitlab.example.com"."""
        return "GitLab" if self.base_url == GITLAB_COM else \
            f"GitLab at {httpx.URL(self.base_url).host}"

    @property
    def api(self) -> str:
        return self.base_url + API_PATH

    @property
    def project_ref(self) -> str:
        """The project as it goes in a URL: its id, or its path URL-encoded (a%2Fb)."""
        return quote(self.project, safe="")

    @property
    def project_url(self) -> str | None:
        """The project's page, when it is named by path (an id says nothing of it)."""
        return None if self.project.isdigit() else f"{self.base_url}/{self.project}"

    @model_validator(mode="before")
    @classmethod
    def _no_token_here(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in ("token", "trigger_token", "private_token"):
                if key in data:
                    raise ValueError(
                        f"{key}: never write a token in shipbot.yml; export it and name "
                        "the variable in token_env (e.g. token_env: GITLAB_TOKEN) or "
                        "trigger_token_env")
        return data

    @field_validator("token_env", "trigger_token_env", mode="before")
    @classmethod
    def _a_name(cls, value: object) -> object:
        if isinstance(value, str) and not _ENV_NAME.fullmatch(value):
            raise ValueError("must be the NAME of the environment variable holding the token "
                             "(e.g. GITLAB_TOKEN), never the token itself")
        return value

    @field_validator("project", mode="before")
    @classmethod
    def _project(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            return value
        path = unquote(value).strip().strip("/")  # group%2Fapi is group/api
        if not (path.isdigit() or _PROJECT_PATH.fullmatch(path)):
            raise ValueError("must be the numeric project id or its path group/project "
                             f"(subgroups allowed, as in the project's URL), not {value!r}")
        return path

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        check_placeholders([value], JOB_PLACEHOLDERS)
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parsed = check_http_url(value)
        if parsed.query or parsed.fragment:
            raise ValueError("base_url must not have a ?query or #fragment")
        value = value.rstrip("/")
        if value.endswith(API_PATH):  # the API's URL given: the server's is wanted
            value = value[: -len(API_PATH)]
        return value

    @model_validator(mode="after")
    def _variables(self) -> GitLabConfig:
        for name, template in self.variables.items():
            if not _VARIABLE.fullmatch(name):
                raise ValueError(f"variables: {name[:60]!r} is not a valid variable name "
                                 "(letters, digits and _)")
            check_placeholders([template], JOB_PLACEHOLDERS)
        if not _VARIABLE.fullmatch(self.correlation_variable):
            raise ValueError("correlation_variable: not a valid variable name")
        if self.correlation_variable in self.variables:
            raise ValueError(f"variables: {self.correlation_variable} is the correlation "
                             "variable, which Shipbot fills itself")
        if self.trigger_token_env is not None and self.trigger_token_env == self.token_env:
            raise ValueError("trigger_token_env: a trigger token cannot follow or cancel "
                             "pipelines; name a different variable than token_env")
        return self
