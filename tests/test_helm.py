"""The helm deploy target against a stand-in helm: the argv it runs, the environment helm
gets, failures in helm's words, rollback to the revision that ran a version, health,
cancel and restarts."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from integrations.base import Capability, IntegrationError, JobSpec, RunState, RunStatus
from integrations.helm import HelmProvider, revision_for
from integrations.helm_config import HelmConfig
from integrations.registry import ProviderContext, build_deploy
from tests.helm_fixture import FakeHelm, install_fake_helm
from tests.processes import cancel_runs
from tests.scripts.fake_helm import SECRET_DATA, VALUES_SECRET


@pytest.fixture
async def helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeHelm]:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-not-for-helm")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@db/shipbot")
    monkeypatch.setenv("HELM_REGISTRY_TOKEN", "reg-token-123")
    fake = install_fake_helm(tmp_path)
    yield fake
    await asyncio.to_thread(cancel_runs, tmp_path / "state")


def config(fake: FakeHelm, **overrides: Any) -> HelmConfig:
    settings: dict[str, Any] = {
        "release": "{service}-{env}", "chart": "./charts/api", "namespace": "apps",
        "kube_context": "prod-eu", "kubeconfig": str(fake.kubeconfig),
        "values_files": ["values/common.yaml", "values/{env}.yaml"],
        "binary": str(fake.binary), "timeout_seconds": 30, **overrides}
    return HelmConfig(**settings)


def provider(fake: FakeHelm, tmp_path: Path, **overrides: Any) -> HelmProvider:
    return HelmProvider(config(fake, **overrides), tmp_path / "state")


def job(version: str, key: str = "deployment-1-abc-deploy", **extra: Any) -> JobSpec:
    return JobSpec(key=key, service="api", env="staging", version=version, **extra)


async def done(target: HelmProvider, run_id: str, timeout: float = 20.0) -> RunStatus:
    deadline = asyncio.get_running_loop().time() + timeout
    while (status := await target.poll(run_id)).state is RunState.RUNNING:
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.05)
    return status


async def deployed(target: HelmProvider, version: str, n: int) -> None:
    status = await done(target, await target.start(job(version, key=f"deployment-{n}-deploy")))
    assert status.state is RunState.SUCCEEDED, status


async def test_upgrade_runs_exactly_this_argv(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    status = await done(target, await target.start(job("v1.4.2")))
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "helm upgrade of api-staging succeeded"
    assert "STATUS: deployed" in status.output_tail
    [call] = helm.calls()
    assert call["argv"] == [
        "upgrade", "--install", "api-staging", "./charts/api",
        "--namespace", "apps", "--kube-context", "prod-eu",
        "-f", "values/common.yaml", "-f", "values/staging.yaml",
        "--set-string", "image.tag=v1.4.2",
        "--description", "Shipbot deploy of api to staging: version=v1.4.2",
        "--wait", "--timeout", "30s", "--atomic"]


async def test_helm_gets_a_minimal_environment(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, pass_env=["HELM_REGISTRY_TOKEN"])
    await done(target, await target.start(job("v1")))
    env = helm.calls()[0]["env"]
    assert env["KUBECONFIG"] == str(helm.kubeconfig)
    assert env["HELM_REGISTRY_TOKEN"] == "reg-token-123"
    assert "PATH" in env
    for name in ("SLACK_BOT_TOKEN", "DATABASE_URL"):
        assert name not in env
    assert "xoxb-not-for-helm" not in str(env)


async def test_chart_version_set_path_and_no_context(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, kube_context=None, namespace=None, values_files=[],
                      chart_version="1.2.0", set_path="app.image.tag", create_namespace=False)
    await done(target, await target.start(job("2026.11.26-3")))
    argv = helm.calls()[0]["argv"]
    assert argv[:6] == ["upgrade", "--install", "api-staging", "./charts/api",
                        "--version", "1.2.0"]
    assert "--kube-context" not in argv and "--namespace" not in argv
    assert argv[argv.index("--set-string") + 1] == "app.image.tag=2026.11.26-3"


async def test_the_artifact_goes_to_its_own_value(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, set_artifact_path="image.digest",
                      create_namespace=True)
    digest = "registry.example.com/api@sha256:" + "ab" * 32
    await done(target, await target.start(job("v2", artifact=digest)))
    await done(target, await target.start(job("v3", key="deployment-2-deploy")))
    with_artifact, without = (c["argv"] for c in helm.calls("upgrade"))
    assert "--create-namespace" in with_artifact
    sets = [with_artifact[i + 1] for i, a in enumerate(with_artifact) if a == "--set-string"]
    assert sets == ["image.tag=v2", f"image.digest={digest}"]
    assert [without[i + 1] for i, a in enumerate(without) if a == "--set-string"] == [
        "image.tag=v3"]  # the build recorded no artifact: the chart's default stays


async def test_an_artifact_helm_would_split_is_refused(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, set_artifact_path="image.digest")
    with pytest.raises(IntegrationError, match="character helm --set-string would split"):
        await target.start(job("v2", artifact="img:1,replicas=0"))
    assert helm.calls() == []


async def test_a_failed_upgrade_says_what_helm_said(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    await deployed(target, "v1", 1)
    status = await done(target, await target.start(job("fail-2")))
    assert status.state is RunState.FAILED and status.exit_code == 1
    assert status.detail == (
        "helm upgrade of api-staging exited with code 1: Error: UPGRADE FAILED: release "
        "api-staging failed, and has been rolled back due to atomic being set: context "
        "deadline exceeded")


async def test_rollback_goes_to_the_last_good_revision(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    for n, version in enumerate(("v1", "v2", "fail-3"), start=1):
        await done(target, await target.start(job(version, key=f"deployment-{n}-deploy")))
    # v1 is revision 1, v2 revision 2; fail-3 failed (3) and helm's --atomic undid it (4).
    status = await done(target, await target.rollback(job("v1", key="deployment-4-deploy")))
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "helm rollback of api-staging succeeded"
    assert helm.calls("rollback")[0]["argv"] == [
        "rollback", "api-staging", "1", "--namespace", "apps", "--kube-context", "prod-eu",
        "--wait", "--timeout", "30s"]
    assert [c["argv"][:2] for c in helm.calls("history")] == [["history", "api-staging"]]
    assert helm.history("api-staging")[-1]["description"] == "Rollback to 1"


async def test_a_rolled_back_revision_counts_as_its_version(helm: FakeHelm,
                                                           tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    await deployed(target, "v1", 1)
    await deployed(target, "v2", 2)
    await done(target, await target.rollback(job("v1", key="deployment-3-deploy")))  # rev 3
    await deployed(target, "v3", 4)
    await done(target, await target.rollback(job("v1", key="deployment-5-deploy")))
    assert helm.calls("rollback")[-1]["argv"][:3] == ["rollback", "api-staging", "3"]


async def test_namespace_and_context_may_name_the_environment(helm: FakeHelm,
                                                               tmp_path: Path) -> None:
    target = provider(helm, tmp_path, namespace="api-{env}", kube_context="{env}-eu")
    await deployed(target, "v1", 1)
    await deployed(target, "v2", 2)
    await done(target, await target.rollback(job("v1", key="deployment-3-deploy")))
    for command in ("upgrade", "history", "rollback"):
        argv = helm.calls(command)[0]["argv"]
        assert argv[argv.index("--namespace") + 1] == "api-staging"
        assert argv[argv.index("--kube-context") + 1] == "staging-eu"


async def test_no_earlier_revision_is_a_clear_error(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    await deployed(target, "v2", 1)
    with pytest.raises(IntegrationError) as caught:
        await target.rollback(job("v1", key="deployment-2-deploy"))
    assert str(caught.value) == (
        "helm history of release api-staging has no revision that ran v1 successfully "
        "(deployed or superseded), so there is nothing to roll back to: deploy that "
        "version instead")
    assert helm.calls("rollback") == []


async def test_a_release_helm_does_not_know(helm: FakeHelm, tmp_path: Path) -> None:
    with pytest.raises(IntegrationError, match="helm history failed: Error: release: not found"):
        await provider(helm, tmp_path).rollback(job("v1"))


async def test_a_history_that_is_not_json(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, binary="/bin/echo")
    with pytest.raises(IntegrationError, match="did not print a JSON list"):
        await target.rollback(job("v1"))


async def test_a_missing_helm_binary(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, binary=str(tmp_path / "no-helm"))
    with pytest.raises(IntegrationError, match=r"could not run .*no-helm"):
        await target.rollback(job("v1"))
    status = await done(target, await target.start(job("v1")))
    assert status.state is RunState.FAILED and "command not found" in status.detail


def test_history_matches_app_version_too() -> None:
    history = [
        {"revision": 1, "status": "superseded", "app_version": "v1", "description": "Install"},
        {"revision": 2, "status": "failed", "app_version": "v1", "description": "x"},
        {"revision": 3, "status": "deployed", "app_version": "v2", "description": "y"}]
    assert revision_for(history, "v1") == 1
    assert revision_for(history, "v9") is None
    loop = [{"revision": 1, "status": "superseded", "description": "Rollback to 2"},
            {"revision": 2, "status": "superseded", "description": "Rollback to 1"}]
    assert revision_for(loop, "v1") is None


async def helm_called(helm: FakeHelm, command: str) -> None:
    for _ in range(200):
        if helm.calls(command):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"helm {command} was never run")


async def test_cancel_stops_helm(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    run_id = await target.start(job("slow-1"))
    await helm_called(helm, "upgrade")
    assert (await target.poll(run_id)).detail == "helm upgrade of api-staging is running"
    await target.cancel(run_id)
    status = await done(target, run_id)
    assert status.state is RunState.FAILED
    assert status.detail == "helm upgrade of api-staging was cancelled"


async def test_a_restart_finds_the_helm_run(helm: FakeHelm, tmp_path: Path) -> None:
    first = provider(helm, tmp_path)
    run_id = await first.start(job("slow-1"))
    again = provider(helm, tmp_path)  # a new bot process: nothing in memory
    assert await again.start(job("slow-1")) == run_id
    assert (await again.poll(run_id)).state is RunState.RUNNING
    await helm_called(helm, "upgrade")
    await again.cancel(run_id)
    await done(again, run_id)
    assert len(helm.calls("upgrade")) == 1


async def test_a_restarted_rollback_is_not_looked_up_again(helm: FakeHelm,
                                                           tmp_path: Path) -> None:
    target = provider(helm, tmp_path)
    await deployed(target, "v1", 1)
    await deployed(target, "v2", 2)
    rollback = job("v1", key="deployment-3-deploy")
    run_id = await target.rollback(rollback)
    await done(target, run_id)
    assert await provider(helm, tmp_path).rollback(rollback) == run_id
    assert len(helm.calls("rollback")) == 1 and len(helm.calls("history")) == 1


async def test_health_reads_the_release_status(helm: FakeHelm, tmp_path: Path) -> None:
    target = provider(helm, tmp_path, health=True)
    await deployed(target, "v1", 1)
    status = await done(target, await target.health(job("v1", key="deployment-1-health")))
    assert status.state is RunState.SUCCEEDED, status
    assert status.detail == "release api-staging is deployed"
    assert helm.calls("status")[0]["argv"] == [
        "status", "api-staging", "--namespace", "apps", "--kube-context", "prod-eu",
        "-o", "json"]
    history = helm.history("api-staging")
    history[-1].update(status="failed", description="Upgrade failed: timed out waiting")
    helm.set_history("api-staging", history)
    status = await done(target, await target.health(job("v1", key="deployment-2-health")))
    assert status.state is RunState.FAILED
    assert status.detail == ("release api-staging is failed, not deployed: Upgrade failed: "
                             "timed out waiting")


def test_capabilities_follow_the_config(helm: FakeHelm, tmp_path: Path) -> None:
    ctx = ProviderContext(state_dir=tmp_path / "state")
    plain = build_deploy(config(helm), ctx)
    assert plain.rollback is not None and plain.health is None and plain.traffic is None
    full = build_deploy(config(helm, health=True, native_rollback=False), ctx)
    assert full.health is not None and full.rollback is None
    assert config(helm).capabilities() == {Capability.CANCEL, Capability.ROLLBACK}
    assert config(helm).settings_for(Capability.HEALTH) == "health: true"
    assert config(helm).settings_for(Capability.TRAFFIC) is None


@pytest.mark.parametrize(("overrides", "error"), [
    ({"release": "API_{env}"}, "a release name is lower-case letters"),
    ({"release": "{service}-{environment}"}, "unknown placeholder {environment}"),
    ({"set_path": "image tag"}, "is not a values path as --set takes it"),
    ({"set_artifact_path": "image.tag"}, "set_artifact_path must differ from set_path"),
    ({"chart": "--post-renderer=/bin/sh"}, "must not start with '-'"),
    ({"pass_env": ["SLACK_BOT_TOKEN"]}, "one of Shipbot's own settings"),
    ({"values_files": [""]}, "must not be empty"),
    ({"timeout_seconds": 0}, "greater than 0"),
    ({"kubeconfig": "/k", "pass_env": ["KUBECONFIG"]}, "KUBECONFIG is both passed on"),
    ({"token": "x"}, "Extra inputs are not permitted"),
])
def test_bad_config_is_refused_clearly(helm: FakeHelm, overrides: dict[str, Any],
                                        error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        config(helm, **overrides)


def test_the_readme_example_loads() -> None:
    """The stanza users copy from README.md is a valid config."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Helm as the deploy target"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    stanza = yaml.safe_load(block.group(1))["services"]["api"]["deploy"]
    assert HelmConfig(**stanza).capabilities() == {
        Capability.CANCEL, Capability.ROLLBACK, Capability.HEALTH}


