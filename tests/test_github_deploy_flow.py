"""`/deploy` through the whole app with GitHub Actions as the CI step: signed Slack
requests in, a fake GitHub API on loopback, Slack messages and database rows out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.devtools.local import LocalBot
from tests.conftest import eventually, make_config, serving
from tests.fake_github import FakeGitHub
from tests.test_deploy_flow import deployments, finished

TOKEN = "ghp_" + "E" * 36
RUN_URL = "https://github.com/acme/api/actions/runs/30433642"


@pytest.fixture
async def github(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGitHub, str]]:
    """A fake GitHub whose runs move on one stage per poll, and its base URL."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    gh = FakeGitHub(token=TOKEN, auto_advance=True)
    async with serving(gh.app()) as port:
        yield gh, f"http://127.0.0.1:{port}"


def github_ci(base_url: str) -> dict[str, Any]:
    return {"provider": "github_actions", "repository": "acme/api", "workflow": "build.yml",
            "ref": "main", "base_url": base_url}


def thread(bot: LocalBot) -> list[dict[str, Any]]:
    [card] = bot.slack.messages("#deploys-api")
    return list(card["replies"])


async def test_deploy_builds_on_github_actions_and_links_the_run(
        make_bot, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:
    gh, base_url = github
    bot = await make_bot(make_config(tmp_path, ci=github_ci(base_url)))
    ack = (await bot.driver.command("api staging v1.4.2")).json()
    assert "Deployment #1 of api `v1.4.2` to staging is on its way" in ack["text"]

    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert dep.ci_run_id == "30433642" and dep.ci_url == RUN_URL

    [body] = gh.dispatches()
    assert body["ref"] == "main" and body["return_run_details"] is True
    assert body["inputs"]["shipbot_id"].startswith("deployment-1-")
    assert {k: v for k, v in body["inputs"].items() if k != "shipbot_id"} == {
        "service": "api", "environment": "staging", "version": "v1.4.2"}
    deploys = [json.loads(line) for line in (tmp_path / "deploy.log").read_text().splitlines()]
    assert deploys == [["api", "staging", "v1.4.2"]]

    replies = await eventually(lambda: _replies(bot, 5))
    texts = [r["text"] for r in replies]
    assert texts[0].startswith(":hammer_and_wrench: Build started for `v1.4.2`")
    assert texts[1].startswith(":link: The build is running.")
    assert texts[2].startswith(":white_check_mark: Build passed (run #1 of Build succeeded)")
    assert texts[3].startswith(":rocket: Deploying `v1.4.2` to staging")
    assert "api v1.4.2 is live on staging" in texts[4]
    for linked in (replies[1], replies[2]):
        assert f"<{RUN_URL}|Open the run>" in json.dumps(linked["blocks"])
    assert TOKEN not in json.dumps([c.params for c in bot.slack.calls_to("chat.postMessage")])

    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert ('shipbot_provider_requests_total{method="POST",outcome="2xx",'
            'provider="github_actions"} 1.0') in metrics  # the one dispatch
    assert 'method="GET",outcome="2xx",provider="github_actions"' in metrics


async def test_a_failed_build_names_the_job_and_deploys_nothing(
        make_bot, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:
    _, base_url = github
    bot = await make_bot(make_config(tmp_path, ci=github_ci(base_url)))
    await bot.driver.command("api staging fail-2.0")

    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail == ("Build failed: run #1 of Build failed: job `build` failed at step "
                          "`Run Tests`.")
    texts = [r["text"] for r in await eventually(lambda: _replies(bot, 3))]
    assert texts[-1].startswith(":x: *Build failed: run #1 of Build failed: job `build` failed "
                                "at step `Run Tests`.* staging was not touched")
    assert not (tmp_path / "deploy.log").exists()


async def test_deploy_cancel_cancels_the_workflow_run(
        make_bot, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:
    gh, base_url = github
    bot = await make_bot(make_config(tmp_path, ci=github_ci(base_url)))
    await bot.driver.command("api staging slow-3.0")

    async def building() -> bool:
        deps = await deployments(bot)
        return bool(deps) and deps[0].state == "building" and bool(deps[0].ci_url)

    await eventually(building)
    answer = (await bot.driver.command("cancel api staging")).json()["text"]
    assert answer == "Cancelled deployment #1 of api to staging."
    [dep] = await finished(bot)
    assert dep.state == "cancelled"
    await eventually(lambda: _async(("POST", "/repos/acme/api/actions/runs/30433642/cancel")
                                    in gh.sent("POST")))
    assert gh.runs[30433642].cancel_requested
    assert len(gh.dispatches()) == 1


async def _replies(bot: LocalBot, count: int) -> list[dict[str, Any]] | None:
    roots = bot.slack.messages("#deploys-api")
    return thread(bot) if roots and len(roots[0]["replies"]) >= count else None


async def _async(value: bool) -> bool:
    return value
