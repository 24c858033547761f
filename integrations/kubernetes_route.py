"""A Gateway API HTTPRoute's weights between the stable and the canary Service.

The rule whose ``backendRefs`` name both Services gets weights ``100 - w`` and ``w``
(the other rules and fields are left as they are), written as a merge patch guarded by
the ``resourceVersion`` that was read (``KubeAPI.update``: a 409 reads again). The
weights count once the route's gateway controllers say so: every parent's ``Accepted``
condition at the route's ``metadata.generation`` (``observedGeneration``), as the Gateway
API reports a route's status (https://gateway-api.sigs.k8s.io/reference/spec/#httproute).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from integrations.base import IntegrationError, RunState, RunStatus
from integrations.kube_api import KubeRef
from integrations.kubernetes_rollout import generation

if TYPE_CHECKING:
    from integrations.kube_api import KubeAPI
    from integrations.kubernetes_config import CanaryConfig


class Route:
    def __init__(self, canary: CanaryConfig, namespace: str, api: KubeAPI) -> None:
        assert canary.httproute and canary.stable_service and canary.canary_service
        self._stable, self._canary = canary.stable_service, canary.canary_service
        self._api = api
        self.ref = KubeRef("gateway.networking.k8s.io/v1", "httproutes", "HTTPRoute",
                           namespace, canary.httproute)

    def _weights(self, weight: int) -> dict[str, int]:
        return {self._stable: 100 - weight, self._canary: weight}

    def _rules(self, route: dict[str, Any], weight: int) -> list[dict[str, Any]]:
        """The route's rules with the weights set; IntegrationError without such a rule."""
        wanted = self._weights(weight)
        rules = copy.deepcopy(route.get("spec", {}).get("rules") or [])
        found = False
        for rule in rules:
            refs = rule.get("backendRefs") or []
            if set(wanted) <= {r.get("name") for r in refs}:
                found = True
                for backend in refs:
                    if backend.get("name") in wanted:
                        backend["weight"] = wanted[backend["name"]]
        if not found:
            raise IntegrationError(
                f"{self.ref.label} has no rule whose backendRefs name both {self._stable} "
                f"and {self._canary}: add both Services to one rule (the canary's with "
                "weight: 0)")
        return rules

    async def set(self, weight: int) -> None:
        """Idempotent: a route that has the weights already is not written."""
        def change(route: dict[str, Any]) -> dict[str, Any] | None:
            rules = self._rules(route, weight)
            return None if rules == route.get("spec", {}).get("rules") else \
                {"spec": {"rules": rules}}

        await self._api.update(self.ref, change)

    async def status(self, weight: int) -> RunStatus:
        """Succeeded once the weights are there and every gateway accepted them."""
        route = await self._api.get(self.ref)
        if self._rules(route, weight) != route.get("spec", {}).get("rules"):
            return RunStatus(state=RunState.FAILED, detail=(
                f"someone else changed the weights of {self.ref.label} (Shipbot set "
                f"{self._canary} to {weight} %)"))
        waiting: list[str] = []
        for parent in route.get("status", {}).get("parents") or []:
            name = parent.get("parentRef", {}).get("name", "?")
            accepted: dict[str, Any] = next((c for c in parent.get("conditions") or []
                                             if c.get("type") == "Accepted"), {})
            if int(accepted.get("observedGeneration") or 0) < generation(route):
                waiting.append(name)
            elif accepted.get("status") == "False":
                return RunStatus(state=RunState.FAILED, detail=(
                    f"Gateway {name} did not accept {self.ref.label}: "
                    f"{accepted.get('reason')}: {accepted.get('message') or 'no message'}"))
        if waiting:
            return RunStatus(state=RunState.RUNNING, detail=(
                f"waiting for Gateway {', '.join(waiting)} to accept the new weights"))
        return RunStatus(state=RunState.SUCCEEDED, detail=(
            f"HTTPRoute {self.ref.name} sends {weight} % to {self._canary}"))
