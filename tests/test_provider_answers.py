"""How the GitHub and GitLab readers take answers that are odd but possible: items the
API reference allows to be missing, jobs that failed without a reason, field errors.
Each case is written from what the thread or the changelog must then say."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from integrations import github_runs, gitlab_pipelines
from integrations.base import CheckState, IntegrationError, RunState
from integrations.rest import JsonReads


def test_a_pipeline_being_cancelled_is_still_running() -> None:
    assert gitlab_pipelines.describe_pipeline({"id": 7, "status": "canceling"}) == (
        RunState.RUNNING, "pipeline #7 is being cancelled")


def test_gitlab_names_failed_jobs_oldest_first_and_skips_allowed_failures() -> None:
    jobs = [{"id": 9, "name": "lint", "stage": "test", "status": "failed"},
            {"id": 3, "name": "flaky", "stage": "test", "status": "failed",
             "allow_failure": True},
            {"id": 2, "name": "unit", "stage": "test", "status": "failed",
             "failure_reason": "script_failure"},
            "not a job"]
    assert gitlab_pipelines.failed_job_lines(jobs) == [
        "job `unit` failed in stage `test` (script failure)",
        "job `lint` failed in stage `test`"]  # no reason given: none said
    assert gitlab_pipelines.failed_job_lines({"message": "not a list"}) == []


def test_a_gitlab_commit_without_its_link_gets_one_from_the_project() -> None:
    data = {"commits": [{"id": "a" * 40, "short_id": "aaaaaaaa", "title": " Fix ",
                         "author_name": "Ann"}]}
    found = gitlab_pipelines.comparison(data, base="v1", head="v2",
                                        project_url="https://gl.example/acme/api")
    [commit] = found.commits
    assert (commit.sha, commit.title, commit.author) == ("aaaaaaaa", "Fix", "Ann")
    assert commit.url == f"https://gl.example/acme/api/-/commit/{'a' * 40}"
    assert found.url == "https://gl.example/acme/api/-/compare/v1...v2"


def test_gitlab_error_bodies_in_every_documented_shape() -> None:
    message = gitlab_pipelines.gitlab_message
    assert message("<html>Bad Gateway</html>") == ""
    assert message({"message": {"base": ["Reference not found"], "ref": "is invalid"}}) == (
        "Reference not found; ref is invalid")
    assert message({"message": ["first", "second"]}) == "first; second"
    assert message({"error": 42}) == "42"
    assert message({"error": "invalid_token", "error_description": "expired"}) == (
        "invalid_token; expired")


def test_github_names_failed_jobs_and_their_step_when_there_is_one() -> None:
    jobs = {"jobs": [{"name": "lint", "conclusion": "success"},
                     {"name": "build", "conclusion": "timed_out", "steps": []},
                     {"name": "test", "conclusion": "failure",
                      "steps": [{"name": "Checkout", "conclusion": "success"},
                                {"name": "Run Tests", "conclusion": "failure"}]}]}
    assert github_runs.failed_job_lines(jobs) == [
        "job `build` timed out", "job `test` failed at step `Run Tests`"]


def test_a_github_compare_skips_entries_that_are_not_commits() -> None:
    data = {"commits": ["junk", {"commit": {"message": "no sha"}},
                        {"sha": "b" * 40, "commit": {"message": "Add it (#12)\n\nbody",
                                                     "author": {"name": "Bo"}}}],
            "total_commits": 1}
    found = github_runs.comparison(data)
    assert [(c.sha, c.title, c.author, c.pr) for c in found.commits] == [
        ("b" * 40, "Add it (#12)", "Bo", 12)]
    assert found.total == 1


def test_checks_without_a_name_are_not_counted() -> None:
    runs = {"check_runs": [{"id": 1, "status": "completed", "conclusion": "success"},
                           {"id": 2, "name": "unit", "status": "completed",
                            "conclusion": "success"}]}
    combined = {"statuses": [{"state": "failure"},
                             {"context": "ci/jenkins", "state": "pending"}]}
    results = github_runs.check_results(runs, combined)
    assert [(r.name, r.state) for r in results] == [
        ("unit", CheckState.PASSED), ("ci/jenkins", CheckState.PENDING)]


class Answers(JsonReads):
    """A provider whose every GET answers ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    async def _call(self, method: str, path: str, missing: str,
                    **kwargs: Any) -> httpx.Response:
        return httpx.Response(200, content=self.body)

    def _unexpected(self, path: str, what: str) -> IntegrationError:
        return IntegrationError(f"{path}: {what}; is base_url the API's?")


async def test_an_answer_of_the_wrong_shape_says_where_to_look() -> None:
    assert await Answers(b"[1, 2]")._list("/runs", "runs") == [1, 2]
    assert await Answers(b'{"a": 1}')._object("/run", "run") == {"a": 1}
    for body, read, said in ((b'{"a": 1}', "_list", "not a JSON list"),
                             (b"[1]", "_object", "not a JSON object"),
                             (b"<html>", "_json", "not JSON")):
        with pytest.raises(IntegrationError) as caught:
            await getattr(Answers(body), read)("/x", "x")
        assert str(caught.value) == f"/x: {said}; is base_url the API's?"
