"""The gitlab provider against a stateful fake GitLab (httpx.MockTransport): the exact
requests it sends, what it reports over a pipeline's life, compare, and every error."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from integrations.base import Comparison, IntegrationError, JobSpec, RateLimited, RunState
from integrations.gitlab import MAX_CANDIDATES, GitLabProvider
from integrations.gitlab_config import GitLabConfig
from integrations.gitlab_pipelines import comparison, describe_pipeline, failed_job_lines
from integrations.http import HttpOptions, NotFound, ProviderUnavailable, Rejected, TokenRefused
from tests.fake_gitlab import FakeGitLab, commit, fixture, iso

TOKEN = "glpat-" + "T" * 20
TRIGGER = "glptt-" + "a" * 40
NOW = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC
JOB = JobSpec(key="deployment-7-abc123def456-build", service="api", env="staging",
              version="v1.4.2")
CORRELATION = "deployment-7-abc123def456-build-"  # + a digest of the key
PROJECT = "/api/v4/projects/acme%2Fapi"
PIPELINE_URL = "https://gitlab.example.com/acme/api/-/pipelines/287"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gl(clock: Clock) -> FakeGitLab:
    return FakeGitLab(token=TOKEN, trigger_token=TRIGGER, clock=clock,
                      refs=frozenset({"main", "v1.4.2"}))


def make(gl: FakeGitLab, clock: Clock, environ: dict[str, str] | None = None,
         **config: Any) -> GitLabProvider:
    settings = {"project": "acme/api", **config}
    return GitLabProvider(
        GitLabConfig(**settings),
        options=HttpOptions(transport=httpx.MockTransport(gl.handler)),
        environ={"GITLAB_TOKEN": TOKEN, "TRIGGER_TOKEN": TRIGGER} if environ is None
        else environ, clock=clock)


def job(version: str) -> JobSpec:
    return JOB.model_copy(update={"version": version})


async def test_start_creates_one_pipeline_with_the_variables_and_follows_it(gl, clock) -> None:
    provider = make(gl, clock)
    run_id = await provider.start(JOB)

    assert run_id == "287"
    assert gl.sent() == [
        ("GET", f"{PROJECT}/pipelines?ref=main&source=api"
                "&updated_after=2027-01-14T08%3A00%3A00Z&order_by=id&sort=desc&per_page=20"),
        ("POST", f"{PROJECT}/pipeline")]
    [body] = gl.created()
    variables = {v["key"]: v["value"] for v in body["variables"]}
    assert variables.pop("SHIPBOT_CORRELATION_ID").startswith(CORRELATION)
    assert body["ref"] == "main"
    assert variables == {"SHIPBOT_SERVICE": "api", "SHIPBOT_ENV": "staging",
                         "SHIPBOT_VERSION": "v1.4.2"}
    post = gl.requests[1]
    assert post.headers["private-token"] == TOKEN
    assert "authorization" not in post.headers

    seen = []
    for _ in range(4):
        clock.now += 60
        status = await provider.poll(run_id)
        seen.append((status.state, status.detail))
        gl.tick()
    assert seen == [(RunState.RUNNING, "pipeline #287 is created"),
                    (RunState.RUNNING, "pipeline #287 is pending (waiting for a runner)"),
                    (RunState.RUNNING, "pipeline #287 is running"),
                    (RunState.SUCCEEDED, "pipeline #287 succeeded")]
    assert status.url == PIPELINE_URL
    assert status.commit == "50f0acb76a40e34a4ff304f7347dcc6587da8a14"
    assert gl.sent("GET")[-1] == ("GET", f"{PROJECT}/pipelines/287")
    assert len(gl.pipelines) == 1


async def test_a_failed_pipeline_names_the_job_and_stage_that_failed(gl, clock) -> None:
    provider = make(gl, clock)
    run_id = await provider.start(job("fail-1.0"))
    for _ in range(3):
        gl.tick()
    status = await provider.poll(run_id)
    assert status.state is RunState.FAILED
    assert status.detail == ("pipeline #287 failed: job `teaspoon` failed in stage `test` "
                             "(script failure)")
    assert status.url == PIPELINE_URL
    assert gl.sent("GET")[-1] == ("GET", f"{PROJECT}/pipelines/287/jobs?"
                                         "scope%5B%5D=failed&per_page=100")


@pytest.mark.parametrize(("status", "state", "detail"), [
    ("waiting_for_resource", RunState.RUNNING, "pipeline #287 is waiting for a resource"),
    ("preparing", RunState.RUNNING, "pipeline #287 is preparing"),
    ("scheduled", RunState.RUNNING, "pipeline #287 is scheduled"),
    ("manual", RunState.RUNNING,
     "pipeline #287 is waiting for someone to run its manual job on GitLab"),
    ("canceled", RunState.FAILED, "pipeline #287 was cancelled"),
    ("skipped", RunState.FAILED,
     "pipeline #287 was skipped (no job ran: check the rules in .gitlab-ci.yml)"),
    ("failed", RunState.FAILED, "pipeline #287 failed"),
    ("success", RunState.SUCCEEDED, "pipeline #287 succeeded"),
])
def test_every_pipeline_status_has_a_state_and_a_sentence(status: str, state: RunState,
                                                          detail: str) -> None:
    assert describe_pipeline({**fixture("pipeline.json"), "status": status}) == (state,
                                                                                 detail)


def test_the_docs_job_list_names_each_failed_job_earliest_first() -> None:
    expected = ["job `rspec:other` failed in stage `test` (stuck or timeout failure)",
                "job `teaspoon` failed in stage `test` (script failure)"]
    assert failed_job_lines(fixture("jobs.json")) == expected
    assert failed_job_lines(fixture("jobs.json")[::-1]) == expected
    allowed = [{**fixture("jobs.json")[0], "allow_failure": True}]
    assert failed_job_lines(allowed) == []


async def test_a_start_after_a_restart_finds_the_pipeline_by_its_variables(gl, clock) -> None:
    """The bot died after creating the pipeline and before recording its id: the new
    process reads the variables of the ref's newest pipelines instead of creating again."""
    run_id = await make(gl, clock).start(JOB)
    gl.add_pipeline(ref="main", sha="b" * 40, status="running", source="api",
                    variables={"SHIPBOT_CORRELATION_ID": "someone-else"})
    gl.tick()
    clock.now += 600  # the bot was down for ten minutes
    restarted = make(gl, clock)
    assert await restarted.start(JOB) == run_id
    assert len(gl.created()) == 1
    assert gl.sent()[-3:] == [
        ("GET", f"{PROJECT}/pipelines?ref=main&source=api&updated_after="
                "2027-01-14T08%3A10%3A00Z&order_by=id&sort=desc&per_page=20"),
        ("GET", f"{PROJECT}/pipelines/288/variables"),
        ("GET", f"{PROJECT}/pipelines/287/variables")]
    assert (await restarted.poll(run_id)).detail == "pipeline #287 is pending (waiting for " \
                                                    "a runner)"
    assert await restarted.start(JOB) == run_id  # remembered now: no search
    assert len(gl.requests) == 6


