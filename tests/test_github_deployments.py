"""The GitHub Deployments mirror: the provider's requests (shaped as GitHub's docs show),
the config that lends the CI's repository and token, the state changes queued in the
engine's transactions, and whole /deploys through the app whose statuses reach GitHub,
late when GitHub is down, without holding anything up."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import col, select

from bot.config import ConfigError, parse_config
from bot.devtools.local import LocalBot
from bot.engine.mirror_outbox import MIRROR_STATES
from bot.mrkdwn import permalink
from bot.store.models import MirrorEvent
from integrations.base import MirrorState, MirrorUpdate
from integrations.github_deployments import GitHubDeployments, GitHubDeploymentsConfig
from integrations.http import HttpOptions, ProviderUnavailable
from tests.conftest import eventually, make_config
from tests.fake_github import FakeGitHub, fixture
from tests.test_deploy_flow import finished
from tests.test_github_actions import TOKEN, Clock
from tests.test_github_deploy_flow import github, github_ci  # noqa: F401

UPDATE = MirrorUpdate(key="deployment-7-abc123def456-mirror", deployment_id=7, service="api",
                      env="staging", version="v1.4.2", state=MirrorState.QUEUED,
                      description="Shipbot #7: queued",
                      log_url="https://slack.com/archives/C0DEPLOYS/p1700000000000100")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> FakeGitHub:
    return FakeGitHub(token=TOKEN, clock=clock)


def mirror(gh: FakeGitHub, clock: Clock, **config: Any) -> GitHubDeployments:
    return GitHubDeployments(
        GitHubDeploymentsConfig(**{"repository": "acme/api", **config}),
        options=HttpOptions(transport=httpx.MockTransport(gh.handler)),
        environ={"GITHUB_TOKEN": TOKEN}, clock=clock)


def bodies(gh: FakeGitHub) -> list[tuple[str, dict[str, Any]]]:
    return [(r.url.path, json.loads(r.content)) for r in gh.requests if r.method == "POST"]


async def test_the_first_report_creates_the_deployment_then_its_status(gh, clock) -> None:
    provider = mirror(gh, clock, environment_urls={"staging": "https://staging.acme.dev"})
    assert await provider.report(UPDATE) == "1"

    assert gh.sent("GET") == [("GET", "/repos/acme/api/deployments?environment=staging&"
                                      "per_page=100")]
    [(create_path, create), (status_path, status)] = bodies(gh)
    assert create_path == "/repos/acme/api/deployments"
    assert create == {"ref": "v1.4.2", "task": "deploy", "auto_merge": False,
                      "required_contexts": [], "environment": "staging",
                      "description": "Shipbot #7: api v1.4.2 to staging",
                      "payload": {"shipbot_deployment_id": 7,
                                  "shipbot_key": "deployment-7-abc123def456-mirror"}}
    assert status_path == "/repos/acme/api/deployments/1/statuses"
    assert status == {"state": "queued", "environment": "staging",
                      "description": "Shipbot #7: queued", "auto_inactive": True,
                      "log_url": UPDATE.log_url,
                      "environment_url": "https://staging.acme.dev"}
    assert gh.states(1) == ["queued"]


async def test_a_version_that_is_no_ref_is_deployed_as_the_commit_its_build_reported(
        gh, clock) -> None:
    sha = "9f2c1e0a7b6d5c4e3f2a1b0c9d8e7f6a5b4c3d2e"
    provider = mirror(gh, clock)
    await provider.report(UPDATE.model_copy(update={"commit": sha}))  # v1.4.2: a tag
    await provider.report(UPDATE.model_copy(update={"key": "deployment-8-x-mirror",
                                                    "version": "noref-build-88",
                                                    "commit": sha}))
    creates = [body for path, body in bodies(gh) if path.endswith("/deployments")]
    assert [c["ref"] for c in creates] == ["v1.4.2", "noref-build-88", sha]
    assert [d["ref"] for d in gh.deployments.values()] == ["v1.4.2", sha]
    assert creates[-1]["description"] == "Shipbot #7: api noref-build-88 to staging"


async def test_later_reports_only_post_statuses(gh, clock) -> None:
    provider = mirror(gh, clock)
    mirror_id = await provider.report(UPDATE)
    gh.requests.clear()
    again = UPDATE.model_copy(update={"state": MirrorState.SUCCESS, "mirror_id": mirror_id,
                                      "log_url": None})
    assert await provider.report(again) == mirror_id
    [(path, body)] = bodies(gh)
    assert path.endswith("/deployments/1/statuses") and "log_url" not in body
    assert gh.sent("GET") == []


async def test_a_deployment_created_before_a_crash_is_found_not_created_again(gh,
                                                                            clock) -> None:
    provider = mirror(gh, clock)
    await provider.report(UPDATE)  # GitHub created it; the id was never saved
    await provider.report(UPDATE.model_copy(update={"state": MirrorState.IN_PROGRESS}))
    assert len(gh.deployments) == 1 and gh.states(1) == ["queued", "in_progress"]


async def test_a_status_that_may_have_been_sent_is_looked_up_first(gh, clock) -> None:
    """A replica died after posting it (or the answer was lost): GitHub's latest status
    says whether it arrived; only a status that is not there is posted."""
    provider = mirror(gh, clock)
    mirror_id = await provider.report(UPDATE)
    retry = UPDATE.model_copy(update={"mirror_id": mirror_id, "maybe_sent": True})
    assert await provider.report(retry) == mirror_id
    assert gh.states(1) == ["queued"]  # it was there: not posted again
    assert gh.sent("GET")[-1] == ("GET", "/repos/acme/api/deployments/1/statuses?per_page=100")

    later = retry.model_copy(update={"state": MirrorState.IN_PROGRESS,
                                     "description": "Shipbot #7: deploying"})
    await provider.report(later)
    await provider.report(later.model_copy(update={"description": "Shipbot #7: verifying"}))
    assert gh.states(1) == ["queued", "in_progress", "in_progress"]  # new words: posted


async def test_github_down_is_a_retryable_error(gh, clock) -> None:
    gh.deployments_down = True
    with pytest.raises(ProviderUnavailable):
        await mirror(gh, clock).report(UPDATE)


async def test_a_long_description_is_cut_to_githubs_limit(gh, clock) -> None:
    await mirror(gh, clock, repository="acme/api").report(
        UPDATE.model_copy(update={"description": "x" * 300}))
    assert len(bodies(gh)[1][1]["description"]) == 140


def test_the_fixtures_keep_the_shapes_of_githubs_docs() -> None:
    assert {"id", "sha", "ref", "environment", "payload", "statuses_url"} <= \
        set(fixture("deployment.json"))
    assert {"state", "log_url", "environment_url", "deployment_url"} <= \
        set(fixture("deployment_status.json"))


def _config(service: dict[str, Any]) -> dict[str, Any]:
    return {"environments": {"staging": {}},
            "services": {"api": {"channel": "#deploys", **service,
                                 "deploy": {"provider": "command", "argv": ["true"]}}}}


def test_an_empty_stanza_borrows_the_ci_repository_and_token() -> None:
    ci = {"provider": "github_actions", "repository": "acme/api", "workflow": "build.yml",
          "ref": "main", "token_env": "ACME_GH", "base_url": "https://ghe.acme.dev/api/v3"}
    mirrored = parse_config(_config({"ci": ci, "github_deployments": {}})) \
        .services["api"].github_deployments
    assert mirrored is not None
    assert (mirrored.repository, mirrored.token_env, mirrored.base_url) == (
        "acme/api", "ACME_GH", "https://ghe.acme.dev/api/v3")
    own = parse_config(_config({"ci": ci, "github_deployments": {
        "repository": "acme/deploys", "token_env": "DEPLOYS_GH"}})).services["api"]
    assert own.github_deployments is not None
    assert (own.github_deployments.repository, own.github_deployments.token_env) == (
        "acme/deploys", "DEPLOYS_GH")


@pytest.mark.parametrize(("stanza", "problem"), [
    ({}, "services.api: github_deployments: repository: name the repository (owner/name); "
         "only a github_actions CI lends its own"),
    ({"repository": "acme"}, "must be owner/name"),
    ({"repository": "acme/api", "token": "ghp_x"}, "never write the token in shipbot.yml"),
    ({"repository": "acme/api", "environment_urls": {"staging": "ftp://x"}},
     "url must be http:// or https://"),
    ({"repository": "acme/api", "environment_urls": {"stagin": "https://x.dev"}},
     "services.api.github_deployments.environment_urls: unknown environment 'stagin'"),
])
def test_a_wrong_stanza_says_what_to_fix(stanza: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config({"github_deployments": stanza}))
    assert any(problem in p for p in caught.value.problems), caught.value.problems


def test_every_state_that_reaches_github_is_one_of_its_states() -> None:
    assert set(MIRROR_STATES.values()) == set(MirrorState)


# -- through the app ----------------------------------------------------------------------


def mirrored_config(tmp_path: Path, base_url: str) -> Any:
    config = make_config(tmp_path, ci=github_ci(base_url))
    config.services["api"].github_deployments = GitHubDeploymentsConfig(
        repository="acme/api", base_url=base_url,
        environment_urls={"staging": "https://staging.acme.dev"})
    return config


async def mirror_rows(bot: LocalBot) -> list[MirrorEvent]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(MirrorEvent).order_by(col(MirrorEvent.id)))).all())


def delivered(bot: LocalBot) -> Callable[[], Awaitable[bool | None]]:
    async def check() -> bool | None:
        return all(r.delivered_at is not None for r in await mirror_rows(bot)) or None
    return check


async def statuses(gh: FakeGitHub, deployment: int, count: int) -> list[dict[str, Any]] | None:
    found = gh.deployment_statuses.get(deployment, [])
    return found if len(found) >= count else None


async def test_a_deploy_creates_a_github_deployment_and_mirrors_its_states(
        launch, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    bot = await launch(mirrored_config(tmp_path, base_url))
    await bot.driver.command("api staging v1.4.2")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail

    found = await eventually(lambda: statuses(gh, 1, 3))
    assert [s["state"] for s in found] == ["queued", "in_progress", "success"]
    [deployment] = gh.deployments.values()
    assert (deployment["environment"], deployment["ref"]) == ("staging", "v1.4.2")
    assert deployment["payload"]["shipbot_deployment_id"] == dep.id
    [dep] = await finished(bot)
    link = permalink(dep.card_channel, dep.card_ts)
    assert link is not None and {s["log_url"] for s in found} == {link}
    assert {s["environment_url"] for s in found} == {"https://staging.acme.dev"}
    assert dep.github_deployment_id == "1"
    await eventually(delivered(bot))  # recorded once GitHub has answered

    await bot.driver.command("api staging v1.4.3")  # the next one supersedes it
    await finished(bot, 2)
    await eventually(lambda: statuses(gh, 2, 3))
    assert gh.states(2) == ["queued", "in_progress", "success"]
    assert gh.states(1)[-1] == "inactive"  # auto_inactive, as GitHub does


async def test_a_failed_deploy_is_a_failure_on_github(
        launch, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    bot = await launch(mirrored_config(tmp_path, base_url))
    await bot.driver.command("api staging fail-2.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    found = await eventually(lambda: statuses(gh, 1, 3))
    assert [s["state"] for s in found] == ["queued", "in_progress", "failure"]
    assert found[-1]["description"].startswith("Shipbot #1: failed: Build failed: run #1")


async def test_github_down_delays_the_statuses_and_blocks_nothing(
        launch, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    gh.deployments_down = True
    bot = await launch(mirrored_config(tmp_path, base_url))
    bot.bot.mirrors.first_backoff = 0.05
    await bot.driver.command("api staging v1.4.2")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail  # the deployment went on without GitHub

    async def tried() -> bool:
        rows = await mirror_rows(bot)
        return bool(rows) and rows[0].attempts >= 2
    await eventually(tried)
    rows = await mirror_rows(bot)
    assert [r.state for r in rows] == ["queued", "in_progress", "success"]
    assert all(r.delivered_at is None for r in rows)
    assert rows[0].last_error is not None and "HTTP 502" in rows[0].last_error
    assert gh.deployments == {}

    gh.deployments_down = False  # GitHub is back: everything arrives, in order
    found = await eventually(lambda: statuses(gh, 1, 3))
    assert [s["state"] for s in found] == ["queued", "in_progress", "success"]
    assert len(gh.deployments) == 1


async def test_an_unmirrored_service_writes_no_mirror_rows(
        launch, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    bot = await launch(make_config(tmp_path, ci=github_ci(base_url)))
    await bot.driver.command("api staging v1.4.2")
    await finished(bot)
    assert await mirror_rows(bot) == [] and gh.deployments == {}


async def test_a_version_github_does_not_know_is_given_up_at_once(
        launch, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    gh.auto_advance = False  # the build goes on once the queued status was refused
    bot = await launch(mirrored_config(tmp_path, base_url))
    await bot.driver.command("api staging noref-1")

    async def first_given_up() -> bool:
        rows = await mirror_rows(bot)
        return bool(rows) and rows[0].delivered_at is not None
    await eventually(first_given_up)
    gh.auto_advance = True
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail

    async def given_up() -> list[MirrorEvent] | None:
        rows = await mirror_rows(bot)
        return rows if len(rows) == 3 and all(r.delivered_at for r in rows) else None
    rows = await eventually(given_up)
    # The queued status named a version that is no ref, before the build reported its
    # commit: refused, given up at once. Then the deployment is created for the commit.
    refused = ("gave up: GitHub at 127.0.0.1 refused the request (HTTP 422): No ref found "
               "for: noref-1")
    errors = [r.last_error for r in rows]
    assert errors[0] == refused and errors[-1] is None, errors
    [created] = gh.deployments.values()
    assert created["ref"] == dep.commit_sha and dep.commit_sha
