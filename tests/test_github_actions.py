"""The github_actions provider against a stateful fake GitHub (httpx.MockTransport):
the exact requests it sends, what it reports over a run's life, and every error class."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from integrations.base import IntegrationError, JobSpec, RateLimited, RunState
from integrations.github_actions import GitHubActionsProvider
from integrations.github_actions_config import GitHubActionsConfig
from integrations.http import HttpOptions, NotFound, ProviderUnavailable, Rejected, TokenRefused
from tests.fake_github import FakeGitHub, fixture

TOKEN = "ghp_" + "T" * 36
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
JOB = JobSpec(key="deployment-7-abc123def456-build", service="api", env="staging",
              version="v1.4.2")
CORRELATION = "deployment-7-abc123def456-build-"  # + a digest of the key


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> FakeGitHub:
    return FakeGitHub(token=TOKEN, clock=clock)


def make(gh: FakeGitHub, clock: Clock, environ: dict[str, str] | None = None,
         **config: Any) -> GitHubActionsProvider:
    settings = {"repository": "acme/api", "workflow": "build.yml", "ref": "main", **config}
    return GitHubActionsProvider(
        GitHubActionsConfig(**settings),
        options=HttpOptions(transport=httpx.MockTransport(gh.handler)),
        environ={"GITHUB_TOKEN": TOKEN} if environ is None else environ, clock=clock)


def job(version: str) -> JobSpec:
    return JOB.model_copy(update={"version": version})


async def test_start_dispatches_once_with_the_inputs_and_follows_the_run(gh, clock) -> None:
    provider = make(gh, clock)
    run_id = await provider.start(JOB)

    assert run_id == "30433642"
    assert gh.sent() == [
        ("GET", "/repos/acme/api/actions/workflows/build.yml/runs?event=workflow_dispatch"
                "&created=%3E%3D2027-01-14T07%3A59%3A00Z&per_page=100"
                "&exclude_pull_requests=true"),
        ("POST", "/repos/acme/api/actions/workflows/build.yml/dispatches")]
    [body] = gh.dispatches()
    correlation = body["inputs"].pop("shipbot_id")
    assert correlation.startswith(CORRELATION)
    assert body == {"ref": "main", "inputs": {"service": "api", "environment": "staging",
                                              "version": "v1.4.2"},
                    "return_run_details": True}
    post = gh.requests[1]
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["accept"] == "application/vnd.github+json"
    assert post.headers["x-github-api-version"] == "2022-11-28"

    seen = []
    for _ in range(3):
        status = await provider.poll(run_id)
        seen.append((status.state, status.detail))
        gh.tick()
    assert seen == [(RunState.RUNNING, "run #1 of Build is queued"),
                    (RunState.RUNNING, "run #1 of Build is in progress"),
                    (RunState.SUCCEEDED, "run #1 of Build succeeded")]
    assert status.url == "https://github.com/acme/api/actions/runs/30433642"
    assert status.commit == "acb5820ced9479c074f688cc328bf03f341a511d"  # the commit built
    assert gh.sent("GET")[-1] == ("GET", "/repos/acme/api/actions/runs/30433642")


async def test_a_failed_run_names_the_job_and_step_that_failed(gh, clock) -> None:
    provider = make(gh, clock)
    run_id = await provider.start(job("fail-1.0"))
    gh.tick()
    gh.tick()
    status = await provider.poll(run_id)
    assert status.state is RunState.FAILED
    assert status.detail == "run #1 of Build failed: job `build` failed at step `Run Tests`"
    assert gh.sent("GET")[-1] == (
        "GET", "/repos/acme/api/actions/runs/30433642/jobs?filter=latest&per_page=100")


async def test_a_start_after_a_restart_finds_the_run_instead_of_dispatching(gh, clock) -> None:
    run_id = await make(gh, clock).start(JOB)
    gh.tick()
    clock.now += 600  # the bot was down for ten minutes
    restarted = make(gh, clock)
    assert await restarted.start(JOB) == run_id
    assert len(gh.dispatches()) == 1
    assert (await restarted.poll(run_id)).detail == "run #1 of Build is in progress"


async def test_without_run_details_the_run_is_found_by_its_correlation_id(clock) -> None:
    """An older GitHub Enterprise refuses return_run_details: dispatch again without it
    (nothing ran: a 422 starts nothing) and find the run once it is listed."""
    gh = FakeGitHub(token=TOKEN, clock=clock, run_details=False, list_delay=2)
    provider = make(gh, clock)
    run_id = await provider.start(JOB)

    assert run_id.startswith(f"dispatch:{CORRELATION}") and run_id.endswith(f":{int(NOW)}")
    first, second = gh.dispatches()
    assert first["return_run_details"] is True and "return_run_details" not in second
    assert first["inputs"] == second["inputs"]
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.RUNNING, "is waiting for GitHub to list the dispatched run")
    gh.tick()
    gh.tick()
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.RUNNING, "run #1 of Build is queued")
    restarted = make(gh, clock)  # finds it again from the id alone
    assert (await restarted.poll(run_id)).url == \
        "https://github.com/acme/api/actions/runs/30433642"
    assert len(gh.runs) == 1


async def test_a_run_that_never_shows_up_fails_and_says_what_to_fix(clock) -> None:
    gh = FakeGitHub(token=TOKEN, clock=clock, run_details=False, run_name=None)
    provider = make(gh, clock)
    run_id = await provider.start(JOB)
    gh.tick()
    assert (await provider.poll(run_id)).state is RunState.RUNNING
    clock.now += 301
    status = await provider.poll(run_id)
    assert status.state is RunState.FAILED
    assert status.detail == (
        "no run of build.yml carrying Shipbot's id showed up within 301 s of the dispatch: "
        "does the workflow set `run-name:` with ${{ inputs.shipbot_id }}?")


async def test_cancel_stops_the_run(gh, clock) -> None:
    provider = make(gh, clock)
    run_id = await provider.start(job("slow-1"))
    gh.tick()
    await provider.cancel(run_id)
    assert gh.sent("POST")[-1] == ("POST", "/repos/acme/api/actions/runs/30433642/cancel")
    gh.tick()
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED,
                                             "run #1 of Build was cancelled")
    await provider.cancel(run_id)  # completed now: GitHub's 409 is no error


async def test_a_refused_token_names_the_variable(gh, clock) -> None:
    provider = make(gh, clock, environ={"GITHUB_TOKEN": "ghp_" + "x" * 36})
    with pytest.raises(TokenRefused) as caught:
        await provider.start(JOB)
    assert str(caught.value) == ("the token for GitHub was refused (HTTP 401: Bad "
                                 "credentials): check GITHUB_TOKEN")
    assert gh.dispatches() == []


async def test_a_missing_token_variable_is_said_before_any_request(gh, clock) -> None:
    provider = make(gh, clock, environ={}, token_env="CI_TOKEN")
    with pytest.raises(IntegrationError, match=r"^the environment variable CI_TOKEN "
                                                r"\(token_env\) is not set"):
        await provider.start(JOB)
    assert gh.requests == []


async def test_an_unknown_workflow_is_named(gh, clock) -> None:
    with pytest.raises(NotFound) as caught:
        await make(gh, clock, workflow="deploy.yml").start(JOB)
    assert str(caught.value).startswith("GitHub has no workflow deploy.yml in acme/api "
                                        "(HTTP 404)")


async def test_undeclared_inputs_show_githubs_own_message(gh, clock) -> None:
    provider = make(gh, clock, inputs={"service": "{service}", "region": "eu"})
    with pytest.raises(Rejected) as caught:
        await provider.start(JOB)
    assert str(caught.value) == ('GitHub refused the request (HTTP 422): Unexpected inputs '
                                 'provided: ["region"]')


async def test_a_rate_limit_carries_the_wait_until_the_reset(gh, clock) -> None:
    provider = make(gh, clock)
    run_id = await provider.start(JOB)
    gh.faults.append(httpx.Response(403, json=fixture("error_rate_limited.json"), headers={
        "x-ratelimit-limit": "5000", "x-ratelimit-remaining": "0",
        "x-ratelimit-used": "5000", "x-ratelimit-reset": str(int(NOW) + 120),
        "x-ratelimit-resource": "core"}))
    with pytest.raises(RateLimited) as caught:
        await provider.poll(run_id)
    assert caught.value.wait_seconds == 120
    assert str(caught.value) == ("GitHub's rate limit was reached; trying again after "
                                 "08:02:00 UTC (120 s)")
    assert (await provider.poll(run_id)).state is RunState.RUNNING  # and then it goes on


@pytest.mark.parametrize(("fault", "message"), [
    (httpx.Response(502, json={"message": "Server Error"}),
     "GitHub answered HTTP 502: Server Error; will retry"),
    (httpx.ReadTimeout("timed out"), "GitHub did not answer within 30 s"),
])
async def test_outages_are_transient(gh, clock, fault: Any, message: str) -> None:
    provider = make(gh, clock)
    run_id = await provider.start(JOB)
    gh.faults.append(fault)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.poll(run_id)
    assert str(caught.value) == message


async def test_an_unknown_run_id_is_an_integration_error(gh, clock) -> None:
    provider = make(gh, clock)
    with pytest.raises(IntegrationError, match="unknown GitHub Actions run id 'nope'"):
        await provider.poll("nope")
    with pytest.raises(NotFound, match="no workflow run 99 in acme/api"):
        await provider.poll("99")


async def test_latest_version_is_the_newest_green_commit_of_the_branch(gh, clock) -> None:
    gh.add_run(branch="main", sha="a" * 40, conclusion="success")
    gh.add_run(branch="main", sha="b" * 40, conclusion="failure")
    gh.add_run(branch="feature", sha="c" * 40, conclusion="success")
    provider = make(gh, clock, latest_version={"branch": "main"})
    assert await provider.latest_version("api") == "a" * 40
    assert gh.sent() == [("GET", "/repos/acme/api/actions/workflows/build.yml/runs?branch=main"
                                 "&status=success&per_page=1&exclude_pull_requests=true")]


async def test_latest_version_is_the_highest_tag_matching_the_pattern(gh, clock) -> None:
    gh.tags = ["v1.9.2", "v1.10.0", "release-7", "v1.2.0"]
    provider = make(gh, clock, latest_version={"tag_pattern": "v*"})
    assert await provider.latest_version("api") == "v1.10.0"
    assert gh.sent() == [("GET", "/repos/acme/api/tags?per_page=100")]
    assert await make(gh, clock).latest_version("api") is None  # not configured: no call
    assert len(gh.requests) == 1


async def test_enterprise_server_is_reached_at_its_base_url(clock) -> None:
    gh = FakeGitHub(token=TOKEN, clock=clock)
    provider = make(gh, clock, base_url="https://ghe.example.com/api/v3/")
    gh.faults.append(httpx.Response(401, json=fixture("error_bad_credentials.json")))
    with pytest.raises(TokenRefused, match=r"^the token for GitHub at ghe\.example\.com was "
                                           r"refused"):
        await provider.start(JOB)
    assert str(gh.requests[0].url).startswith(
        "https://ghe.example.com/api/v3/repos/acme/api/actions/workflows/build.yml/runs?")


def test_fixtures_keep_the_shapes_of_githubs_docs() -> None:
    """The provider reads these keys; the docs' examples have them (a guard against a
    fixture edited into something GitHub never sends)."""
    run = fixture("workflow_run.json")
    assert {"id", "name", "run_number", "display_title", "status", "conclusion",
            "html_url", "head_sha", "created_at", "event"} <= set(run)
    job_keys = set(fixture("jobs.json")["jobs"][0])
    assert {"name", "status", "conclusion", "steps"} <= job_keys
    assert set(fixture("dispatch_run_details.json")) == {"workflow_run_id", "run_url",
                                                         "html_url"}
    assert set(fixture("tags.json")[0]["commit"]) == {"sha", "url"}


@pytest.mark.parametrize(("answer", "what"), [
    (httpx.Response(200, text="<html>Sign in to GitHub</html>"), "not JSON"),
    (httpx.Response(200, json=["not", "an", "object"]), "not a JSON object"),
])
async def test_a_base_url_that_is_not_the_api_is_said_plainly(gh, clock, answer: Any,
                                                              what: str) -> None:
    gh.faults.append(answer)
    with pytest.raises(IntegrationError) as caught:
        await make(gh, clock).start(JOB)
    assert str(caught.value) == (
        f"GitHub answered /repos/acme/api/actions/workflows/build.yml/runs with {what}; is "
        "base_url the API's URL (https://HOST/api/v3 for Enterprise)?")
    assert gh.dispatches() == []


async def test_polling_backs_off_with_the_runs_age(gh, clock) -> None:
    """The engine polls every few seconds; GitHub is asked at most every tenth of the
    run's age (at most every max_poll_seconds), so a long build costs few requests."""
    provider = make(gh, clock, max_poll_seconds=30)
    run_id = await provider.start(job("slow-1"))
    reads = lambda: gh.sent("GET").count(("GET", "/repos/acme/api/actions/runs/30433642"))  # noqa: E731
    await provider.poll(run_id)
    assert reads() == 1
    gh.tick()
    clock.now += 100  # a tenth of its age: not again for about 10 s
    assert (await provider.poll(run_id)).detail == "run #1 of Build is in progress"
    clock.now += 5
    assert (await provider.poll(run_id)).detail == "run #1 of Build is in progress"
    assert reads() == 2
    clock.now += 7  # 12 s since the last look, at 112 s of age
    await provider.poll(run_id)
    assert reads() == 3
    clock.now += 1000  # old now: every 30 s at most
    await provider.poll(run_id)
    clock.now += 29
    await provider.poll(run_id)
    assert reads() == 4
    await provider.cancel(run_id)
    gh.tick()
    assert (await provider.poll(run_id)).state is RunState.RUNNING  # not asked yet
    clock.now += 1
    assert (await provider.poll(run_id)).detail == "run #1 of Build was cancelled"
