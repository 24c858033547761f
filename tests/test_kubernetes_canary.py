"""Canaries of a Deployment without a mesh, against the fake API server: by pod count
(a second Deployment behind the same Service) and by an HTTPRoute's weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from integrations.base import IntegrationError, JobSpec, RunState
from integrations.kubernetes import KubernetesProvider
from integrations.kubernetes_canary import canary_replicas
from tests.fake_kubernetes import FakeKubernetes
from tests.test_kubernetes import IMAGE, TOKEN, follow, make

GATEWAY = {"mode": "gateway", "httproute": "api", "stable_service": "api-stable",
           "canary_service": "api-canary"}
ROUTE = "/apis/gateway.networking.k8s.io/v1/namespaces/prod/httproutes/api"


def job(step: str, version: str = "ok-2") -> JobSpec:
    return JobSpec(key=f"deployment-4-abc-{step}", service="api", env="production",
                   version=version, strategy="canary")


@pytest.fixture
def kube() -> FakeKubernetes:
    fake = FakeKubernetes(token=TOKEN)
    fake.add_deployment(image=f"{IMAGE}:v1", replicas=10)
    fake.add_route()
    return fake


def replicas(kube: FakeKubernetes) -> tuple[int, int]:
    return (kube.deployments["api"]["spec"]["replicas"],
            kube.deployments["api-canary"]["spec"]["replicas"])


def weights(kube: FakeKubernetes) -> dict[str, int]:
    rule = kube.routes["api"]["spec"]["rules"][0]
    return {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}


async def started(kube: FakeKubernetes, **extra: Any) -> KubernetesProvider:
    provider = make(kube, **extra)
    await follow(kube, provider, await provider.start(job("deploy")))
    return provider


@pytest.mark.parametrize(("weight", "total", "pods"), [
    (10, 10, 1), (25, 10, 3), (50, 3, 2), (1, 3, 1), (0, 10, 0), (100, 10, 10), (99, 10, 10)])
def test_canary_pods_approximate_the_weight(weight: int, total: int, pods: int) -> None:
    assert canary_replicas(weight, total) == pods


async def test_the_canary_deployment_is_made_from_the_stable_one(kube: FakeKubernetes) -> None:
    provider = make(kube, canary={"mode": "replicas"})
    run_id = await provider.start(job("deploy"))
    assert run_id == "rollout/prod/api-canary/1/deployment-4-abc-deploy"
    [post] = [r for r in kube.requests if r.method == "POST"]
    canary = kube.deployments["api-canary"]
    assert post.url.path == "/apis/apps/v1/namespaces/prod/deployments"
    assert canary["spec"]["selector"]["matchLabels"] == {"app": "api", "track": "canary"}
    assert canary["spec"]["template"]["metadata"]["labels"] == {"app": "api",
                                                                "track": "canary"}
    assert canary["spec"]["replicas"] == 0  # no traffic before the first weight
    assert kube.image("api-canary") == f"{IMAGE}:ok-2" and kube.image() == f"{IMAGE}:v1"
    assert canary["metadata"]["annotations"]["shipbot.io/total-replicas"] == "10"
    assert (await follow(kube, provider, run_id))[-1].state is RunState.SUCCEEDED
    assert await make(kube, canary={"mode": "replicas"}).start(job("deploy")) == run_id
    assert len([r for r in kube.requests if r.method in ("POST", "PATCH")]) == 1


async def test_weights_by_pod_count_keep_the_total(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    run_id = await provider.set_weight(job("weight-10"), 10)
    assert run_id == "weight/prod/api-canary/10/deployment-4-abc-weight-10"
    assert replicas(kube) == (9, 1)
    status = (await follow(kube, provider, run_id))[-1]
    assert (status.state, status.detail) == (
        RunState.SUCCEEDED, "1 of 10 pods = 10 % on the canary (asked 10 %)")
    status = (await follow(kube, provider, await provider.set_weight(job("weight-25"), 25)))[-1]
    assert replicas(kube) == (7, 3)
    assert status.detail == "3 of 10 pods = 30 % on the canary (asked 25 %)"
    # the canary grows before the stable shrinks: capacity never dips
    patched = [r.url.path.rsplit("/", 1)[-1] for r in kube.requests if r.method == "PATCH"]
    assert patched[-2:] == ["api-canary", "api"]


async def test_a_repeated_weight_after_a_restart_changes_nothing(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    run_id = await provider.set_weight(job("weight-10"), 10)
    count = len(kube.patches())
    assert await make(kube, canary={"mode": "replicas"}).set_weight(
        job("weight-10"), 10) == run_id
    assert len(kube.patches()) == count


async def test_promote_rolls_the_stable_out_then_removes_the_canary(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    await follow(kube, provider, await provider.set_weight(job("weight-50"), 50))
    assert replicas(kube) == (5, 5)
    run_id = await provider.promote(job("promote"))
    assert kube.image() == f"{IMAGE}:ok-2" and replicas(kube) == (10, 5)
    status = (await follow(kube, provider, run_id))[-1]
    assert status.state is RunState.SUCCEEDED
    assert status.detail == ("Deployment api rolled out: 10 of 10 pods updated and "
                             "available; the canary was removed")
    assert replicas(kube) == (10, 0)


async def test_abort_gives_the_stable_its_pods_back(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    await follow(kube, provider, await provider.set_weight(job("weight-25"), 25))
    run_id = await provider.abort(job("abort"))
    assert replicas(kube) == (10, 0) and kube.image() == f"{IMAGE}:v1"
    status = (await follow(kube, provider, run_id))[-1]
    assert status.state is RunState.SUCCEEDED and status.detail.startswith(
        "the canary was removed; Deployment api rolled out: 10 of 10")


async def test_gateway_weights_are_exact_on_the_httproute(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    assert replicas(kube) == (10, 10)  # the canary can take any share
    assert weights(kube) == {"api-stable": 100, "api-canary": 0}
    run_id = await provider.set_weight(job("weight-10"), 10)
    [(content_type, body)] = kube.patches("/httproutes/api")
    assert content_type == "application/merge-patch+json"
    version = body["metadata"].pop("resourceVersion")
    assert version == "51002"  # the route as read: a concurrent change is a 409
    [rule] = body["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "api-stable", "port": 8080, "weight": 90},
        {"group": "", "kind": "Service", "name": "api-canary", "port": 8080, "weight": 10}]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    seen = await follow(kube, provider, run_id)
    assert [s.detail for s in seen] == [
        "waiting for Gateway public to accept the new weights",
        "HTTPRoute api sends 10 % to api-canary"]
    assert replicas(kube) == (10, 10)  # pods do not move with a route


async def test_a_route_the_gateway_refuses_fails_the_step(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    run_id = await provider.set_weight(job("weight-10"), 10)
    kube.tick()
    accepted = kube.routes["api"]["status"]["parents"][0]["conditions"][0]
    accepted.update(status="False", reason="NotAllowedByListeners",
                    message="No listener allows this route")
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.FAILED, "Gateway public did not accept HTTPRoute prod/api: "
        "NotAllowedByListeners: No listener allows this route")


async def test_weights_changed_by_someone_else_fail_the_step(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    run_id = await provider.set_weight(job("weight-10"), 10)
    kube.routes["api"]["spec"]["rules"][0]["backendRefs"][1]["weight"] = 50
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.FAILED, "someone else changed the weights of HTTPRoute prod/api (Shipbot "
        "set api-canary to 10 %)")


async def test_a_new_canary_takes_back_what_an_abandoned_one_left(
        kube: FakeKubernetes) -> None:
    """A canary left at 30 % (its deployment failed before an abort): the next one starts
    with the stable Deployment at full strength and nothing on the canary."""
    provider = await started(kube, canary={"mode": "replicas"})
    await provider.set_weight(job("weight-30"), 30)
    assert replicas(kube) == (7, 3)
    await make(kube, canary={"mode": "replicas"}).start(job("deploy", "ok-3"))
    assert replicas(kube) == (10, 0)
    assert kube.deployments["api-canary"]["metadata"]["annotations"][
        "shipbot.io/total-replicas"] == "10"
    patched = [r.url.path.rsplit("/", 1)[-1] for r in kube.requests if r.method == "PATCH"]
    assert patched[-2:] == ["api", "api-canary"]  # stable back up before the canary goes


async def test_a_reused_canary_runs_the_stable_pod_spec_of_now(kube: FakeKubernetes) -> None:
    """The canary Deployment left by an earlier release is brought to the stable one's pod
    template of now (its env, sidecars, resources) with the new image: what it tests is
    what promote ships."""
    provider = await started(kube, canary={"mode": "replicas"})
    await follow(kube, provider, await provider.promote(job("promote")))
    stable = kube.deployments["api"]["spec"]["template"]
    stable["spec"]["containers"][0].update(  # the manifest changed since (kubectl apply)
        env=[{"name": "FEATURE_X", "value": "on"}], resources={"limits": {"memory": "1Gi"}})
    stable["spec"]["containers"][1]["image"] = "registry.example.com/log-shipper:2.4"
    stable["spec"]["containers"].append({"name": "proxy", "image": "envoy:1.30"})
    stable["metadata"]["annotations"] = {"checksum/config": "abc"}
    run_id = await make(kube, canary={"mode": "replicas"}).start(
        JobSpec(key="deployment-5-def-deploy", service="api", env="production",
                version="ok-3", strategy="canary"))
    canary = kube.deployments["api-canary"]["spec"]["template"]
    want = {**stable, "metadata": {**stable["metadata"],
                                   "labels": {"app": "api", "track": "canary"}}}
    want["spec"] = {**stable["spec"], "containers": [
        {**stable["spec"]["containers"][0], "image": f"{IMAGE}:ok-3"},
        *stable["spec"]["containers"][1:]]}
    assert canary == want
    assert kube.deployments["api"]["spec"]["template"]["spec"]["containers"][0][
        "image"] == f"{IMAGE}:ok-2"  # the stable one is untouched
    assert (await follow(kube, provider, run_id))[-1].state is RunState.SUCCEEDED


async def test_an_abandoned_gateway_canary_gets_no_traffic_from_the_next_deploy(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    await provider.set_weight(job("weight-30"), 30)
    await make(kube, canary=GATEWAY).start(job("deploy", "ok-3"))
    assert weights(kube) == {"api-stable": 100, "api-canary": 0}


async def test_a_weight_cut_short_by_a_crash_is_finished_by_its_repeat(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    # the canary was scaled up and marked, then the process died before the stable half
    kube.deployments["api-canary"]["spec"]["replicas"] = 1
    kube.deployments["api-canary"]["metadata"]["annotations"][
        "shipbot.io/deploy-key"] = "deployment-4-abc-weight-10"
    await provider.set_weight(job("weight-10"), 10)
    assert replicas(kube) == (9, 1)
    canary_patches = [r for r in kube.requests if r.method == "PATCH"
                      and r.url.path.endswith("/api-canary")]
    assert canary_patches == []  # only the stable half was left to do


async def test_gateway_promote_and_abort_send_everything_back_to_stable(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    await provider.set_weight(job("weight-30"), 30)
    await follow(kube, provider, await provider.promote(job("promote")))
    assert weights(kube) == {"api-stable": 100, "api-canary": 0}
    assert replicas(kube) == (10, 0) and kube.image() == f"{IMAGE}:ok-2"
    again = await started(kube, canary=GATEWAY)
    await again.set_weight(job("weight-30", "ok-3"), 30)
    await again.abort(job("abort", "ok-3"))
    assert weights(kube) == {"api-stable": 100, "api-canary": 0}
    assert kube.image() == f"{IMAGE}:ok-2"


async def test_a_route_conflict_is_retried_with_the_fresh_resource_version(
        kube: FakeKubernetes) -> None:
    provider = await started(kube, canary=GATEWAY)
    kube.conflicts = 1
    await provider.set_weight(job("weight-10"), 10)
    sent = [body["metadata"]["resourceVersion"] for _, body in kube.patches("/httproutes/api")]
    final = int(kube.routes["api"]["metadata"]["resourceVersion"])
    assert sent == ["51002", str(final - 1)]  # as read, then as the other writer left it
    assert weights(kube) == {"api-stable": 90, "api-canary": 10}


async def test_a_route_without_both_services_says_what_to_add(kube: FakeKubernetes) -> None:
    provider = make(kube, canary={**GATEWAY, "canary_service": "api-next"})
    with pytest.raises(IntegrationError) as info:  # at the deploy step, before any pod
        await provider.start(job("deploy"))
    assert str(info.value) == (
        "HTTPRoute prod/api has no rule whose backendRefs name both api-stable and "
        "api-next: add both Services to one rule (the canary's with weight: 0)")


async def test_a_weight_without_a_canary_deployment_is_a_clear_error(
        kube: FakeKubernetes) -> None:
    with pytest.raises(IntegrationError) as info:
        await make(kube, canary={"mode": "replicas"}).set_weight(job("weight-10"), 10)
    assert str(info.value) == ("cannot send 10 % to the canary: Deployment prod/api-canary "
                               "does not exist (the deploy step creates it; was it deleted?)")


@pytest.mark.parametrize("weight", [-1, 101, True])
async def test_a_weight_outside_0_100_is_refused(kube: FakeKubernetes, weight: int) -> None:
    with pytest.raises(IntegrationError, match="whole number 0-100"):
        await make(kube, canary={"mode": "replicas"}).set_weight(job("w"), weight)


async def test_a_rolling_deploy_of_a_canary_target_replaces_the_stable_one(
        kube: FakeKubernetes) -> None:
    provider = make(kube, canary={"mode": "replicas"})
    await provider.start(job("deploy").model_copy(update={"strategy": "rolling"}))
    assert kube.image() == f"{IMAGE}:ok-2" and "api-canary" not in kube.deployments


def readme_role() -> set[tuple[str, str]]:
    """The (verb, resource) pairs of the Role the README tells users to apply."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("### Kubernetes"):]
    block = section[section.index("kind: Role\n") - len("apiVersion: rbac.authorization"
                                                          ".k8s.io/v1\n"):]
    role = yaml.safe_load(block[:block.index("---")])
    return {(verb, resource) for rule in role["rules"] for resource in rule["resources"]
            for verb in rule["verbs"]}


