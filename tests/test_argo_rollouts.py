"""The Argo Rollouts deploy target against a stateful fake of the Rollouts API
(tests/fake_argo.py): what it patches, how it follows Argo's steps, and what it says."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from integrations.argo_rollouts import ArgoRolloutsProvider
from integrations.argo_rollouts_config import ArgoRolloutsConfig
from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.http import HttpOptions, NotFound, TokenRefused
from integrations.kube_config import KubeConnection
from tests.fake_argo import FakeArgo

STATUS = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api/status"
OBJECT = "/apis/argoproj.io/v1alpha1/namespaces/prod/rollouts/api"


def provider(argo: FakeArgo, **settings: Any) -> ArgoRolloutsProvider:
    config = ArgoRolloutsConfig.model_validate({
        "provider": "argo_rollouts", "namespace": "prod", "rollout": "api",
        "container": "api", "image": "registry.example.com/api:{version}",
        "cluster": {"server": "https://k8s.example.com:6443", "token_env": "K8S_TOKEN"},
        **settings})
    return ArgoRolloutsProvider(config, options=HttpOptions(
        transport=httpx.MockTransport(argo.handler)), environ={"K8S_TOKEN": argo.token})


def job(version: str = "v2.0.0", step: str = "deploy", artifact: str | None = None
        ) -> JobSpec:
    return JobSpec(key=f"deployment-7-abc-{step}", service="api", env="prod",
                   version=version, artifact=artifact)


async def until_done(target: ArgoRolloutsProvider, run_id: str, polls: int = 40
                     ) -> RunStatus:
    for _ in range(polls):
        status = await target.poll(run_id)
        if status.state is not RunState.RUNNING:
            return status
    raise AssertionError(f"{run_id} still running: {status}")


async def test_start_sets_the_image_with_a_json_patch_and_stops_at_the_first_pause() -> None:
    argo = FakeArgo()
    target = provider(argo)
    run_id = await target.start(job())
    [(path, kind, ops)] = argo.writes()
    assert (path, kind) == (OBJECT, "application/json-patch+json")
    assert ops[:2] == [
        {"op": "test", "path": "/spec/template/spec/containers/1/name", "value": "api"},
        {"op": "replace", "path": "/spec/template/spec/containers/1/image",
         "value": "registry.example.com/api:v2.0.0"}]
    assert ops[2]["path"] == "/metadata/annotations/shipbot.io~1deploy-key"
    status = await until_done(target, run_id)
    assert status.state is RunState.SUCCEEDED, status
    assert status.detail == "Argo step 2/8, canary weight 5 %, Paused"
    assert argo.image("log-shipper") == "fluent/fluent-bit:3.1"  # the sidecar untouched
    [found] = status.findings  # the analysis step before the pause
    assert found.phase == "Successful" and found.passed
    assert found.lines == ["success-rate: Successful, measured [0.995], [0.991], [0.997]"]


async def test_the_build_artifact_wins_over_the_image_template() -> None:
    argo = FakeArgo()
    await provider(argo).start(job(artifact="registry.example.com/api@sha256:" + "a" * 64))
    assert argo.image() == "registry.example.com/api@sha256:" + "a" * 64


async def test_a_repeated_start_after_a_restart_patches_nothing() -> None:
    argo = FakeArgo()
    first = await provider(argo).start(job())
    argo.reconcile()
    again = await provider(argo).start(job())  # a new process, same key
    assert again == first
    assert len(argo.writes()) == 1
    assert [m for m, *_ in argo.requests] == ["GET", "PATCH", "GET"]


async def test_the_same_image_on_an_aborted_rollout_is_a_retry() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await target.start(job("fail-2.0"))
    assert (await until_done(target, await target.start(job("fail-2.0")))).state is \
        RunState.FAILED
    argo.requests.clear()
    run_id = await target.start(job("fail-2.0", step="again"))
    retry, note = [(p, b) for p, _, b in argo.writes()]
    assert retry == (STATUS, {"status": {"abort": False}})  # as `kubectl argo rollouts retry`
    assert note[0] == OBJECT and "shipbot.io/deploy-key" in note[1]["metadata"]["annotations"]
    assert argo.status.get("abort") is not True
    assert run_id.startswith("argo:deploy:")


async def test_set_weight_promotes_as_the_plugin_does_and_states_argos_step() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    first = await target.set_weight(job(step="weight-5"), 5)  # Argo waits at 5 already
    assert argo.writes()[-1][0] == OBJECT  # only the deploy's patch so far
    assert (await until_done(target, first)).detail == "Argo step 2/8, canary weight 5 %, Paused"
    run_id = await target.set_weight(job(step="weight-25"), 25)
    assert (STATUS, "application/merge-patch+json", {"status": {"pauseConditions": None}}) \
        in argo.writes()
    status = await until_done(target, run_id)
    assert status.detail == "Argo step 4/8, canary weight 25 %, Paused"
    asked = await until_done(target, await target.set_weight(job(step="weight-40"), 40))
    assert asked.detail == "Argo step 7/8, canary weight 50 %, Paused (Shipbot asked for 40 %)"


async def test_a_repeated_set_weight_does_not_skip_a_step() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    run_id = await target.set_weight(job(step="weight-25"), 25)
    await until_done(target, run_id)
    again = await provider(argo).set_weight(job(step="weight-25"), 25)  # after a restart
    assert again == run_id
    assert argo.status["currentStepIndex"] == 4  # still waiting at 25 %
    clears = [w for w in argo.writes() if w[2] == {"status": {"pauseConditions": None}}]
    assert len(clears) == 1


async def test_promote_is_a_full_promotion_and_ends_on_the_new_stable_replicaset() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    run_id = await target.promote(job(step="promote"))
    assert (STATUS, "application/merge-patch+json", {"status": {"promoteFull": True}}) \
        in argo.writes()
    status = await until_done(target, run_id)
    assert status.state is RunState.SUCCEEDED
    assert argo.status["stableRS"] == argo.status["currentPodHash"]
    assert "canary weight 100 %, Healthy" in status.detail


async def test_abort_puts_all_traffic_back_on_the_stable_replicaset() -> None:
    argo = FakeArgo()
    target = provider(argo)
    stable = argo.status["stableRS"]
    await until_done(target, await target.start(job()))
    run_id = await target.abort(job(step="abort"))
    assert argo.writes()[-1] == (STATUS, "application/merge-patch+json",
                                 {"status": {"abort": True}})
    status = await until_done(target, run_id)
    assert status.state is RunState.SUCCEEDED
    assert status.detail == f"Argo aborted the rollout: all traffic is on the stable " \
        f"ReplicaSet {stable}"
    assert argo.status["canary"]["weights"]["canary"]["weight"] == 0


async def test_a_failed_analysisrun_fails_the_step_with_its_metric_and_values() -> None:
    argo = FakeArgo()
    target = provider(argo)
    status = await until_done(target, await target.start(job("fail-2.0")))
    assert status.state is RunState.FAILED
    assert status.detail == ("Argo AnalysisRun api-" + argo.status["currentPodHash"] +
                             "-2-1 Failed: success-rate: Failed, measured [0.995], [0.412] "
                             '(Metric "success-rate" assessed Failed due to failed (1) > '
                             "failureLimit (0))")


async def test_rollback_restores_the_earlier_image_and_argo_skips_the_steps() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    run_id = await target.rollback(job("v1.0.0", step="undo"))
    assert argo.image() == "registry.example.com/api:v1.0.0"
    status = await until_done(target, run_id, polls=3)
    assert status.state is RunState.SUCCEEDED and "Healthy" in status.detail


async def test_cancel_aborts_and_the_run_says_it_was_cancelled() -> None:
    argo = FakeArgo()
    target = provider(argo)
    run_id = await target.start(job("slow-2.0"))
    await target.poll(run_id)
    await target.cancel(run_id)
    status = await until_done(target, run_id)
    assert status.state is RunState.FAILED and status.detail.startswith("cancelled")


async def test_health_passes_while_argo_waits_and_fails_when_degraded() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    ok = await until_done(target, await target.health(job(step="health")))
    assert ok.state is RunState.SUCCEEDED
    bad = FakeArgo()
    other = provider(bad)
    await other.start(job("fail-2.0"))
    failed = await until_done(other, await other.health(job(step="health")))
    assert failed.state is RunState.FAILED and "success-rate: Failed" in failed.detail


async def test_analysis_argo_follows_the_whole_rollout_and_waits_at_pauses() -> None:
    argo = FakeArgo()
    target = provider(argo, analysis="argo")
    run_id = await target.start(job())
    for _ in range(10):
        status = await target.poll(run_id)
        if status.waiting:
            break
    assert status.state is RunState.RUNNING
    assert status.waiting == "Argo waits at step 2/8 (canary weight 5 %: a pause step)."
    assert [f.phase for f in status.findings] == ["Successful"]
    go = await target.promote(job(step="continue"))
    assert (STATUS, "application/merge-patch+json", {"status": {"pauseConditions": None}}) \
        in argo.writes()
    assert (await until_done(target, go)).state is RunState.SUCCEEDED
    status = await target.poll(run_id)
    for _ in range(10):
        status = await target.poll(run_id)
        if status.waiting:
            break
    assert status.waiting == "Argo waits at step 4/8 (canary weight 25 %: a pause step)."


async def test_rbac_denial_names_the_verb_and_resource() -> None:
    argo = FakeArgo(deny={"patch rollouts/status"})
    target = provider(argo)
    await until_done(target, await target.start(job()))
    with pytest.raises(TokenRefused) as info:
        await target.set_weight(job(step="weight-25"), 25)
    text = str(info.value)
    assert "to patch rollouts/status in namespace prod" in text
    assert 'cannot patch resource "rollouts/status"' in text
    assert "system:serviceaccount:shipbot:shipbot" in text and argo.token not in text


async def test_a_missing_rollout_hints_at_the_crds() -> None:
    argo = FakeArgo(name="other")
    with pytest.raises(NotFound, match=r"Rollout prod/api was not found .*CRDs are installed"):
        await provider(argo).start(job())


async def test_a_missing_container_names_the_ones_there() -> None:
    with pytest.raises(IntegrationError, match=r"no container named 'web' \(it has: "
                       r"log-shipper, api\)"):
        await provider(FakeArgo(), container="web").start(job())


@pytest.mark.parametrize(("code", "words"), [
    (422, "Kubernetes refused to patch Rollout prod/api (HTTP 422): the server rejected"),
    (409, "Rollout prod/api changed while Shipbot updated it (HTTP 409): Operation cannot"),
])
async def test_a_refused_patch_is_an_error_in_words(code: int, words: str) -> None:
    argo = FakeArgo()
    argo.faults.extend([0, code])  # the read passes, the patch is refused
    with pytest.raises(IntegrationError) as info:
        await provider(argo).start(job())
    assert words in str(info.value)
    assert argo.image() == "registry.example.com/api:v1.0.0"


async def test_an_unknown_run_id_is_an_integration_error() -> None:
    with pytest.raises(IntegrationError, match="unknown Argo Rollouts run"):
        await provider(FakeArgo()).poll("deployment-1")


@pytest.mark.parametrize(("settings", "words"), [
    ({"image": "registry.example.com/api:{tag}"}, "only {version}"),
    ({"analysis": "flagger"}, "'shipbot' or 'argo'"),
    ({"rollout": "Api_1"}, "String should match pattern"),
    ({"replicas": 3}, "Extra inputs are not permitted"),
])
def test_config_refusals(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("{", r"\{").replace("(", r"\(")):
        ArgoRolloutsConfig.model_validate({
            "provider": "argo_rollouts", "namespace": "prod", "rollout": "api",
            "container": "api", "image": "r/api:{version}", **settings})


def test_in_cluster_is_the_default_connection() -> None:
    config = ArgoRolloutsConfig.model_validate({
        "provider": "argo_rollouts", "namespace": "prod", "rollout": "api",
        "container": "api", "image": "r/api:{version}"})
    assert config.cluster == KubeConnection()


async def test_a_set_weight_repeated_while_argo_heads_for_the_pause_waits_for_it() -> None:
    """The promote landed but the bot died before recording its run: Argo is on its way
    to the next pause. The repeated call promotes nothing and ends at that pause."""
    argo = FakeArgo(auto_advance=False)
    target = provider(argo)
    run_id = await target.start(job())
    for _ in range(6):
        argo.reconcile()
    await until_done(target, run_id)
    argo.status.pop("pauseConditions")  # promoted by hand, as before a lost annotation
    argo.reconcile()
    argo.reconcile()  # setWeight 25 done: at the pause step, not yet paused
    assert argo.status["currentStepIndex"] == 4 and "pauseConditions" not in argo.status
    again = await target.set_weight(job(step="weight-25"), 25)
    argo.reconcile()
    status = await target.poll(again)
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "Argo step 4/8, canary weight 25 %, Paused"
    assert not [w for w in argo.writes() if w[2] == {"status": {"pauseConditions": None}}]


async def test_shipbot_analysis_needs_canary_steps_to_walk() -> None:
    argo = FakeArgo()
    argo.set_steps([])
    with pytest.raises(IntegrationError, match="has no canary steps for Shipbot's canary"):
        await provider(argo).start(job())
    assert argo.writes() == []


async def test_without_analysisruns_access_argos_own_message_is_the_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    argo = FakeArgo(deny={"list analysisruns"})
    target = provider(argo)
    status = await until_done(target, await target.start(job("fail-2.0")))
    assert status.state is RunState.FAILED
    assert status.detail == ("Argo aborted the rollout: RolloutAborted: Rollout aborted update "
                             'to revision 2: Metric "success-rate" assessed Failed due to '
                             "failed (1) > failureLimit (0)")
    assert "cannot read AnalysisRuns" in caplog.text and argo.token not in caplog.text


async def test_a_pause_at_step_0_gives_run_ids_that_poll() -> None:
    """A Rollout whose first step is ``pause: {}``: a step before it is "-1", and the run
    still polls (waiting there already, or on its way after a restart)."""
    argo = FakeArgo(auto_advance=False)
    argo.set_steps([{"pause": {}}, {"setWeight": 25}, {"pause": {}}])
    target = provider(argo)
    await target.start(job())
    argo.reconcile()  # observed: at step 0, not yet paused
    heading = await target.set_weight(job(step="weight-25"), 25)
    argo.reconcile()  # paused at step 0
    status = await target.poll(heading)
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "Argo step 0/3, canary weight 0 %, Paused (Shipbot asked for 25 %)"
    there = await target.set_weight(job(step="weight-0"), 0)
    status = await target.poll(there)
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "Argo step 0/3, canary weight 0 %, Paused"


async def test_abort_after_argo_promoted_the_new_version_fully_fails_and_says_so() -> None:
    """Someone promoted by hand (``kubectl argo rollouts promote --full``): abort cannot
    move traffic back, so the run fails in words instead of claiming the stable is back."""
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    argo.status["promoteFull"] = True
    argo.reconcile()
    assert argo.status["stableRS"] == argo.status["currentPodHash"]
    writes = len(argo.writes())
    status = await until_done(target, await target.abort(job(step="abort")))
    assert status.state is RunState.FAILED
    assert status.detail == ("Argo had already promoted registry.example.com/api:v2.0.0 fully "
                             "(it is the stable ReplicaSet " + argo.status["stableRS"] +
                             "): abort cannot move traffic back; roll back with `/rollback`, "
                             "which deploys the earlier image again")
    assert len(argo.writes()) == writes  # no abort patch


async def test_abort_after_the_image_went_back_by_hand_finds_the_stable_serving() -> None:
    argo = FakeArgo()
    target = provider(argo)
    await until_done(target, await target.start(job()))
    await until_done(target, await target.rollback(job("v1.0.0", step="undo")), polls=3)
    status = await until_done(target, await target.abort(job(step="abort")))
    assert status.state is RunState.SUCCEEDED
    assert status.detail.startswith("Argo aborted the rollout: all traffic is on the stable")
