"""The kubernetes deploy target against a stateful fake API server (httpx.MockTransport):
the exact patches it sends, what it reports over a rollout's life as kubectl would, the
undo, the cancel, and each error in words."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from integrations.base import IntegrationError, JobSpec, NoUndo, RunState, RunStatus
from integrations.http import HttpOptions, NotFound, Rejected, TokenRefused
from integrations.kubernetes import KubernetesProvider
from integrations.kubernetes_config import KubernetesConfig
from tests.fake_kubernetes import SERVICE_ACCOUNT, FakeKubernetes

TOKEN = "k8s-" + "t" * 30
IMAGE = "registry.example.com/api"
KEY = "deployment-7-abc123def456-deploy"
DEPLOYMENT = "/apis/apps/v1/namespaces/prod/deployments/api"


def job(version: str, key: str = KEY, artifact: str | None = None) -> JobSpec:
    return JobSpec(key=key, service="api", env="production", version=version,
                   artifact=artifact)


def config(**extra: Any) -> KubernetesConfig:
    return KubernetesConfig.model_validate({
        "provider": "kubernetes", "namespace": "prod", "deployment": "api",
        "container": "api", "image": IMAGE + ":{version}",
        "cluster": {"server": "https://k8s.example.com:6443", "token_env": "K8S_TOKEN"},
        **extra})


def make(kube: FakeKubernetes, **extra: Any) -> KubernetesProvider:
    return KubernetesProvider(config(**extra),
                              options=HttpOptions(transport=httpx.MockTransport(kube.handler)),
                              environ={"K8S_TOKEN": TOKEN})


@pytest.fixture
def kube() -> FakeKubernetes:
    fake = FakeKubernetes(token=TOKEN)
    fake.add_deployment(image=f"{IMAGE}:v1")
    return fake


async def follow(kube: FakeKubernetes, provider: KubernetesProvider, run_id: str,
                 limit: int = 10) -> list[RunStatus]:
    """Every status until the run ends, the controller moving one stage between polls."""
    seen = [await provider.poll(run_id)]
    while seen[-1].state is RunState.RUNNING:
        assert len(seen) < limit, seen
        kube.tick()
        seen.append(await provider.poll(run_id))
    return seen


async def test_start_patches_the_container_image_and_annotates_the_deployment(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    read = kube.deployments["api"]["metadata"]["resourceVersion"]
    run_id = await provider.start(job("ok-2"))
    assert run_id == f"rollout/prod/api/2/{KEY}"
    [(content_type, body)] = kube.patches()
    assert content_type == "application/strategic-merge-patch+json"
    assert body["metadata"].pop("resourceVersion") == read  # guards the start
    assert body == {"metadata": {"annotations": {
        "shipbot.io/deploy-key": KEY, "shipbot.io/image": f"{IMAGE}:ok-2",
        "kubernetes.io/change-cause": f"shipbot: api ok-2 by deployment key {KEY}"}},
        "spec": {"template": {"spec": {"containers": [
            {"name": "api", "image": f"{IMAGE}:ok-2"}]}}}}
    # the other container is untouched: containers merge by name
    containers = kube.deployments["api"]["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("api", f"{IMAGE}:ok-2"), ("log-shipper", "registry.example.com/log-shipper:2.3")]
    assert "shipbot.io/deploy-key" not in kube.deployments["api"]["spec"]["template"][
        "metadata"].get("annotations", {})


async def test_a_rollout_is_followed_as_kubectl_rollout_status_follows_it(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("ok-2"))
    seen = await follow(kube, provider, run_id)
    assert [s.detail for s in seen] == [
        "waiting for the Deployment controller to see the change",
        "2 of 3 new pods updated",
        "1 old pods pending termination",
        "2 of 3 updated pods available",
        "Deployment api rolled out: 3 of 3 pods updated and available"]
    assert seen[-1].state is RunState.SUCCEEDED
    assert kube.history() == [(1, f"{IMAGE}:v1"), (2, f"{IMAGE}:ok-2")]


async def test_the_build_artifact_is_deployed_exactly(kube: FakeKubernetes) -> None:
    digest = IMAGE + "@sha256:" + "ab" * 32
    await make(kube).start(job("v2", artifact=digest))
    assert kube.image() == digest


async def test_a_missed_progress_deadline_fails_with_the_controllers_message(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    seen = await follow(kube, provider, await provider.start(job("fail-2")))
    assert seen[-1].state is RunState.FAILED
    new_rs = kube.rollouts["api"].replica_set
    assert new_rs.startswith("api-") and new_rs in kube.replica_sets
    assert seen[-1].detail == (
        "Deployment api exceeded its progress deadline (ProgressDeadlineExceeded: "
        f'ReplicaSet "{new_rs}" has timed out progressing.)')


async def test_a_start_after_a_restart_patches_nothing_and_polls_the_same_run(
        kube: FakeKubernetes) -> None:
    run_id = await make(kube).start(job("ok-2"))
    kube.tick()
    again = make(kube)  # a new process: nothing in memory
    assert await again.start(job("ok-2")) == run_id
    assert len(kube.patches()) == 1
    assert (await follow(kube, again, run_id))[-1].state is RunState.SUCCEEDED


async def test_a_conflict_is_read_again_and_retried_with_the_fresh_resource_version(
        kube: FakeKubernetes) -> None:
    kube.conflicts = 1  # another writer, between Shipbot's read and its patch
    read = kube.deployments["api"]["metadata"]["resourceVersion"]
    run_id = await make(kube).start(job("ok-2"))
    sent = [body["metadata"]["resourceVersion"] for _, body in kube.patches()]
    final = int(kube.deployments["api"]["metadata"]["resourceVersion"])
    assert sent == [read, str(final - 1)]  # as read, then as the other writer left it
    assert run_id == f"rollout/prod/api/2/{KEY}" and kube.image() == f"{IMAGE}:ok-2"


async def test_a_second_process_losing_the_race_does_not_patch_again(
        kube: FakeKubernetes) -> None:
    """Two processes read the Deployment before either patched: the second one's patch
    is refused (its resourceVersion is stale), it reads again and finds the first's key."""
    original = kube.handler
    raced: list[str] = []

    def racing(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and not raced:
            raced.append("first")  # the other process's patch lands first
            assert original(httpx.Request("PATCH", request.url, headers={
                "authorization": f"Bearer {TOKEN}",
                "content-type": "application/strategic-merge-patch+json"},
                content=request.content.replace(b'"resourceVersion"', b'"x"'))
                ).status_code == 200
        return original(request)

    kube.handler = racing  # type: ignore[method-assign]
    run_id = await make(kube).start(job("ok-2"))
    assert run_id == f"rollout/prod/api/2/{KEY}"
    assert kube.deployments["api"]["metadata"]["generation"] == 2


async def test_someone_else_changing_the_deployment_fails_the_run(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("slow-2"))
    other = make(kube)
    await other.start(job("ok-3", key="deployment-8-fff-deploy"))
    status = await provider.poll(run_id)
    assert status.state is RunState.FAILED
    assert status.detail == ("someone else changed the Deployment prod/api (generation 3, "
                             "Shipbot's change was 2)")


async def test_a_kubectl_set_image_in_between_is_someone_else_too(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("slow-2"))
    kube.deployments["api"]["spec"]["template"]["spec"]["containers"][0]["image"] = "x:9"
    kube.deployments["api"]["metadata"]["generation"] += 1
    assert "someone else changed" in (await provider.poll(run_id)).detail


async def test_rollback_patches_the_previous_revisions_template_as_kubectl_undo(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    await follow(kube, provider, await provider.start(job("ok-2")))
    undo = job("v1", key="deployment-9-aaa-deploy")
    run_id = await provider.rollback(undo)
    assert run_id == "undo/prod/api/3/deployment-9-aaa-deploy"
    content_type, ops = kube.patches()[-1]
    assert content_type == "application/json-patch+json"
    template = ops[0]["value"]
    assert ops[0]["op"] == "replace" and ops[0]["path"] == "/spec/template"
    assert template["metadata"]["labels"] == {"app": "api"}  # no pod-template-hash
    assert template["spec"]["containers"][0]["image"] == f"{IMAGE}:v1"
    assert {op["path"]: op["value"] for op in ops[1:]} == {
        "/metadata/annotations/shipbot.io~1deploy-key": "deployment-9-aaa-deploy",
        "/metadata/annotations/shipbot.io~1image": f"{IMAGE}:v1",
        "/metadata/annotations/kubernetes.io~1change-cause":
            "shipbot: rollback of api v1 to revision 1 by deployment key "
            "deployment-9-aaa-deploy"}
    assert (await follow(kube, provider, run_id))[-1].state is RunState.SUCCEEDED
    assert kube.history() == [(2, f"{IMAGE}:ok-2"), (3, f"{IMAGE}:v1")]  # as kubectl: 1→3
    assert await make(kube).rollback(undo) == run_id  # after a restart: no second undo
    assert len(kube.patches()) == 2


async def test_rollback_prefers_the_revision_running_the_version_to_return_to(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    for n, version in enumerate(("ok-2", "ok-3"), start=1):
        await follow(kube, provider, await provider.start(job(version, key=f"k-{n}")))
    await provider.rollback(job("v1", key="undo-1"))
    assert kube.patches()[-1][1][0]["value"]["spec"]["containers"][0]["image"] == \
        f"{IMAGE}:v1"


async def test_a_version_no_kept_revision_runs_is_not_undone_to_another(
        kube: FakeKubernetes) -> None:
    """v1's ReplicaSet is gone (revisionHistoryLimit): the revision before this one runs
    ok-2, not v1, so the undo says so instead of restoring it (the engine then deploys
    v1 with start)."""
    provider = make(kube)
    for n, version in enumerate(("ok-2", "ok-3"), start=1):
        await follow(kube, provider, await provider.start(job(version, key=f"k-{n}")))
    [v1] = [name for name, rs in kube.replica_sets.items()
            if rs["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:v1"]
    del kube.replica_sets[v1]
    with pytest.raises(NoUndo) as info:
        await provider.rollback(job("v1", key="undo"))
    assert str(info.value) == (
        f"no revision of Deployment api that Kubernetes kept runs {IMAGE}:v1 (kept: "
        f"revisions 2, 3): Shipbot deploys v1 again instead of kubectl rollout undo")
    assert len(kube.patches()) == 2 and kube.image() == f"{IMAGE}:ok-3"  # nothing undone


async def test_no_earlier_revision_is_a_clear_error(kube: FakeKubernetes) -> None:
    with pytest.raises(NoUndo) as info:  # the engine deploys v0 with start instead
        await make(kube).rollback(job("v0"))
    assert str(info.value) == ("Deployment api has no earlier revision to roll back to "
                               "(only revision 1 is kept): deploy the earlier version instead")
    assert kube.patches() == []


async def test_cancel_undoes_the_rollout_and_the_run_says_so(kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("slow-2"))
    kube.tick()
    await provider.cancel(run_id)
    assert kube.image() == f"{IMAGE}:v1"
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.FAILED, "was cancelled and rolled back to the previous revision")
    await provider.cancel(run_id)  # already ended: nothing more
    assert len(kube.patches()) == 2  # the start; the undo with the cancel's mark


def crashing_at(kube: FakeKubernetes, nth_patch: int) -> httpx.MockTransport:
    """The fake API, except that the ``nth_patch``-th PATCH from now never arrives: the
    bot died (or lost the connection) just before that write."""
    count = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal count
        if request.method == "PATCH":
            count += 1
            if count == nth_patch:
                raise httpx.ConnectError("the bot was killed here", request=request)
        return kube.handler(request)

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("dies_at", [1, 2])
async def test_a_cancel_cut_short_between_its_writes_still_undoes_on_its_repeat(
        kube: FakeKubernetes, dies_at: int) -> None:
    run_id = await make(kube).start(job("slow-2"))
    kube.tick()
    dying = KubernetesProvider(config(), options=HttpOptions(transport=crashing_at(kube, dies_at)),
                               environ={"K8S_TOKEN": TOKEN})
    try:
        await dying.cancel(run_id)
    except IntegrationError:
        pass  # the write that never arrived
    provider = make(kube)  # the next process repeats the cancel
    await provider.cancel(run_id)
    assert kube.image() == f"{IMAGE}:v1"
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.FAILED, "was cancelled and rolled back to the previous revision")


async def test_cancel_of_a_finished_rollout_changes_nothing(kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("ok-2"))
    await follow(kube, provider, run_id)
    await provider.cancel(run_id)
    assert len(kube.patches()) == 1 and kube.image() == f"{IMAGE}:ok-2"


async def test_health_reads_the_available_condition(kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.health(job("v1"))
    assert run_id == f"health/prod/api/1/{KEY}"
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.SUCCEEDED, "Deployment api is Available (Deployment has minimum "
        "availability.)")
    await provider.start(job("fail-2", key="k-2"))
    for _ in range(4):
        kube.tick()
    assert (await provider.poll(run_id)).state is RunState.FAILED


@pytest.mark.parametrize("run_id", ["no-such-run", "rollout/prod/api/x/k", "reboot/a/b/1/k"])
async def test_an_unknown_run_id_is_an_integration_error(kube: FakeKubernetes,
                                                         run_id: str) -> None:
    with pytest.raises(IntegrationError, match="unknown Kubernetes run"):
        await make(kube).poll(run_id)


@pytest.mark.parametrize("run_id", [f"rollout/staging/api/2/{KEY}",
                                    f"rollout/prod/web/2/{KEY}"])
async def test_a_run_on_another_deployment_is_refused(kube: FakeKubernetes,
                                                      run_id: str) -> None:
    with pytest.raises(IntegrationError, match=r"was shipbot\.yml changed during the "):
        await make(kube).cancel(run_id)
    assert kube.requests == []


async def test_rbac_denial_names_the_service_account_and_the_verb(
        kube: FakeKubernetes) -> None:
    kube.deny.add(("patch", "deployments"))
    with pytest.raises(TokenRefused) as info:
        await make(kube).start(job("ok-2"))
    assert str(info.value) == (
        "Kubernetes RBAC denied Shipbot (the token in K8S_TOKEN) to patch deployments in "
        f'namespace prod: deployments.apps "api" is forbidden: User "{SERVICE_ACCOUNT}" '
        'cannot patch resource "deployments" in API group "apps" in the namespace "prod". '
        "Grant the verb in Shipbot's Role (see the README)")
    assert TOKEN not in str(info.value)


async def test_a_missing_deployment_names_namespace_and_name(kube: FakeKubernetes) -> None:
    with pytest.raises(NotFound) as info:
        await make(kube, deployment="apii").start(job("ok-2"))
    assert str(info.value).startswith("Deployment prod/apii was not found (HTTP 404)")


async def test_a_refused_image_shows_the_apis_message(kube: FakeKubernetes) -> None:
    with pytest.raises(Rejected) as info:
        await make(kube, image="{version}").start(job(""))
    assert 'Deployment.apps "api" is invalid: spec.template.spec.containers[0].image: ' \
        "Required value" in str(info.value)


async def test_a_missing_container_lists_the_ones_there(kube: FakeKubernetes) -> None:
    with pytest.raises(IntegrationError) as info:
        await make(kube, container="web").start(job("ok-2"))
    assert str(info.value) == ("Deployment prod/api has no container named 'web' (it has: "
                               "api, log-shipper): fix container: in shipbot.yml")
    assert kube.patches() == []


async def test_a_paused_deployment_is_not_rolled_back(kube: FakeKubernetes) -> None:
    provider = make(kube)
    await follow(kube, provider, await provider.start(job("ok-2")))
    kube.deployments["api"]["spec"]["paused"] = True
    with pytest.raises(IntegrationError, match=r"is paused .* kubectl rollout resume"):
        await provider.rollback(job("v1", key="undo"))


async def test_a_paused_rollout_says_how_to_resume_and_a_cancel_undoes_nothing(
        kube: FakeKubernetes) -> None:
    provider = make(kube)
    run_id = await provider.start(job("slow-2"))
    kube.tick()
    kube.deployments["api"]["spec"]["paused"] = True  # kubectl rollout pause, by a human
    assert (await provider.poll(run_id)).detail == (
        "2 of 3 new pods updated (the Deployment is paused: kubectl rollout resume "
        "deployment/api -n prod)")
    await provider.cancel(run_id)
    assert kube.image() == f"{IMAGE}:slow-2"  # left for the human who paused it
    assert kube.deployments["api"]["spec"]["replicas"] == 3
    assert [body for _, body in kube.patches()][1:] == [
        {"metadata": {"annotations": {"shipbot.io/cancelled": KEY}}}]  # only the mark
    assert (await provider.poll(run_id)).detail == (
        "was cancelled; the Deployment is paused, so nothing was undone")
