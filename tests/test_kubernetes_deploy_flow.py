"""`/deploy` of a canary through the whole app onto a Kubernetes Deployment: signed Slack
requests in, a fake Kubernetes API server on loopback (its Deployment controller moving
on with every read), the bot restarted mid-rollout, then `/deploy rollback` undone as
``kubectl rollout undo`` does; Slack messages, database rows and API requests out."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.config import ShipbotConfig, parse_config
from bot.devtools.driver import SlackDriver
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot, invite_bot
from tests.conftest import eventually, make_config, serving
from tests.fake_kubernetes import FakeKubernetes
from tests.test_deploy_flow import deployments, finished
from tests.test_restart import _up, db_rows, free_port, start_bot

TOKEN = "k8s-" + "E" * 30
IMAGE = "registry.example.com/api"
CANARY = "/apis/apps/v1/namespaces/prod/deployments/api-canary"
STABLE = "/apis/apps/v1/namespaces/prod/deployments/api"


@pytest.fixture
async def kube(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeKubernetes, str]]:
    monkeypatch.setenv("K8S_TOKEN", TOKEN)
    fake = FakeKubernetes(token=TOKEN, auto_advance=True)
    fake.add_deployment(image=f"{IMAGE}:v0", replicas=10)
    async with serving(fake.app()) as port:
        yield fake, f"http://127.0.0.1:{port}"


def config(tmp_path: Path, server: str) -> ShipbotConfig:
    data = make_config(tmp_path).model_dump(mode="json")
    api = data["services"]["api"]
    api["ci"] = None
    api["deploy"] = {"provider": "kubernetes", "namespace": "prod", "deployment": "api",
                     "container": "api", "image": IMAGE + ":{version}",
                     "cluster": {"server": server, "token_env": "K8S_TOKEN"},
                     "canary": {"mode": "replicas"}}
    api["strategy"] = {"kind": "canary", "steps": [10, 50, 100], "interval": 0.3}
    api["strategies"] = {"production": {"kind": "rolling"}}
    return parse_config(data)


def thread(bot: LocalBot, index: int = -1) -> list[str]:
    return [r["text"] for r in bot.slack.messages("#deploys-api")[index]["replies"]]


def canary_pods(fake: FakeKubernetes) -> list[int]:
    """The canary's replica counts Shipbot asked for, in order."""
    return [json.loads(r.content)["spec"]["replicas"] for r in fake.requests
            if r.method == "PATCH" and r.url.path == CANARY
            and "replicas" in json.loads(r.content).get("spec", {})]


