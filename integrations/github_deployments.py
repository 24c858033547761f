"""The GitHub Deployments mirror: each Shipbot deployment is a GitHub Deployment of its
version to the environment of the same name, and its state changes are that deployment's
statuses, so the repository's Environments page tells the same story as the channel.

``report`` creates the deployment (``POST /repos/{o}/{r}/deployments``: ``auto_merge``
off, no required contexts, Shipbot's id in the payload) when it has no id yet, finding
the one it already created first (a crash between GitHub's answer and saving its id must
not leave two), then posts the status (``POST .../deployments/{id}/statuses``) with the
Slack thread as ``log_url``; a status that may have been sent already (a replica died
before recording it) is posted only when it is not the deployment's latest (``GET
.../statuses``). ``auto_inactive`` lets GitHub mark the deployment a success
supersedes inactive.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from pydantic import ConfigDict, Field, field_validator

from integrations.base import IntegrationError, MirrorUpdate
from integrations.github_auth import GitHubAccess, GitHubCredentials
from integrations.http import HttpOptions, Rejected
from integrations.http_auth import check_http_url

PROVIDER = "github_deployments"
MAX_DESCRIPTION = 140  # GitHub's limit for a deployment's and a status's description
_REPOSITORY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}")


class GitHubDeploymentsConfig(GitHubAccess):
    """``services.<name>.github_deployments``: where to mirror the service's deployments.
    Without ``repository`` (and auth) the service's github_actions CI lends its own."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    repository: str | None = Field(None, description="owner/name; default: the CI's")
    environment_urls: dict[str, str] = Field(
        default_factory=dict, description="environment name -> its URL, shown on GitHub")
    request_timeout_seconds: float = Field(30.0, gt=0, le=300)

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY.fullmatch(value):
            raise ValueError(f"must be owner/name (e.g. acme/api), not {value!r}")
        return value

    @field_validator("environment_urls")
    @classmethod
    def _urls(cls, value: dict[str, str]) -> dict[str, str]:
        for url in value.values():
            check_http_url(url)
        return value

    def auth_given(self) -> bool:
        """Whether this stanza says how to sign in (else the CI's way is used)."""
        return bool({"token_env", "app_id", "base_url"} & self.model_fields_set)


class GitHubDeployments:
    """``DeploymentMirror`` on GitHub Deployments."""

    def __init__(self, config: GitHubDeploymentsConfig, *, options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ,
                 clock: Callable[[], float] = time.time) -> None:
        if config.repository is None:
            raise ValueError("github_deployments needs its repository")
        self._config, self._repo = config, config.repository
        self._options, self._clock = options or HttpOptions(), clock
        self._credentials = GitHubCredentials(
            config, PROVIDER, environ=environ, options=self._options, clock=clock,
            request_timeout_seconds=config.request_timeout_seconds)

    async def report(self, update: MirrorUpdate) -> str:
        found = update.mirror_id or await self._find(update)
        mirror_id = found or await self._create(update)
        if found and update.maybe_sent and await self._latest_is(mirror_id, update):
            return mirror_id  # the attempt that died had sent it
        body: dict[str, Any] = {"state": update.state.value, "environment": update.env,
                                "description": _short(update.description),
                                "auto_inactive": True}
        if update.log_url:
            body["log_url"] = update.log_url
        url = self._config.environment_urls.get(update.env)
        if url:
            body["environment_url"] = url
        await self._call("POST", f"/repos/{self._repo}/deployments/{mirror_id}/statuses",
                         f"deployment {mirror_id} in {self._repo}", json=body)
        return mirror_id

    async def _find(self, update: MirrorUpdate) -> str | None:
        """The deployment created for ``update.key`` before (its payload says so)."""
        response = await self._call(
            "GET", f"/repos/{self._repo}/deployments", f"repository {self._repo}",
            # Not by ref: the commit may have become known since it was created (by name).
            params={"environment": update.env, "per_page": "100"})
        found = _json(response)
        for item in found if isinstance(found, list) else []:
            payload = item.get("payload") if isinstance(item, dict) else None
            if isinstance(payload, dict) and payload.get("shipbot_key") == update.key \
                    and item.get("id") is not None:
                return str(item["id"])
        return None

    async def _latest_is(self, mirror_id: str, update: MirrorUpdate) -> bool:
        """Whether the deployment's newest status is ``update`` (its state and words)."""
        response = await self._call(
            "GET", f"/repos/{self._repo}/deployments/{mirror_id}/statuses",
            f"deployment {mirror_id} in {self._repo}", params={"per_page": "100"})
        found = _json(response)
        statuses = [s for s in found if isinstance(s, dict) and isinstance(s.get("id"), int)] \
            if isinstance(found, list) else []
        if not statuses:
            return False
        latest = max(statuses, key=lambda s: int(s["id"]))  # the order is not documented
        return (latest.get("state"), latest.get("description")) == (
            update.state.value, _short(update.description))

    async def _create(self, update: MirrorUpdate) -> str:
        """For the version's name (a tag: what people read on the Environments page); when
        GitHub knows no such ref (an image tag, a build number) and the build reported its
        commit, for that commit."""
        try:
            return await self._create_for(update, update.version)
        except Rejected as exc:
            if exc.status != 422 or not update.commit or update.commit == update.version:
                raise
            return await self._create_for(update, update.commit)

    async def _create_for(self, update: MirrorUpdate, ref: str) -> str:
        body = {"ref": ref, "task": "deploy", "auto_merge": False,
                "required_contexts": [], "environment": update.env,
                "description": _short(f"Shipbot #{update.deployment_id}: {update.service} "
                                      f"{update.version} to {update.env}"),
                "payload": {"shipbot_deployment_id": update.deployment_id,
                            "shipbot_key": update.key}}
        response = await self._call("POST", f"/repos/{self._repo}/deployments",
                                    f"repository {self._repo} (or ref {ref})", json=body)
        data = _json(response)
        if response.status_code != 201 or not isinstance(data, dict) or "id" not in data:
            said = data.get("message") if isinstance(data, dict) else None
            raise IntegrationError(f"{self._config.label} did not create the deployment of "
                                   f"{update.version} to {update.env}: "
                                   f"{said or f'HTTP {response.status_code}'}")
        return str(data["id"])

    async def _call(self, method: str, path: str, missing: str, **kwargs: Any
                    ) -> httpx.Response:
        return await self._credentials.request(
            method, path, missing, f"the GitHub Deployments mirror for {self._repo}", **kwargs)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_DESCRIPTION else text[:MAX_DESCRIPTION - 1] + "…"


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def lent_by_ci(config: GitHubDeploymentsConfig, ci: GitHubAccess | None,
               ci_repository: str | None) -> GitHubDeploymentsConfig:
    """``config`` with what it leaves out (repository, how to sign in) taken from the
    service's github_actions CI settings; ValueError when there is nothing to take."""
    if config.repository is not None:
        return config
    if ci is None or ci_repository is None:
        raise ValueError("repository: name the repository (owner/name); only a "
                         "github_actions CI lends its own")
    update: dict[str, Any] = {"repository": ci_repository}
    if not config.auth_given():
        update.update(token_env=ci.token_env, app_id=ci.app_id,
                      installation_id=ci.installation_id, private_key_env=ci.private_key_env,
                      base_url=ci.base_url)
    return config.model_copy(update=update)
