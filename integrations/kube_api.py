"""Calls to a Kubernetes API server, with its ``Status`` errors turned into sentences.

Shared by every provider that talks to a cluster (Deployments, Argo Rollouts, Gateway
API routes). Kubernetes answers a failed call with a ``Status`` object (``reason``,
``message``, ``details``); the errors here say what was denied, missing or refused in
Kubernetes' own words and what to do about it:

- 401: the credentials (named: a service account token, a kubeconfig user) were refused;
- 403: RBAC denied a verb on a resource in a namespace (the API's message names the user);
- 404: names the kind, namespace and object;
- 409: ``Conflict``; ``update`` reads again and retries with the fresh ``resourceVersion``;
- 422 and other 4xx: the API's message; 429: ``RateLimited`` with its ``Retry-After``;
- 5xx, timeouts, refused connections: ``ProviderUnavailable``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from integrations.base import IntegrationError, RateLimited
from integrations.http import (
    HttpOptions,
    NotFound,
    ProviderHTTPError,
    ProviderUnavailable,
    Rejected,
    TokenRefused,
    new_client,
    rate_limit_wait,
    send,
    snippet,
)
from integrations.kube_config import Credentials, KubeConnection, TLSCache, resolve

PatchType = Literal["strategic", "merge", "json"]
CONTENT_TYPES: dict[PatchType, str] = {
    "strategic": "application/strategic-merge-patch+json",
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
}
VERBS = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create",
         "DELETE": "delete"}
CONFLICT_ATTEMPTS = 5


class Conflict(ProviderHTTPError):
    """409: the object changed since it was read (or already exists)."""


@dataclass(frozen=True)
class KubeRef:
    """One object (or, without ``name``, a collection) of one resource type."""

    group_version: str  # "apps/v1", "argoproj.io/v1alpha1", "v1"
    resource: str  # plural: "deployments"
    kind: str  # for messages: "Deployment"
    namespace: str
    name: str | None = None

    @property
    def path(self) -> str:
        root = "/api/v1" if self.group_version == "v1" else f"/apis/{self.group_version}"
        path = f"{root}/namespaces/{self.namespace}/{self.resource}"
        return f"{path}/{self.name}" if self.name else path

    @property
    def label(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.name else \
            f"{self.resource} in namespace {self.namespace}"

    def named(self, name: str) -> KubeRef:
        return KubeRef(self.group_version, self.resource, self.kind, self.namespace, name)


class KubeAPI:
    """JSON calls to one API server; each call reads the credentials again (rotated
    service-account tokens) and uses a short-lived client. A kubeconfig's TLS context
    (its client key) is kept while the kubeconfig is unchanged."""

    def __init__(self, conn: KubeConnection, *, provider: str = "kubernetes",
                 options: HttpOptions | None = None,
                 environ: Mapping[str, str] = os.environ) -> None:
        self._conn, self._provider = conn, provider
        self._options, self._environ = options or HttpOptions(), environ
        self._tls: TLSCache = {}  # this client's kubeconfig TLS context (resolve)

    async def get(self, ref: KubeRef, **params: str) -> dict[str, Any]:
        return await self._json("GET", ref, params=params)

    async def list(self, ref: KubeRef, **params: str) -> list[dict[str, Any]]:
        """The items of a collection (``labelSelector=...`` as a keyword)."""
        items = (await self._json("GET", ref, params=params)).get("items")
        return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []

    async def create(self, ref: KubeRef, body: dict[str, Any]) -> dict[str, Any]:
        return await self._json("POST", ref, json=body)

    async def patch(self, ref: KubeRef, body: Any, patch_type: PatchType = "merge", *,
                    subresource: str | None = None) -> dict[str, Any]:
        """A patch of the object (or of its ``status``/``scale`` subresource)."""
        return await self._json("PATCH", ref, json=body, subresource=subresource,
                                headers={"Content-Type": CONTENT_TYPES[patch_type]})

    async def update(self, ref: KubeRef,
                     change: Callable[[dict[str, Any]], dict[str, Any] | None]
                     ) -> dict[str, Any]:
        """Read, compute a merge patch from what was read, and apply it only if nothing
        changed in between (``resourceVersion``); on 409 read again and retry. ``change``
        returning None means nothing to do: the object as read is returned."""
        for _ in range(CONFLICT_ATTEMPTS):
            current = await self.get(ref)
            patch = change(current)
            if patch is None:
                return current
            version = current.get("metadata", {}).get("resourceVersion")
            patch.setdefault("metadata", {})["resourceVersion"] = version
            try:
                return await self.patch(ref, patch, "merge")
            except Conflict:
                continue
        raise IntegrationError(f"{ref.label} kept changing while Shipbot updated it "
                               f"({CONFLICT_ATTEMPTS} conflicts in a row); will retry")

    async def _json(self, method: str, ref: KubeRef, *, subresource: str | None = None,
                    **kwargs: Any) -> dict[str, Any]:
        # Files (tokens, kubeconfig, certificates) are read off the event loop.
        creds = await asyncio.to_thread(resolve, self._conn, self._environ, self._tls)
        path = ref.path + (f"/{subresource}" if subresource else "")
        async with new_client(self._provider, creds.server, headers=creds.headers,
                              timeout_seconds=self._conn.request_timeout_seconds,
                              options=self._options, verify=creds.verify) as client:
            response = await send(client, self._provider, self._server_label(creds),
                                  self._options, method, path, **kwargs)
        raise_for_kube_status(response, ref, creds, VERBS.get(method, method.lower()),
                              subresource)
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise IntegrationError(f"the Kubernetes API server answered {path} with something "
                                   "other than a JSON object: is cluster.server the API "
                                   "server's URL?")
        return body

    @staticmethod
    def _server_label(creds: Credentials) -> str:
        return f"the Kubernetes API server {urlsplit(creds.server).netloc}"


def status_message(response: httpx.Response) -> str:
    """The ``message`` of a Kubernetes ``Status`` answer, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return snippet(response.text, 300)
    message = body.get("message") if isinstance(body, dict) else None
    return snippet(message) if isinstance(message, str) else snippet(response.text, 300)


