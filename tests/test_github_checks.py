"""The quality gate on GitHub: a commit whose required check runs or commit statuses have
not passed is refused before anything runs, naming the check; the provider's reading of
GitHub's answers; and a whole /deploy through the app refused (or let through)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.engine.quality import refusal
from integrations.base import Capability, CheckResult, CheckState
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_runs import check_results, required_results
from tests.conftest import eventually, make_config
from tests.fake_github import FakeGitHub, fixture
from tests.test_deploy_flow import finished
from tests.test_github_actions import TOKEN, Clock, make
from tests.test_github_deploy_flow import _replies, github, github_ci  # noqa: F401

P, W, F = CheckState.PASSED, CheckState.PENDING, CheckState.FAILED


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> FakeGitHub:
    return FakeGitHub(token=TOKEN, clock=clock)


def states(results: list[CheckResult]) -> list[tuple[str, CheckState, str]]:
    return [(r.name, r.state, r.detail) for r in results]


def test_the_docs_examples_read_as_passed_checks() -> None:
    results = check_results(fixture("check_runs.json"), fixture("combined_status.json"))
    assert states(results) == [("mighty_readme", P, "neutral"),
                               ("continuous-integration/jenkins", P, "success"),
                               ("security/brakeman", P, "success")]
    assert results[0].url == "https://github.com/github/hello-world/runs/4"
    assert results[1].url == "https://ci.example.com/1000/output"


def test_each_conclusion_and_state_is_read_as_branch_protection_does() -> None:
    runs = {"check_runs": [
        {"id": 1, "name": "a", "status": "completed", "conclusion": "success"},
        {"id": 2, "name": "b", "status": "completed", "conclusion": "skipped"},
        {"id": 3, "name": "c", "status": "in_progress", "conclusion": None},
        {"id": 4, "name": "d", "status": "completed", "conclusion": "timed_out"},
        {"id": 5, "name": "e", "status": "completed", "conclusion": "action_required"},
        {"id": 7, "name": "f", "status": "completed", "conclusion": "success"},
        {"id": 6, "name": "f", "status": "completed", "conclusion": "failure"},  # older
    ]}
    combined = {"statuses": [{"context": "g", "state": "pending"},
                             {"context": "h", "state": "error"},
                             {"context": "a", "state": "failure"}]}  # a check run is "a"
    assert states(check_results(runs, combined)) == [
        ("a", P, "success"), ("b", P, "skipped"), ("c", W, "in progress"),
        ("d", F, "timed out"), ("e", F, "action required"), ("f", P, "success"),
        ("g", W, "pending"), ("h", F, "error")]


def test_required_names_missing_ones_as_pending_and_all_needs_at_least_one() -> None:
    found = [CheckResult(name="test", state=P)]
    assert states(required_results(found, ["test", "lint"], "v1")) == [
        ("test", P, ""), ("lint", W, "not reported")]
    assert required_results(found, "all", "v1") == found
    assert states(required_results([], "all", "v1")) == [
        ("any check", W, "none has reported on v1")]


async def test_checks_asks_both_apis_for_the_ref(gh, clock) -> None:
    gh.check_runs = [("test", "completed", "success"), ("lint", "queued", None)]
    gh.statuses = [("ci/jenkins", "failure")]
    provider = make(gh, clock, required_checks=["test", "ci/jenkins", "deploy-preview"])
    results = await provider.checks("v1.4.2")
    assert states(results) == [("test", P, "success"), ("ci/jenkins", F, "failure"),
                               ("deploy-preview", W, "not reported")]
    assert gh.sent() == [
        ("GET", "/repos/acme/api/commits/v1.4.2/check-runs?filter=latest&per_page=100"),
        ("GET", "/repos/acme/api/commits/v1.4.2/status?per_page=100")]
    all_of_them = await make(gh, clock, required_checks="all").checks("v1.4.2")
    assert [r.name for r in all_of_them] == ["test", "lint", "ci/jenkins"]


async def test_no_required_checks_asks_nothing(gh, clock) -> None:
    assert await make(gh, clock).checks("v1") == []
    assert gh.requests == []


@pytest.mark.parametrize(("value", "problem"), [
    ([], "name at least one check"), ([" "], "must not be empty"),
    (["a", "a"], "named twice"), ("some", "Input should be 'all'")])
def test_required_checks_is_validated(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        GitHubActionsConfig(repository="acme/api", workflow="build.yml", ref="main",
                            required_checks=value)


def test_required_checks_turns_the_capability_on() -> None:
    base = {"repository": "acme/api", "workflow": "build.yml", "ref": "main"}
    assert Capability.CHECKS not in GitHubActionsConfig(**base).capabilities()
    assert Capability.CHECKS in GitHubActionsConfig(**base, required_checks="all"
                                                    ).capabilities()


def test_the_refusal_names_each_check_and_counts_the_rest() -> None:
    failed = [CheckResult(name=f"t{i}", state=F, detail="failure") for i in range(6)]
    pending = [CheckResult(name="lint", state=W, detail="in progress")]
    assert refusal("v1.4.2", failed[:1], pending) == (
        "`v1.4.2` has not passed its required checks: `t0` failed (failure), `lint` is "
        "pending (in progress).")
    assert refusal("v1", failed, pending).endswith("`t4` failed (failure), and 2 more.")
    assert refusal("v1", [CheckResult(name="<!here>", state=F, detail="x")], []) == (
        "`v1` has not passed its required checks: `&lt;!here&gt;` failed (x).")


async def test_deploy_of_a_commit_with_a_failing_check_is_refused_and_nothing_runs(
        make_bot, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    gh.check_runs = [("test", "completed", "failure"), ("lint", "completed", "success")]
    config = make_config(tmp_path, ci={**github_ci(base_url), "required_checks": ["test"]})
    bot = await make_bot(config)
    await bot.driver.command("api staging v1.4.2")

    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert dep.detail == "`v1.4.2` has not passed its required checks: `test` failed " \
                         "(failure)."
    assert gh.dispatches() == [] and not (tmp_path / "deploy.log").exists()
    replies = await eventually(lambda: _replies(bot, 1))
    assert replies[-1]["text"] == (
        ":no_entry: *`v1.4.2` has not passed its required checks: `test` failed (failure).* "
        "Nothing was deployed and staging was not touched. To deploy, fix what failed and "
        "push a new version, then `/deploy api staging v1.4.2` again.")
    assert "https://github.com/acme/api/runs/1" in json.dumps(replies[-1]["blocks"])


async def test_deploy_of_a_commit_whose_checks_passed_goes_ahead(
        make_bot, tmp_path: Path, github: tuple[FakeGitHub, str]) -> None:  # noqa: F811
    gh, base_url = github
    gh.check_runs = [("test", "completed", "success")]
    gh.statuses = [("ci/jenkins", "success")]
    config = make_config(tmp_path, ci={**github_ci(base_url), "required_checks": "all"})
    bot = await make_bot(config)
    await bot.driver.command("api staging v1.4.2")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert len(gh.dispatches()) == 1