async def test_the_search_reads_at_most_a_bounded_number_of_pipelines(gl, clock) -> None:
    """A pipeline further down than MAX_CANDIDATES is not found (the documented limit):
    the start creates a new one after reading that many pipelines' variables."""
    provider = make(gl, clock)
    for n in range(MAX_CANDIDATES + 5):
        gl.add_pipeline(ref="main", sha=f"{n:040x}", status="running", source="api",
                        variables={"SHIPBOT_CORRELATION_ID": f"other-{n}"})
    await provider.start(JOB)
    reads = [p for m, p in gl.sent("GET") if p.endswith("/variables")]
    assert len(reads) == MAX_CANDIDATES
    assert reads[0] == f"{PROJECT}/pipelines/{287 + MAX_CANDIDATES + 4}/variables"
    assert len(gl.created()) == 1


async def test_a_deploy_of_an_earlier_build_gets_its_artifact_as_a_variable(gl, clock
                                                                           ) -> None:
    deploy = JOB.model_copy(update={"key": "deployment-7-abc123def456-deploy",
                                    "artifact": "registry.example.com/api@sha256:abc"})
    await make(gl, clock).start(deploy)
    [body] = gl.created()
    variables = {v["key"]: v["value"] for v in body["variables"]}
    assert variables["SHIPBOT_ARTIFACT"] == "registry.example.com/api@sha256:abc"
    await make(gl, clock).start(JOB)
    assert "SHIPBOT_ARTIFACT" not in {v["key"] for v in gl.created()[1]["variables"]}