async def test_the_readme_role_is_all_a_whole_gateway_canary_needs(
        kube: FakeKubernetes) -> None:
    """Everything Shipbot does, under exactly the Role the README documents."""
    kube.allow = readme_role()
    assert kube.allow == {("get", "deployments"), ("patch", "deployments"),
                          ("create", "deployments"), ("list", "replicasets"),
                          ("get", "httproutes"), ("patch", "httproutes")}
    provider = await started(kube, canary=GATEWAY)
    await follow(kube, provider, await provider.health(job("health")))
    await follow(kube, provider, await provider.set_weight(job("weight-10"), 10))
    await follow(kube, provider, await provider.abort(job("abort")))
    await follow(kube, provider, await provider.set_weight(job("weight-20"), 20))
    await follow(kube, provider, await provider.promote(job("promote")))
    rollback = job("undo", "v1").model_copy(update={"strategy": "rolling"})
    await follow(kube, provider, await provider.rollback(rollback))
    slow = await provider.start(job("slow", "slow-9").model_copy(update={"strategy": "rolling"}))
    await provider.cancel(slow)
    assert kube.image() == f"{IMAGE}:v1"
    assert not [r for r in kube.requests if r.method not in ("GET", "PATCH", "POST")]


async def test_cancelling_a_canary_being_prepared_takes_its_pods(
        kube: FakeKubernetes) -> None:
    provider = make(kube, canary=GATEWAY)
    run_id = await provider.start(job("deploy", "slow-2"))
    kube.tick()
    assert (await provider.poll(run_id)).state is RunState.RUNNING
    await provider.cancel(run_id)
    assert replicas(kube) == (10, 0) and kube.image() == f"{IMAGE}:v1"
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "was cancelled")


async def test_cancelling_a_promote_undoes_the_stable_rollout(kube: FakeKubernetes) -> None:
    provider = await started(kube, canary={"mode": "replicas"})
    kube.deployments["api-canary"]["metadata"]["annotations"]["shipbot.io/image"] = \
        f"{IMAGE}:slow-2"  # a promote whose stable pods never become available
    run_id = await provider.promote(job("promote"))
    kube.tick()
    await provider.cancel(run_id)
    assert kube.image() == f"{IMAGE}:v1"
    assert (await provider.poll(run_id)).detail == (
        "was cancelled and rolled back to the previous revision")