async def test_a_canary_survives_a_restart_and_a_rollback_undoes_it(
        launch: Any, tmp_path: Path, kube: tuple[FakeKubernetes, str]) -> None:
    fake, server = kube
    cfg = config(tmp_path, server)
    first = await launch(cfg)
    await first.driver.command("api staging v1 --strategy rolling")  # the stable one
    [dep] = await finished(first)
    assert (dep.state, dep.deploy_run_id) == ("succeeded", "rollout/prod/api/2/"
                                              f"deployment-1-{_req(dep)}-deploy"), dep.detail
    assert fake.image() == f"{IMAGE}:v1" and "api-canary" not in fake.deployments
    ack = (await first.driver.command("api staging v2")).json()
    assert "is on its way" in ack["text"]

    async def at_half() -> bool:
        dep = (await deployments(first))[-1]
        return dep.stage >= 1 and dep.state == "verifying"

    await eventually(at_half, timeout=30)
    await first.stop()  # mid-canary: the next process has only the database and the API
    second = await launch(cfg)
    _, dep = await finished(second, 2)
    assert dep.state == "succeeded", dep.detail
    assert dep.deploy_run_id == f"rollout/prod/api-canary/1/deployment-2-{_req(dep)}-deploy"

    assert [r.url.path for r in fake.requests if r.method == "POST"] == [
        "/apis/apps/v1/namespaces/prod/deployments"]  # one canary, made once
    assert canary_pods(fake) == [1, 5, 10, 0]  # 10 %, 50 %, 100 %, then retired
    assert fake.image() == f"{IMAGE}:v2" and fake.deployments["api"]["spec"]["replicas"] == 10
    keys = [json.loads(r.content)["metadata"]["annotations"]["shipbot.io/deploy-key"]
            for r in fake.requests if r.method == "PATCH" and "metadata" in
            json.loads(r.content) and r.url.path in (CANARY, STABLE)]
    assert len(keys) == len(set(keys)), keys  # no step was applied twice across the restart
    *steps, live = thread(second)
    assert live.startswith(":white_check_mark: *api v2 is live on staging* — total ")
    assert steps == [
        ":rocket: Deploying `v2` to staging.",
        ":stethoscope: `v2` is deployed; waiting for staging to report it healthy.",
        ":green_heart: staging reports `v2` healthy.",
        ":package: `v2` is deployed beside the current one, with no traffic yet.",
        ":arrow_right: Shifting 10% of traffic to `v2`.",
        ":hourglass: 10% for 0s: no analysis configured; continuing.",
        ":arrow_right: Shifting 50% of traffic to `v2`.",
        ":hourglass: 50% for 0s: no analysis configured; continuing.",
        ":arrow_right: Shifting 100% of traffic to `v2`.",
        ":arrow_right: Promoting `v2`: it becomes the stable version."]

    answer = (await second.driver.command("rollback api staging v1")).json()["text"]
    assert answer.startswith(":rewind: Rollback #3 of api staging from `v2` to `v1` is on "
                             "its way."), answer
    *_, back = await finished(second, 3)
    assert back.state == "succeeded", back.detail
    assert thread(second)[0] == ":rewind: Rolling staging back to `v1`."
    assert back.deploy_run_id.startswith("undo/prod/api/")
    content_type, ops = [(r.headers["content-type"], json.loads(r.content))
                         for r in fake.requests if r.method == "PATCH"
                         and r.url.path == STABLE][-1]
    assert content_type == "application/json-patch+json"
    assert ops[0]["path"] == "/spec/template"
    assert ops[0]["value"]["spec"]["containers"][0]["image"] == f"{IMAGE}:v1"
    assert "pod-template-hash" not in ops[0]["value"]["metadata"]["labels"]
    assert fake.image() == f"{IMAGE}:v1"
    assert fake.history() == [(1, f"{IMAGE}:v0"), (3, f"{IMAGE}:v2"), (4, f"{IMAGE}:v1")]


def _req(dep: Any) -> str:
    return hashlib.sha256(dep.request_key.encode()).hexdigest()[:12]


async def test_a_rollback_to_a_revision_kubernetes_dropped_deploys_the_version_again(
        launch: Any, tmp_path: Path, kube: tuple[FakeKubernetes, str]) -> None:
    """v1's ReplicaSet is gone (revisionHistoryLimit): ``kubectl rollout undo`` would
    restore v0, the revision before; Shipbot sets v1's image instead, so the thread's
    "back on v1" is true."""
    fake, server = kube
    bot = await launch(config(tmp_path, server))
    for n, version in enumerate(("v1", "v2"), start=1):
        await bot.driver.command(f"api staging {version} --strategy rolling")
        *_, dep = await finished(bot, n)
        assert dep.state == "succeeded", dep.detail
    assert fake.history() == [(1, f"{IMAGE}:v0"), (2, f"{IMAGE}:v1"), (3, f"{IMAGE}:v2")]
    [v1] = [name for name, rs in fake.replica_sets.items()
            if rs["spec"]["template"]["spec"]["containers"][0]["image"] == f"{IMAGE}:v1"]
    del fake.replica_sets[v1]
    await bot.driver.command("rollback api staging v1")
    *_, back = await finished(bot, 3)
    assert (back.state, back.version) == ("succeeded", "v1"), back.detail
    assert back.deploy_run_id == f"rollout/prod/api/4/deployment-3-{_req(back)}-deploy"
    assert fake.image() == f"{IMAGE}:v1"
    assert fake.history() == [(1, f"{IMAGE}:v0"), (3, f"{IMAGE}:v2"), (4, f"{IMAGE}:v1")]
    async def told() -> list[str] | None:
        return thread(bot) if len(thread(bot)) == 2 else None

    said = await eventually(told, timeout=10)
    assert said[0] == ":rewind: Rolling staging back to `v1`.", said
    assert said[1].startswith(":white_check_mark: *api v1 is live on staging*"), said
    assert not [r for r in fake.requests if r.method == "PATCH" and
                r.headers["content-type"] == "application/json-patch+json"]  # no undo