async def test_a_trigger_token_creates_through_the_trigger_api(gl, clock) -> None:
    provider = make(gl, clock, trigger_token_env="TRIGGER_TOKEN")
    run_id = await provider.start(JOB)
    assert run_id == "287"
    assert gl.sent("POST") == [("POST", f"{PROJECT}/trigger/pipeline")]
    assert gl.sent("GET")[0][1].startswith(f"{PROJECT}/pipelines?ref=main&source=trigger&")
    [body] = gl.created()
    assert body["token"] == TRIGGER and body["ref"] == "main"
    assert body["variables"]["SHIPBOT_VERSION"] == "v1.4.2"
    assert body["variables"]["SHIPBOT_CORRELATION_ID"].startswith(CORRELATION)
    trigger = gl.requests[1]
    assert "private-token" not in trigger.headers
    assert TRIGGER not in str(trigger.url)  # in the body, never in a URL a proxy logs
    assert gl.pipelines[287].source == "trigger"
    assert (await provider.poll(run_id)).url == PIPELINE_URL  # followed with token_env


async def test_a_refused_trigger_token_names_its_variable(gl, clock) -> None:
    provider = make(gl, clock, trigger_token_env="TRIGGER_TOKEN",
                    environ={"GITLAB_TOKEN": TOKEN, "TRIGGER_TOKEN": "glptt-" + "x" * 40})
    with pytest.raises(NotFound) as caught:
        await provider.start(JOB)
    assert "or the trigger token in TRIGGER_TOKEN is not valid for it" in str(caught.value)
    assert "glptt-" not in str(caught.value)


async def test_ref_from_version_builds_the_tag_the_version_names(gl, clock) -> None:
    provider = make(gl, clock, ref_from_version=True)
    await provider.start(JOB)
    assert gl.created()[0]["ref"] == "v1.4.2"
    with pytest.raises(Rejected) as caught:
        await provider.start(job("v9.9.9").model_copy(update={"key": "deployment-8-x-build"}))
    assert str(caught.value) == "GitLab refused the request (HTTP 400): Reference not found"


async def test_cancel_cancels_the_pipeline(gl, clock) -> None:
    provider = make(gl, clock)
    run_id = await provider.start(job("slow-1"))
    gl.tick()
    assert (await provider.poll(run_id)).state is RunState.RUNNING
    await provider.cancel(run_id)
    assert gl.sent("POST")[-1] == ("POST", f"{PROJECT}/pipelines/287/cancel")
    gl.tick()
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "pipeline #287 was cancelled")
    await provider.cancel(run_id)  # finished now: GitLab still answers 200


async def test_a_refused_token_names_the_variable(gl, clock) -> None:
    provider = make(gl, clock, environ={"GITLAB_TOKEN": "glpat-" + "x" * 20})
    with pytest.raises(TokenRefused) as caught:
        await provider.start(JOB)
    assert str(caught.value) == ("the token for GitLab was refused (HTTP 401: 401 "
                                 "Unauthorized): check GITLAB_TOKEN")
    assert gl.created() == []