def raise_for_kube_status(response: httpx.Response, ref: KubeRef, creds: Credentials,
                          verb: str, subresource: str | None = None) -> None:
    """Nothing below 400; else the error that says what Kubernetes refused and why (RBAC
    grants a subresource such as ``rollouts/status`` apart from its resource)."""
    code = response.status_code
    if code < 400:
        return
    said = status_message(response)
    wait = rate_limit_wait(response) if code == 429 else None
    if wait is not None:
        raise RateLimited(f"the Kubernetes API server asked Shipbot to slow down (HTTP "
                          f"429); trying again in {wait:.0f} s", wait)
    if code == 401:
        raise TokenRefused(f"the Kubernetes API server did not accept {creds.who} (HTTP "
                           "401): check that it is valid and not expired", code)
    if code == 403:
        resource = f"{ref.resource}/{subresource}" if subresource else ref.resource
        raise TokenRefused(f"Kubernetes RBAC denied Shipbot ({creds.who}) to {verb} "
                           f"{resource} in namespace {ref.namespace}: {said}. Grant "
                           "the verb in Shipbot's Role (see the README)", code)
    if code == 404:
        raise NotFound(f"{ref.label} was not found (HTTP 404): check the namespace and "
                       "name in shipbot.yml, and that the resource type is installed", code)
    if code == 409:
        raise Conflict(f"{ref.label} changed while Shipbot updated it (HTTP 409): {said}",
                       code)
    if code >= 500:
        raise ProviderUnavailable(f"the Kubernetes API server answered HTTP {code} for "
                                  f"{ref.label}: {said}; will retry")
    raise Rejected(f"Kubernetes refused to {verb} {ref.label} (HTTP {code}): {said}", code)
