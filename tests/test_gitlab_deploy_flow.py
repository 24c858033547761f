"""`/deploy` through the whole app with GitLab CI as the CI step: signed Slack requests
in, a fake GitLab API on loopback (project by URL-encoded path), Slack messages and
database rows out."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.devtools.local import LocalBot
from tests.conftest import eventually, make_config, serving
from tests.fake_gitlab import FakeGitLab
from tests.test_deploy_flow import deployments, finished

TOKEN = "glpat-" + "E" * 20
PIPELINE_URL = "https://gitlab.example.com/acme/platform/api/-/pipelines/287"
PROJECT = "/api/v4/projects/acme%2Fplatform%2Fapi"


@pytest.fixture
async def gitlab(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeGitLab, str]]:
    """A fake self-managed GitLab whose pipelines move on one status per poll, and its
    base URL."""
    monkeypatch.setenv("GITLAB_TOKEN", TOKEN)
    gl = FakeGitLab(token=TOKEN, project="acme/platform/api", auto_advance=True)
    async with serving(gl.app()) as port:
        yield gl, f"http://127.0.0.1:{port}"


def gitlab_ci(base_url: str) -> dict[str, Any]:
    return {"provider": "gitlab", "project": "acme/platform/api", "ref": "main",
            "base_url": base_url}


def thread(bot: LocalBot) -> list[dict[str, Any]]:
    [card] = bot.slack.messages("#deploys-api")
    return list(card["replies"])


async def test_deploy_builds_on_gitlab_and_links_the_pipeline(
        make_bot, tmp_path: Path, gitlab: tuple[FakeGitLab, str]) -> None:
    gl, base_url = gitlab
    bot = await make_bot(make_config(tmp_path, ci=gitlab_ci(base_url)))
    ack = (await bot.driver.command("api staging v1.4.2")).json()
    assert "Deployment #1 of api `v1.4.2` to staging is on its way" in ack["text"]

    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert dep.ci_run_id == "287" and dep.ci_url == PIPELINE_URL

    [body] = gl.created()
    assert body["ref"] == "main"
    variables = {v["key"]: v["value"] for v in body["variables"]}
    assert variables.pop("SHIPBOT_CORRELATION_ID").startswith("deployment-1-")
    assert variables == {"SHIPBOT_SERVICE": "api", "SHIPBOT_ENV": "staging",
                         "SHIPBOT_VERSION": "v1.4.2"}
    assert ("POST", f"{PROJECT}/pipeline") in gl.sent("POST")
    deploys = [json.loads(line) for line in (tmp_path / "deploy.log").read_text().splitlines()]
    assert deploys == [["api", "staging", "v1.4.2"]]

    replies = await eventually(lambda: _replies(bot, 5))
    texts = [r["text"] for r in replies]
    assert texts[0].startswith(":hammer_and_wrench: Build started for `v1.4.2`")
    assert texts[1].startswith(":link: The build is running.")
    assert texts[2].startswith(":white_check_mark: Build passed (pipeline #287 succeeded)")
    assert texts[3].startswith(":rocket: Deploying `v1.4.2` to staging")
    assert "api v1.4.2 is live on staging" in texts[4]
    for linked in (replies[1], replies[2]):
        assert f"<{PIPELINE_URL}|Open the run>" in json.dumps(linked["blocks"])
    assert TOKEN not in json.dumps([c.params for c in bot.slack.calls_to("chat.postMessage")])

    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert ('shipbot_provider_requests_total{method="POST",outcome="2xx",'
            'provider="gitlab"} 1.0') in metrics  # the one pipeline created
    assert 'method="GET",outcome="2xx",provider="gitlab"' in metrics


async def test_a_failed_pipeline_names_the_job_and_deploys_nothing(
        make_bot, tmp_path: Path, gitlab: tuple[FakeGitLab, str]) -> None:
    _, base_url = gitlab
    bot = await make_bot(make_config(tmp_path, ci=gitlab_ci(base_url)))
    await bot.driver.command("api staging fail-2.0")

    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail == ("Build failed: pipeline #287 failed: job `teaspoon` failed in "
                          "stage `test` (script failure).")
    texts = [r["text"] for r in await eventually(lambda: _replies(bot, 3))]
    assert texts[-1].startswith(":x: *Build failed: pipeline #287 failed: job `teaspoon` "
                                "failed in stage `test` (script failure).* staging was not "
                                "touched")
    assert not (tmp_path / "deploy.log").exists()


async def test_deploy_cancel_cancels_the_pipeline(
        make_bot, tmp_path: Path, gitlab: tuple[FakeGitLab, str]) -> None:
    gl, base_url = gitlab
    bot = await make_bot(make_config(tmp_path, ci=gitlab_ci(base_url)))
    await bot.driver.command("api staging slow-3.0")

    async def building() -> bool:
        deps = await deployments(bot)
        return bool(deps) and deps[0].state == "building" and bool(deps[0].ci_url)

    await eventually(building)
    answer = (await bot.driver.command("cancel api staging")).json()["text"]
    assert answer == "Cancelled deployment #1 of api to staging."
    [dep] = await finished(bot)
    assert dep.state == "cancelled"
    await eventually(lambda: _async(("POST", f"{PROJECT}/pipelines/287/cancel")
                                    in gl.sent("POST")))
    assert gl.pipelines[287].cancel_requested
    assert len(gl.created()) == 1


async def _replies(bot: LocalBot, count: int) -> list[dict[str, Any]] | None:
    roots = bot.slack.messages("#deploys-api")
    return thread(bot) if roots and len(roots[0]["replies"]) >= count else None


async def _async(value: bool) -> bool:
    return value
