"""A small stateful Kubernetes API server for tests: Deployments and the ReplicaSets the
Deployment controller makes for them, HTTPRoutes, with the API's ``Status`` errors.

Objects are built from tests/fixtures/kubernetes (shaped as the API reference shows them).
The Deployment controller is played over time (``tick()``, or every read of a Deployment
with ``auto_advance``): a change of ``spec.template`` makes a ReplicaSet with the next
``deployment.kubernetes.io/revision`` (or gives an existing one with the same template the
next revision, as a rollback does); ``status.observedGeneration`` lags a tick behind
``metadata.generation``; then the new pods are created, the old ones terminate, the new
ones become available, one stage per tick. The image's tag decides how it ends:
``fail*`` misses the progress deadline (``Progressing`` False, reason
``ProgressDeadlineExceeded``), ``slow*`` never becomes available, anything else rolls
out. A route's gateway accepts a new generation of it (``observedGeneration`` of its
parents' conditions) at the next tick.

PATCH takes strategic-merge, merge and JSON patches; a ``metadata.resourceVersion`` in a
merge patch that is not the current one is a 409 ``Conflict`` (``conflicts`` makes the
next N patches meet a concurrent writer). ``deny`` answers chosen (verb, resource) pairs
with RBAC's 403; an empty image or negative replicas are 422 ``Invalid``. ``handler``
serves httpx.MockTransport; ``app`` serves it on loopback for a whole bot.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

from tests.fake_http import serving_app
from tests.fake_kube_controller import REVISION, DeploymentController, Rollout, fixture, uid
from tests.fake_kube_patch import PatchError, json_patch, merge_patch

SERVICE_ACCOUNT = "system:serviceaccount:shipbot:shipbot"
GROUPS = {"deployments": "apps", "replicasets": "apps",
          "httproutes": "gateway.networking.k8s.io"}
VERBS = {"GET": "get", "PATCH": "patch", "POST": "create", "PUT": "update",
         "DELETE": "delete"}


def status(code: int, reason: str, message: str, name: str = "", resource: str = ""
           ) -> httpx.Response:
    """A ``Status`` answer, shaped as the fixtures (and the API conventions) show it."""
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}
    if resource:
        body["details"] = {"name": name, "group": GROUPS.get(resource, ""), "kind": resource}
    return httpx.Response(code, json=body)


@dataclass
class FakeKubernetes(DeploymentController):
    token: str
    namespace: str = "prod"
    auto_advance: bool = False
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)
    replica_sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    routes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    deny: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource)
    allow: set[tuple[str, str]] | None = None  # a Role: only these (verb, resource)
    conflicts: int = 0
    requests: list[httpx.Request] = field(default_factory=list)
    _version: int = 48300

    # -- setting the scene ---------------------------------------------------------------

    def add_deployment(self, name: str = "api", image: str = "registry.example.com/api:v1",
                       replicas: int = 3, container: str = "api") -> dict[str, Any]:
        """A Deployment that rolled out ``image`` long ago (revision 1)."""
        dep = fixture("deployment.json")
        meta = dep["metadata"]
        meta.update(name=name, namespace=self.namespace, labels={"app": name},
                    uid=uid(name), resourceVersion=self._next_version())
        dep["spec"]["replicas"] = replicas
        dep["spec"]["selector"]["matchLabels"] = {"app": name}
        dep["spec"]["template"]["metadata"]["labels"] = {"app": name}
        dep["spec"]["template"]["spec"]["containers"][0].update(name=container, image=image)
        self.deployments[name] = dep
        self._controller_sees(dep)
        self.rollouts[name].stage = 4
        self._set_status(dep)
        return dep

    def add_route(self, name: str = "api") -> dict[str, Any]:
        route = fixture("httproute.json")
        route["metadata"].update(name=name, namespace=self.namespace)
        self.routes[name] = route
        return route

    def tick(self) -> None:
        for name, dep in self.deployments.items():
            rollout = self.rollouts[name]
            if rollout.stage < 4:
                rollout.stage += 1
            self._set_status(dep)
        for route in self.routes.values():  # the gateway controller accepts what it sees
            for parent in route["status"]["parents"]:
                for cond in parent["conditions"]:
                    cond["observedGeneration"] = route["metadata"]["generation"]

    # -- what tests look at --------------------------------------------------------------

    def sent(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r.method, r.url.path) for r in self.requests
                if method is None or r.method == method]

    def patches(self, path_end: str = "") -> list[tuple[str, Any]]:
        """(content type, body) of every PATCH whose path ends with ``path_end``."""
        return [(r.headers["content-type"], json.loads(r.content)) for r in self.requests
                if r.method == "PATCH" and r.url.path.endswith(path_end)]

    def image(self, name: str = "api", container: str = "api") -> str:
        for c in self.deployments[name]["spec"]["template"]["spec"]["containers"]:
            if c["name"] == container:
                return str(c["image"])
        raise KeyError(container)

    def history(self, name: str = "api") -> list[tuple[int, str]]:
        """(revision, first image) of the Deployment's ReplicaSets, oldest first."""
        uid = self.deployments[name]["metadata"]["uid"]
        found = [(int(rs["metadata"]["annotations"][REVISION]),
                  rs["spec"]["template"]["spec"]["containers"][0]["image"])
                 for rs in self.replica_sets.values()
                 if rs["metadata"]["ownerReferences"][0]["uid"] == uid]
        return sorted(found)

    # -- the API -------------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json=fixture("status_unauthorized.json"))
        parts = request.url.path.strip("/").split("/")
        root = 2 if parts[0] == "api" else 3  # /api/v1/... or /apis/<group>/<version>/...
        if len(parts) < root + 3 or parts[root] != "namespaces":
            return status(404, "NotFound", "the server could not find the requested resource")
        ns, resource, name = parts[root + 1], parts[root + 2], \
            (parts[root + 3] if len(parts) > root + 3 else "")
        verb = VERBS.get(request.method, request.method.lower())
        if resource == "replicasets" and not name and verb == "get":
            verb = "list"
        if (verb, resource) in self.deny or (
                self.allow is not None and (verb, resource) not in self.allow):
            what = f'{resource}.{GROUPS.get(resource, "")} "{name}"' if name else \
                f"{resource}.{GROUPS.get(resource, '')}"
            return status(403, "Forbidden", f'{what} is forbidden: User "{SERVICE_ACCOUNT}" '
                          f'cannot {verb} resource "{resource}" in API group '
                          f'"{GROUPS.get(resource, "")}" in the namespace "{ns}"',
                          name, resource)
        store = {"deployments": self.deployments, "replicasets": self.replica_sets,
                 "httproutes": self.routes}.get(resource)
        if store is None or ns != self.namespace:
            return self._missing(resource, name or resource)
        return self._serve(request, verb, resource, store, name)

    def _serve(self, request: httpx.Request, verb: str, resource: str,
               store: dict[str, dict[str, Any]], name: str) -> httpx.Response:
        if verb == "list":
            return httpx.Response(200, json=self._list(request.url.params))
        if verb == "create" and resource == "deployments":
            return self._create(json.loads(request.content))
        if name not in store:
            return self._missing(resource, name)
        if verb == "get":
            if resource == "deployments" and self.auto_advance:
                self.tick()
            return httpx.Response(200, json=store[name])
        if verb == "patch":
            return self._patch(request, resource, store, name)
        return status(405, "MethodNotAllowed", "the server does not allow this method")

    def _missing(self, resource: str, name: str) -> httpx.Response:
        body = fixture("status_not_found.json")
        body["message"] = f'{resource}.{GROUPS.get(resource, "")} "{name}" not found'
        body["details"].update(name=name, group=GROUPS.get(resource, ""), kind=resource)
        return httpx.Response(404, json=body)

    def _list(self, params: httpx.QueryParams) -> dict[str, Any]:
        wanted = dict(p.split("=", 1) for p in params.get("labelSelector", "").split(",") if p)
        items = [rs for rs in self.replica_sets.values()
                 if wanted.items() <= rs["metadata"]["labels"].items()]
        return {**fixture("replicaset_list.json"), "items": items}

    def _patch(self, request: httpx.Request, resource: str,
               store: dict[str, dict[str, Any]], name: str) -> httpx.Response:
        current = store[name]
        kind = request.headers.get("content-type", "")
        body = json.loads(request.content)
        if self.conflicts > 0:  # someone else wrote it just before us
            self.conflicts -= 1
            current["metadata"]["resourceVersion"] = self._next_version()
            return self._conflict(name, resource)
        asked = body.get("metadata", {}).get("resourceVersion") \
            if isinstance(body, dict) else None
        if asked is not None and asked != current["metadata"]["resourceVersion"]:
            return self._conflict(name, resource)
        try:
            if kind == "application/json-patch+json":
                patched = json_patch(current, body)
            else:
                patched = merge_patch(current, body,
                                      strategic=kind.startswith("application/strategic"))
        except PatchError as exc:
            return status(422, "Invalid", f'{resource} "{name}" is invalid: {exc}', name,
                          resource)
        invalid = _invalid(patched) if resource == "deployments" else None
        if invalid:
            body = fixture("status_invalid.json")
            body["message"] = f'Deployment.apps "{name}" is invalid: {invalid}'
            return httpx.Response(422, json=body)
        patched["metadata"]["resourceVersion"] = self._next_version()
        if resource == "httproutes" and patched["spec"] != current["spec"]:
            patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
        if resource == "deployments" and patched["spec"] != current["spec"]:
            patched["metadata"]["generation"] = current["metadata"]["generation"] + 1
            store[name] = patched
            self._controller_sees(patched, current["spec"]["template"])
        store[name] = patched
        return httpx.Response(200, json=patched)

    def _conflict(self, name: str, resource: str) -> httpx.Response:
        body = fixture("status_conflict.json")
        body["message"] = body["message"].replace('"api"', f'"{name}"')
        body["details"]["name"] = name
        return httpx.Response(409, json=body)

    def _create(self, body: dict[str, Any]) -> httpx.Response:
        name = body["metadata"]["name"]
        if name in self.deployments:
            return status(409, "AlreadyExists", f'deployments.apps "{name}" already exists',
                          name, "deployments")
        dep = copy.deepcopy(body)
        dep["metadata"].update(uid=uid(name), generation=1, namespace=self.namespace,
                               resourceVersion=self._next_version())
        dep["status"] = {}
        self.deployments[name] = dep
        self._controller_sees(dep)
        return httpx.Response(201, json=dep)

    def _next_version(self) -> str:
        self._version += 1
        return str(self._version)

    # -- on loopback, for a whole bot ----------------------------------------------------

    def app(self) -> web.Application:
        return serving_app(self.handler)


def _invalid(dep: dict[str, Any]) -> str | None:
    for i, c in enumerate(dep["spec"]["template"]["spec"].get("containers") or []):
        if not c.get("image"):
            return f"spec.template.spec.containers[{i}].image: Required value"
    if int(dep["spec"].get("replicas", 1)) < 0:
        return (f"spec.replicas: Invalid value: {dep['spec']['replicas']}: must be greater "
                "than or equal to 0")
    return None