async def test_a_forbidden_answer_is_a_refused_token_too(gl, clock) -> None:
    gl.faults.append(httpx.Response(403, json=fixture("error_forbidden.json")))
    with pytest.raises(TokenRefused, match=r"\(HTTP 403: 403 Forbidden\): check CI_TOKEN$"):
        await make(gl, clock, token_env="CI_TOKEN",
                   environ={"CI_TOKEN": TOKEN}).start(JOB)


async def test_a_missing_token_variable_is_said_before_any_request(gl, clock) -> None:
    provider = make(gl, clock, environ={}, token_env="CI_TOKEN")
    with pytest.raises(IntegrationError, match=r"^the environment variable CI_TOKEN "
                                                r"\(token_env\) is not set"):
        await provider.start(JOB)
    assert gl.requests == []


async def test_an_unknown_project_is_named_with_what_to_check(gl, clock) -> None:
    with pytest.raises(NotFound) as caught:
        await make(gl, clock, project="acme/apii").start(JOB)
    assert str(caught.value).startswith(
        "GitLab has no project acme/apii (write its numeric id or its path "
        "group/subgroup/project as in its URL; Shipbot URL-encodes it) (HTTP 404)")


async def test_project_paths_are_url_encoded_and_ids_are_not(clock) -> None:
    gl = FakeGitLab(token=TOKEN, clock=clock, project="acme/platform/api", project_id=42)
    await make(gl, clock, project="acme/platform/api").start(JOB)
    assert gl.sent("POST") == [("POST", "/api/v4/projects/acme%2Fplatform%2Fapi/pipeline")]
    await make(gl, clock, project=42).start(JOB.model_copy(update={"key": "deployment-8"}))
    assert gl.sent("POST")[-1] == ("POST", "/api/v4/projects/42/pipeline")
    assert GitLabConfig(project="acme%2Fplatform%2Fapi").project == "acme/platform/api"


async def test_a_self_managed_gitlab_is_reached_at_its_base_url(clock) -> None:
    gl = FakeGitLab(token=TOKEN, clock=clock)
    provider = make(gl, clock, base_url="https://git.example.com/api/v4/")
    assert await provider.start(JOB) == "287"
    assert str(gl.requests[0].url).startswith(
        "https://git.example.com/api/v4/projects/acme%2Fapi/pipelines?")
    gl.faults.append(httpx.Response(401, json=fixture("error_unauthorized.json")))
    with pytest.raises(TokenRefused, match=r"^the token for GitLab at git\.example\.com was "
                                           r"refused"):
        await provider.poll("287")


async def test_a_bad_request_shows_gitlabs_own_message(gl, clock) -> None:
    with pytest.raises(Rejected) as caught:
        await make(gl, clock, ref="release/{version}").start(JOB)
    assert str(caught.value) == "GitLab refused the request (HTTP 400): Reference not found"
    gl.faults.append(httpx.Response(400, json=fixture("error_missing_attribute.json")))
    with pytest.raises(Rejected, match=r"\(HTTP 400\): ref is missing$"):
        await make(gl, clock).start(JOB)
    gl.faults.append(httpx.Response(422, json={"message": {"variables": ["is invalid"]}}))
    with pytest.raises(Rejected, match=r"\(HTTP 422\): variables is invalid$"):
        await make(gl, clock).start(JOB)


@pytest.mark.parametrize("headers", [
    {"Retry-After": "120", "RateLimit-Reset": str(int(NOW) + 120)},
    {"RateLimit-Limit": "2000", "RateLimit-Remaining": "0",
     "RateLimit-Reset": str(int(NOW) + 120)},
])
async def test_a_rate_limit_carries_the_wait(gl, clock, headers: dict[str, str]) -> None:
    provider = make(gl, clock)
    run_id = await provider.start(JOB)
    gl.faults.append(httpx.Response(429, text="Retry later", headers=headers))
    with pytest.raises(RateLimited) as caught:
        await provider.poll(run_id)
    assert caught.value.wait_seconds == 120
    assert str(caught.value) == ("GitLab's rate limit was reached; trying again after "
                                 "08:02:00 UTC (120 s)")
    assert (await provider.poll(run_id)).state is RunState.RUNNING  # and then it goes on