async def test_helm_output_never_carries_values_or_manifests(helm: FakeHelm,
                                                            tmp_path: Path) -> None:
    """``helm status -o json`` prints the values and the manifest (a Secret's data), and
    NOTES may render values: the output kept for the thread has none of it."""
    target = provider(helm, tmp_path, health=True)
    upgrade = await done(target, await target.start(job("v1")))
    assert "STATUS: deployed" in upgrade.output_tail
    health = await done(target, await target.health(job("v1", key="deployment-1-health")))
    assert health.state is RunState.SUCCEEDED
    assert health.output_tail == "release api-staging, revision 1: deployed (Shipbot " \
        "deploy of api to staging: version=v1)"
    rollback = await done(target, await target.rollback(job("v1", key="deployment-2-rb")))
    history = helm.history("api-staging")
    history[-1].update(status="failed", description="Upgrade failed: timed out waiting")
    helm.set_history("api-staging", history)
    sick = await done(target, await target.health(job("v1", key="deployment-3-health")))
    assert sick.state is RunState.FAILED
    assert sick.output_tail == ("release api-staging, revision 2: failed (Upgrade failed: "
                                "timed out waiting)")
    for status in (upgrade, health, rollback, sick):
        for secret in (SECRET_DATA, VALUES_SECRET, "kind: Secret", '"config"'):
            assert secret not in status.output_tail and secret not in status.detail
