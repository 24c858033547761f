"""The github_actions provider as the repository's ChangeSource: what changed between the
running and the new version (GitHub's "Compare two commits"), and the registry handing it
to the engine as ``ServiceProviders.changes``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from integrations.base import Capability, IntegrationError
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_runs import comparison, pr_number
from integrations.http import HttpOptions, NotFound
from integrations.registry import ProviderContext, build_ci
from tests.fake_github import FakeGitHub, fixture
from tests.test_github_actions import TOKEN, Clock, make


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> FakeGitHub:
    return FakeGitHub(token=TOKEN, clock=clock)


@pytest.mark.parametrize(("message", "number"), [
    ("Add retries to the client (#123)", 123),
    ("Add retries (#123)\n\nCo-authored-by: someone", 123),
    ("Merge pull request #45 from acme/fix-login\n\nFix login", 45),
    ("Fix #12 in the parser", None),  # an issue reference is no PR
    ("Bump version", None),
    ("", None),
])
def test_the_pr_number_comes_from_the_commit_message(message: str, number: int | None) -> None:
    assert pr_number(message) == number


def test_the_docs_example_reads_as_one_commit() -> None:
    result = comparison(fixture("compare.json"))
    assert result.total == 1
    assert result.url == "https://github.com/octocat/Hello-World/compare/master...topic"
    [commit] = result.commits
    assert commit.sha == "6dcb09b5b57875f334f61aebed695e2e4193db5e"
    assert commit.title == "Fix all the bugs" and commit.author == "octocat"
    assert commit.pr is None
    assert commit.url == ("https://github.com/octocat/Hello-World/commit/"
                          "6dcb09b5b57875f334f61aebed695e2e4193db5e")


async def test_compare_lists_the_commits_oldest_first_with_authors_and_prs(gh, clock) -> None:
    gh.add_commits("Initial", tag="v1.0.0")
    gh.add_commits("Add retries (#101)", "Merge pull request #102 from acme/login\n\nLogin")
    gh.add_commits("Hotfix straight on main", author=None, tag="v1.1.0")

    result = await make(gh, clock).compare("v1.0.0", "v1.1.0")

    assert [(c.title, c.author, c.pr) for c in result.commits] == [
        ("Add retries (#101)", "octocat", 101),
        ("Merge pull request #102 from acme/login", "octocat", 102),
        ("Hotfix straight on main", "Monalisa Octocat", None),  # no account: the name
    ]
    assert result.total == 3
    assert result.url == "https://github.com/acme/api/compare/v1.0.0...v1.1.0"
    assert result.commits[0].url == f"https://github.com/acme/api/commit/{'2':0>40}"
    assert gh.sent() == [("GET", "/repos/acme/api/compare/v1.0.0...v1.1.0?per_page=100")]


async def test_compare_gives_the_first_page_and_the_total(gh, clock) -> None:
    [base] = gh.add_commits("base")
    shas = gh.add_commits(*(f"change {i}" for i in range(130)))
    result = await make(gh, clock).compare(base, shas[-1])
    assert result.total == 130 and len(result.commits) == 100
    assert result.commits[0].title == "change 0"


async def test_same_version_compares_to_nothing(gh, clock) -> None:
    gh.add_commits("one", tag="v1")
    result = await make(gh, clock).compare("v1", "v1")
    assert result.commits == [] and result.total == 0


async def test_an_unknown_version_names_both_and_the_repository(gh, clock) -> None:
    gh.add_commits("one", tag="v1")
    with pytest.raises(NotFound) as caught:
        await make(gh, clock).compare("v1", "v9")
    assert str(caught.value).startswith("GitHub has no commit v1 or v9 in acme/api (HTTP 404)")


@pytest.mark.parametrize("bad", ["", "../../admin", "v1 v2", "/etc"])
async def test_a_version_that_is_no_ref_is_refused_before_any_request(gh, clock,
                                                                      bad: str) -> None:
    with pytest.raises(IntegrationError, match="cannot compare"):
        await make(gh, clock).compare(bad, "v2")
    assert gh.requests == []


def test_the_config_declares_compare_and_the_registry_hands_it_to_the_engine(
        tmp_path: Path, gh: FakeGitHub) -> None:
    config = GitHubActionsConfig(repository="acme/api", workflow="build.yml", ref="main")
    assert Capability.COMPARE in config.capabilities()
    bundle = build_ci(config, ProviderContext(state_dir=tmp_path, environ={}))
    assert bundle.changes is bundle.ci


async def test_compare_through_the_bundle(tmp_path: Path, gh: FakeGitHub) -> None:
    gh.add_commits("one", tag="v1")
    gh.add_commits("two (#7)", tag="v2")
    config = GitHubActionsConfig(repository="acme/api", workflow="build.yml", ref="main")
    ctx = ProviderContext(state_dir=tmp_path, environ={"GITHUB_TOKEN": TOKEN},
                          http=HttpOptions(transport=httpx.MockTransport(gh.handler)))
    changes = build_ci(config, ctx).changes
    assert changes is not None
    result = await changes.compare("v1", "v2")
    assert [(c.title, c.pr) for c in result.commits] == [("two (#7)", 7)]