@pytest.mark.parametrize(("fault", "message"), [
    (httpx.Response(502, json={"message": "502 Bad Gateway"}),
     "GitLab answered HTTP 502: 502 Bad Gateway; will retry"),
    (httpx.ReadTimeout("timed out"), "GitLab did not answer within 30 s"),
])
async def test_outages_and_timeouts_are_transient(gl, clock, fault: Any, message: str) -> None:
    provider = make(gl, clock)
    run_id = await provider.start(JOB)
    gl.faults.append(fault)
    with pytest.raises(ProviderUnavailable) as caught:
        await provider.poll(run_id)
    assert str(caught.value) == message


async def test_an_unknown_pipeline_id_is_an_integration_error(gl, clock) -> None:
    provider = make(gl, clock)
    with pytest.raises(IntegrationError, match="unknown GitLab pipeline id 'nope'"):
        await provider.poll("nope")
    with pytest.raises(NotFound, match="no pipeline 99 in project acme/api"):
        await provider.poll("99")


async def test_a_base_url_that_is_not_gitlab_is_said_plainly(gl, clock) -> None:
    gl.faults.append(httpx.Response(200, text="<html>Sign in</html>"))
    with pytest.raises(IntegrationError) as caught:
        await make(gl, clock).start(JOB)
    assert str(caught.value) == (
        "GitLab answered /projects/acme%2Fapi/pipelines with not JSON; is base_url the "
        "GitLab server's URL (https://HOST, without /api/v4)?")
    assert gl.created() == []


async def test_latest_version_is_the_newest_green_pipelines_commit(gl, clock) -> None:
    gl.add_pipeline(ref="main", sha="a" * 40, status="success")
    gl.add_pipeline(ref="main", sha="b" * 40, status="failed")
    gl.add_pipeline(ref="feature", sha="c" * 40, status="success")
    provider = make(gl, clock, latest_version={"branch": "main"})
    assert await provider.latest_version("api") == "a" * 40
    assert gl.sent() == [("GET", f"{PROJECT}/pipelines?ref=main&status=success&order_by=id"
                                 "&sort=desc&per_page=1")]


async def test_latest_version_is_the_highest_tag_matching_the_pattern(gl, clock) -> None:
    gl.tags = ["v1.9.2", "v1.10.0", "release-7", "v1.2.0"]
    provider = make(gl, clock, latest_version={"tag_pattern": "v*"})
    assert await provider.latest_version("api") == "v1.10.0"
    assert gl.sent() == [("GET", f"{PROJECT}/repository/tags?per_page=100")]
    assert await make(gl, clock).latest_version("api") is None  # not configured: no call
    assert len(gl.requests) == 1


async def test_compare_lists_the_commits_oldest_first_with_merge_requests(gl, clock) -> None:
    gl.history = [commit(1, "Base"),
                  commit(2, "Fix login timeout", author="Alice"),
                  commit(3, "Merge branch 'retry' into 'main'", author="Bob",
                         message="Merge branch 'retry' into 'main'\n\nRetry uploads\n\n"
                                 "See merge request acme/api!123"),
                  commit(4, "Bump version")]
    provider = make(gl, clock)
    result = await provider.compare(f"{1:040x}", f"{4:040x}")
    assert gl.sent() == [("GET", f"{PROJECT}/repository/compare?from={1:040x}&to={4:040x}")]
    assert isinstance(result, Comparison) and result.total == 3
    assert [(c.sha, c.title, c.author, c.pr) for c in result.commits] == [
        (f"{2:040x}"[:11], "Fix login timeout", "Alice", None),
        (f"{3:040x}"[:11], "Merge branch 'retry' into 'main'", "Bob", 123),
        (f"{4:040x}"[:11], "Bump version", "Example User", None)]
    assert result.commits[0].url == f"https://gitlab.com/acme/api/-/commit/{2:040x}"
    assert result.url == f"https://gitlab.com/acme/api/-/compare/{1:040x}...{4:040x}"


