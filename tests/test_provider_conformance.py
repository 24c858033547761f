"""What every CI provider and deploy target must do, whatever system is behind it.

Each harness builds its provider through the registry (as the bot does) or from the
in-memory fakes, and can build it again over the same backing state: that second
instance is the bot after a restart. A run's version says how it should end: ``ok-*``
succeeds, ``fail-*`` fails, ``slow-*`` runs until cancelled.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from integrations.argo_rollouts_config import ArgoRolloutsConfig
from integrations.base import CIProvider, DeployTarget, IntegrationError, JobSpec, RunState
from integrations.command import CommandConfig
from integrations.github_actions_config import GitHubActionsConfig
from integrations.gitlab_config import GitLabConfig
from integrations.helm_config import HelmConfig
from integrations.http import HttpOptions
from integrations.kube_config import KubeConnection
from integrations.kubernetes_config import KubernetesConfig
from integrations.registry import ProviderContext, build_ci, build_deploy
from integrations.webhook_config import WebhookConfig
from tests.fake_argo import FakeArgo
from tests.fake_deployer import FakeDeployer
from tests.fake_github import FakeGitHub
from tests.fake_gitlab import FakeGitLab
from tests.fake_kubernetes import FakeKubernetes
from tests.fakes_providers import FakeCI, FakeTarget, FakeWorld
from tests.helm_fixture import install_fake_helm
from tests.processes import cancel_runs

OUTCOME = str(Path(__file__).parent / "scripts" / "outcome.py")
Provider = CIProvider | DeployTarget


async def _nothing() -> None:
    return None


@dataclass
class Harness:
    """``make()`` builds the provider (again: a restart); ``tick()`` lets the world behind
    it move on between polls; ``runs_started()`` counts what really started there."""

    make: Callable[[], Provider]
    runs_started: Callable[[], int]
    tick: Callable[[], Awaitable[None]] = _nothing
    cleanup: list[Callable[[], Any]] = field(default_factory=list)


def command_harness(tmp_path: Path, role: str) -> Harness:
    config = CommandConfig(argv=[sys.executable, OUTCOME, "{service}", "{version}"],
                           timeout_seconds=30)
    ctx = ProviderContext(state_dir=tmp_path / "state")

    def make() -> Provider:
        return build_ci(config, ctx).ci if role == "ci" else build_deploy(config, ctx).target

    state = tmp_path / "state" / ("ci" if role == "ci" else "deploy")
    return Harness(make, lambda: len(list(state.glob("*/spec.json"))),
                   cleanup=[lambda: cancel_runs(state)])


def fake_harness(kind: type[FakeCI]) -> Harness:
    world = FakeWorld(polls=2)
    return Harness(lambda: kind(world), lambda: len(world.runs))


def github_harness(tmp_path: Path, role: str) -> Harness:
    """GitHub Actions over a fake GitHub whose runs move on one stage per tick."""
    token = "ghp_" + "c" * 36
    gh = FakeGitHub(token=token)
    config = GitHubActionsConfig(repository="acme/api", workflow="build.yml", ref="main")
    ctx = ProviderContext(state_dir=tmp_path, environ={"GITHUB_TOKEN": token},
                          http=HttpOptions(transport=httpx.MockTransport(gh.handler)))

    def make() -> Provider:
        return build_ci(config, ctx).ci if role == "ci" else build_deploy(config, ctx).target

    async def tick() -> None:
        gh.tick()

    return Harness(make, lambda: len(gh.runs), tick=tick)


def gitlab_harness(tmp_path: Path, role: str, trigger: bool = False) -> Harness:
    """GitLab CI over a fake GitLab whose pipelines move on one status per tick; the
    project named by its path (URL-encoded on the wire), pipelines created with the
    access token or with a trigger token."""
    token, trigger_token = "glpat-" + "c" * 20, "glptt-" + "d" * 40
    gl = FakeGitLab(token=token, trigger_token=trigger_token, project="acme/platform/api")
    config = GitLabConfig(project="acme/platform/api", ref="main",
                          trigger_token_env="GITLAB_TRIGGER_TOKEN" if trigger else None)
    ctx = ProviderContext(state_dir=tmp_path, environ={
        "GITLAB_TOKEN": token, "GITLAB_TRIGGER_TOKEN": trigger_token},
        http=HttpOptions(transport=httpx.MockTransport(gl.handler)))

    def make() -> Provider:
        return build_ci(config, ctx).ci if role == "ci" else build_deploy(config, ctx).target

    async def tick() -> None:
        gl.tick()

    return Harness(make, lambda: len(gl.pipelines), tick=tick)


def helm_harness(tmp_path: Path) -> Harness:
    """helm upgrade through the stand-in helm (tests/scripts/fake_helm.py)."""
    fake = install_fake_helm(tmp_path)
    config = HelmConfig(release="{service}-{env}", chart="./charts/api", namespace="apps",
                        binary=str(fake.binary), kubeconfig=str(fake.kubeconfig),
                        timeout_seconds=30)
    ctx = ProviderContext(state_dir=tmp_path / "state")
    state = tmp_path / "state" / "helm"
    return Harness(lambda: build_deploy(config, ctx).target,
                   lambda: len(list(state.glob("*/spec.json"))),
                   cleanup=[lambda: cancel_runs(state)])


def webhook_harness(tmp_path: Path) -> Harness:
    """A signed webhook to a fake deployer whose runs move on one state per poll."""
    secret = "whsec-" + "c" * 30
    fake = FakeDeployer(secret=secret)
    base = "https://deployer.example.com"
    config = WebhookConfig(url=f"{base}/api/deploys", signature={"secret_env": "DEPLOY_HMAC"},
                           status_url_field="links.status", status_field="state",
                           message_field="result.message", id_field="id",
                           cancel_url=f"{base}/api/runs/{{id}}/cancel")
    ctx = ProviderContext(state_dir=tmp_path, environ={"DEPLOY_HMAC": secret},
                          http=HttpOptions(transport=httpx.MockTransport(fake.handler)))
    return Harness(lambda: build_deploy(config, ctx).target, lambda: len(fake.runs))


def kubernetes_harness(tmp_path: Path) -> Harness:
    """A Deployment over a fake API server whose controller moves one stage per tick; a
    run started is a strategic-merge patch of its image."""
    token = "k8s-" + "c" * 30
    kube = FakeKubernetes(token=token)
    kube.add_deployment(image="registry.example.com/api:ok-0")
    config = KubernetesConfig(
        namespace="prod", deployment="api", container="api",
        image="registry.example.com/api:{version}",
        cluster={"server": "https://k8s.example.com:6443", "token_env": "K8S_TOKEN"})
    ctx = ProviderContext(state_dir=tmp_path, environ={"K8S_TOKEN": token},
                          http=HttpOptions(transport=httpx.MockTransport(kube.handler)))

    async def tick() -> None:
        kube.tick()

    def started() -> int:
        return sum(1 for kind, _ in kube.patches() if "strategic" in kind)

    return Harness(lambda: build_deploy(config, ctx).target, started, tick=tick)


def argo_harness(tmp_path: Path) -> Harness:
    """Argo Rollouts over a fake Rollouts API whose controller moves one step per tick;
    a run is counted when a start records its key on the Rollout."""
    argo = FakeArgo()
    config = ArgoRolloutsConfig(
        provider="argo_rollouts", namespace="prod", rollout="api", container="api",
        image="registry.example.com/api:{version}",
        cluster=KubeConnection(server="https://k8s.example.com", token_env="K8S_TOKEN"))
    ctx = ProviderContext(state_dir=tmp_path, environ={"K8S_TOKEN": argo.token},
                          http=HttpOptions(transport=httpx.MockTransport(argo.handler)))

    async def tick() -> None:
        argo.reconcile()

    def started() -> int:
        return sum(1 for _, _, body in argo.writes() if "deploy-key" in str(body))

    return Harness(lambda: build_deploy(config, ctx).target, started, tick=tick)


HARNESSES: dict[str, Callable[[Path], Harness]] = {
    "argo-rollouts-deploy": argo_harness,
    "command-ci": lambda tmp: command_harness(tmp, "ci"),
    "command-deploy": lambda tmp: command_harness(tmp, "deploy"),
    "fake-ci": lambda tmp: fake_harness(FakeCI),
    "fake-target": lambda tmp: fake_harness(FakeTarget),
    "github-actions-ci": lambda tmp: github_harness(tmp, "ci"),
    "github-actions-deploy": lambda tmp: github_harness(tmp, "deploy"),
    "gitlab-ci": lambda tmp: gitlab_harness(tmp, "ci"),
    "gitlab-ci-trigger-token": lambda tmp: gitlab_harness(tmp, "ci", trigger=True),
    "gitlab-deploy": lambda tmp: gitlab_harness(tmp, "deploy"),
    "helm-deploy": helm_harness,
    "kubernetes-deploy": kubernetes_harness,
    "webhook-deploy": webhook_harness,
}


@pytest.fixture(params=sorted(HARNESSES))
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    made = HARNESSES[request.param](tmp_path)
    yield made
    for clean in made.cleanup:
        await asyncio.to_thread(clean)


def job(version: str, key: str = "deployment-1-abc-build") -> JobSpec:
    return JobSpec(key=key, service="api", env="staging", version=version)


async def until_done(harness: Harness, provider: Provider, run_id: str,
                     timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        status = await provider.poll(run_id)
        if status.state is not RunState.RUNNING:
            return status
        assert loop.time() < deadline, f"still running after {timeout} s: {status}"
        await harness.tick()
        await asyncio.sleep(0.05)


async def test_a_run_polls_to_success(harness: Harness) -> None:
    provider = harness.make()
    run_id = await provider.start(job("ok-1.0"))
    assert isinstance(run_id, str) and run_id
    status = await until_done(harness, provider, run_id)
    assert status.state is RunState.SUCCEEDED, status
    assert status.detail


async def test_a_run_polls_to_failure_with_a_reason(harness: Harness) -> None:
    provider = harness.make()
    run_id = await provider.start(job("fail-1.0"))
    status = await until_done(harness, provider, run_id)
    assert status.state is RunState.FAILED, status
    assert status.detail


async def test_a_cancelled_run_ends_failed_and_says_so(harness: Harness) -> None:
    provider = harness.make()
    run_id = await provider.start(job("slow-1.0"))
    await harness.tick()
    assert (await provider.poll(run_id)).state is RunState.RUNNING
    await provider.cancel(run_id)
    status = await until_done(harness, provider, run_id)
    assert status.state is RunState.FAILED, status
    assert "cancel" in status.detail


async def test_a_start_after_a_restart_finds_the_same_run(harness: Harness) -> None:
    first = harness.make()
    run_id = await first.start(job("slow-2.0"))
    await harness.tick()
    again = harness.make()  # the bot restarted: nothing in memory
    assert await again.start(job("slow-2.0")) == run_id
    assert harness.runs_started() == 1
    assert (await again.poll(run_id)).state is RunState.RUNNING
    await again.cancel(run_id)
    assert (await until_done(harness, again, run_id)).state is RunState.FAILED


async def test_distinct_keys_are_distinct_runs(harness: Harness) -> None:
    provider = harness.make()
    one = await provider.start(job("ok-1", key="deployment-1-abc-build"))
    two = await provider.start(job("ok-1", key="deployment-2-def-build"))
    assert one != two
    for run_id in (one, two):
        assert (await until_done(harness, provider, run_id)).state is RunState.SUCCEEDED
    assert harness.runs_started() == 2


@pytest.mark.parametrize("call", ["poll", "cancel"])
async def test_an_unknown_run_is_an_integration_error(harness: Harness, call: str) -> None:
    """Errors reach users as IntegrationError (a message to show), never as a KeyError,
    an OSError or an HTTP library's exception with a traceback."""
    provider = harness.make()
    with pytest.raises(IntegrationError) as caught:
        await getattr(provider, call)("no-such-run")
    assert str(caught.value)