async def test_a_canary_that_misses_its_deadline_is_aborted(
        launch: Any, tmp_path: Path, kube: tuple[FakeKubernetes, str]) -> None:
    fake, server = kube
    bot = await launch(config(tmp_path, server))
    await bot.driver.command("api staging fail-2")
    [dep] = await finished(bot)
    assert dep.state == "rolled_back", dep.detail
    assert canary_pods(fake) == [1, 0]  # 10 % that never became available, then none
    assert fake.image() == f"{IMAGE}:v0" and fake.deployments["api"]["spec"]["replicas"] == 10
    said = "\n".join(thread(bot))
    new_rs = fake.rollouts["api-canary"].replica_set
    assert "10% of traffic failed: Deployment api-canary exceeded its progress deadline " \
        f'(ProgressDeadlineExceeded: ReplicaSet "{new_rs}" has timed out progressing.)' \
        in said, said


async def test_an_rbac_denial_reaches_the_thread_with_the_verb_and_who(
        launch: Any, tmp_path: Path, kube: tuple[FakeKubernetes, str]) -> None:
    fake, server = kube
    fake.deny.add(("patch", "deployments"))
    bot = await launch(config(tmp_path, server))
    await bot.driver.command("api staging v1 --strategy rolling")
    [dep] = await finished(bot)
    assert dep.state == "failed", dep.detail
    assert thread(bot) == [
        ":x: *Stopped while queued:* Kubernetes RBAC denied Shipbot (the token in K8S_TOKEN) "
        'to patch deployments in namespace prod: deployments.apps "api" is forbidden: User '
        '"system:serviceaccount:shipbot:shipbot" cannot patch resource "deployments" in API '
        'group "apps" in the namespace "prod". Grant the verb in Shipbot\'s Role (see the '
        "README). Nothing more will run. Fix the cause, then `/deploy api staging v1` again."]
    assert fake.image() == f"{IMAGE}:v0"  # denied: nothing changed



async def test_a_canary_killed_mid_rollout_resumes_without_repeating_a_step(
        tmp_path: Path, kube: tuple[FakeKubernetes, str]) -> None:
    """SIGKILL between two weight steps: the next process has only the database and the
    cluster, finds each step's key on the Deployments, and applies nothing twice."""
    fake, server = kube
    cfg = config(tmp_path, server)
    (tmp_path / "shipbot.yml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"),
                                                         sort_keys=False))
    port = free_port()
    async with FakeSlack() as slack:
        invite_bot(slack, cfg)
        driver = SlackDriver(f"http://127.0.0.1:{port}", "restart-secret",
                             channels=slack.channels, triggers=slack.issue_trigger)
        first = start_bot(tmp_path, slack, port)
        second: subprocess.Popen[bytes] | None = None
        try:
            await eventually(lambda: _up(driver))
            await driver.command("api staging v2")

            async def shifting() -> bool:
                return db_rows(tmp_path, "select state, stage from deployment") == [
                    ("verifying", 1)] and len(canary_pods(fake)) >= 1

            await eventually(shifting, timeout=30)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            second = start_bot(tmp_path, slack, port)

            async def done() -> list[tuple[Any, ...]]:
                return db_rows(tmp_path, "select state from deployment where "
                               "finished_at is not null")

            assert await eventually(done, timeout=40) == [("succeeded",)]
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
            await driver.aclose()
    assert canary_pods(fake) == [1, 5, 10, 0]
    assert [r.url.path for r in fake.requests if r.method == "POST"] == [
        "/apis/apps/v1/namespaces/prod/deployments"]
    assert fake.image() == f"{IMAGE}:v2"