def test_compare_keeps_twenty_and_counts_all_and_reads_the_docs_example() -> None:
    many = [commit(n, f"change {n}") for n in range(1, 31)]
    result = comparison({"commit": many[-1], "commits": many}, base="a", head="b",
                        project_url=None)
    assert result.total == 30 and len(result.commits) == 20
    assert result.commits[0].title == "change 1" and result.url is None
    newest_first = comparison({"commit": many[-1], "commits": many[::-1]}, base="a",
                              head="b", project_url=None)
    assert [c.title for c in newest_first.commits] == [c.title for c in result.commits]
    docs = comparison(fixture("compare.json"), base="master", head="feature",
                      project_url="https://gitlab.example.com/acme/api")
    assert [(c.sha, c.title, c.author, c.pr) for c in docs.commits] == [
        ("12d65c8dd2b", "JS fix", "Example User", None)]
    with_url = comparison({**fixture("compare.json"), "web_url": "https://x/compare"},
                          base="a", head="b", project_url=None)
    assert with_url.url == "https://x/compare"


async def test_compare_of_an_unknown_version_names_both(gl, clock) -> None:
    with pytest.raises(NotFound, match=r"^GitLab has no commit, branch or tag 'v1' or 'v2' "
                                       r"in project acme/api \(HTTP 404\)"):
        await make(gl, clock).compare("v1", "v2")


async def test_polling_backs_off_with_the_pipelines_age(gl, clock) -> None:
    provider = make(gl, clock, max_poll_seconds=30)
    run_id = await provider.start(job("slow-1"))
    reads = lambda: gl.sent("GET").count(("GET", f"{PROJECT}/pipelines/287"))  # noqa: E731
    await provider.poll(run_id)
    assert reads() == 1
    gl.tick()
    clock.now += 100  # a tenth of its age: not again for about 10 s
    assert (await provider.poll(run_id)).detail == "pipeline #287 is pending (waiting for " \
                                                   "a runner)"
    clock.now += 5
    await provider.poll(run_id)
    assert reads() == 2
    clock.now += 7
    await provider.poll(run_id)
    assert reads() == 3
    clock.now += 1000  # old now: every 30 s at most
    await provider.poll(run_id)
    clock.now += 29
    await provider.poll(run_id)
    assert reads() == 4


def test_fixtures_keep_the_shapes_of_gitlabs_docs() -> None:
    """The provider reads these keys; the docs' examples have them."""
    assert {"id", "status", "ref", "sha", "web_url", "source", "created_at",
            "updated_at"} <= set(fixture("pipeline.json"))
    assert {"id", "web_url", "status", "ref", "sha"} <= set(fixture("create_pipeline.json"))
    assert {"id", "ref", "source", "status", "sha", "updated_at"} <= \
        set(fixture("pipelines.json")[0])
    assert {"key", "value"} <= set(fixture("pipeline_variables.json")[0])
    assert {"name", "stage", "status", "failure_reason", "allow_failure"} <= \
        set(fixture("jobs.json")[0])
    assert {"commit", "commits", "diffs", "compare_same_ref"} <= set(fixture("compare.json"))
    assert {"id", "short_id", "title", "author_name"} <= \
        set(fixture("compare.json")["commits"][0])
    assert {"name", "target", "commit"} <= set(fixture("tags.json")[0])


def test_iso_times_compare_like_gitlabs() -> None:
    assert iso(NOW) == "2027-01-15T08:00:00.000Z"
    assert json.loads(json.dumps(fixture("error_reference_not_found.json"))) == {
        "message": {"base": ["Reference not found"]}}
