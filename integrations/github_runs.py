"""Reading GitHub's answers: a workflow run's state, the job that failed, the newest tag,
the commits between two versions.

Pure functions over the REST API's JSON (shapes as in GitHub's docs), apart from the
provider's HTTP code so that each stays short and testable on fixtures.
"""

from __future__ import annotations

import re
from typing import Any

from integrations.base import CheckResult, CheckState, Commit, Comparison, RunState

_ENDED = {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled",
          "timed_out": "timed out", "startup_failure": "could not start",
          "action_required": "is waiting for someone to approve it on GitHub"}
_FAILED_JOB = ("failure", "timed_out", "cancelled", "startup_failure")
_CHUNK = re.compile(r"(\d+)")
# How a commit names its pull request: a squash merge's "Title (#123)", a merge commit's
# "Merge pull request #123 from owner/branch".
_SQUASHED_PR = re.compile(r"\(#(\d+)\)\s*$")
_MERGED_PR = re.compile(r"^Merge pull request #(\d+)\b")


def describe_run(run: dict[str, Any]) -> tuple[RunState, str]:
    """The run's state for the engine and a short sentence for the thread.

    Only ``success`` passes: ``neutral``, ``skipped`` or ``stale`` built nothing to deploy.
    """
    what = f"run #{run.get('run_number', '?')} of {run.get('name') or 'the workflow'}"
    status, conclusion = run.get("status"), run.get("conclusion")
    if status != "completed":
        return RunState.RUNNING, f"{what} is {str(status or 'queued').replace('_', ' ')}"
    if conclusion == "success":
        return RunState.SUCCEEDED, f"{what} succeeded"
    ended = _ENDED.get(str(conclusion), f"ended {str(conclusion).replace('_', ' ')}")
    return RunState.FAILED, f"{what} {ended}"


def failed_job_lines(jobs: Any) -> list[str]:
    """One line per job that did not pass, naming the step that failed."""
    found: list[str] = []
    for job in (jobs.get("jobs") or []) if isinstance(jobs, dict) else []:
        conclusion = job.get("conclusion")
        if conclusion not in _FAILED_JOB:
            continue
        line = f"job `{job.get('name')}` " + _ENDED.get(conclusion, "failed")
        steps = [s for s in job.get("steps") or [] if s.get("conclusion") == "failure"]
        if steps:
            line += f" at step `{steps[0].get('name')}`"
        found.append(line)
    return found


def newest_tag(names: list[str]) -> str | None:
    """The highest of ``names`` in version order (v1.10.0 after v1.9.2), None if empty."""
    def key(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(part)) if part.isdigit() else (1, part)
                for part in _CHUNK.split(name) if part]

    return max(names, key=key) if names else None


def pr_number(message: str) -> int | None:
    """The pull request a commit message names ("Fix it (#123)", "Merge pull request #123
    from ..."), or None."""
    title = message.strip().split("\n", 1)[0].strip()
    match = _MERGED_PR.match(title) or _SQUASHED_PR.search(title)
    return int(match.group(1)) if match else None


def comparison(data: dict[str, Any]) -> Comparison:
    """The "Compare two commits" answer as a changelog: each commit's title (the message's
    first line), its author's login (else the name in the commit), the PR it came from."""
    commits: list[Commit] = []
    for item in data.get("commits") or []:
        if not isinstance(item, dict) or not isinstance(item.get("sha"), str):
            continue
        inner = _dict(item.get("commit"))
        message = str(inner.get("message") or "")
        # the GitHub account when the e-mail matches one, else the name in the commit
        author = _dict(item.get("author")).get("login") or \
            _dict(inner.get("author")).get("name") or "unknown"
        url = item.get("html_url")
        commits.append(Commit(sha=item["sha"], title=message.split("\n", 1)[0].strip(),
                              author=str(author), pr=pr_number(message),
                              url=url if isinstance(url, str) else None))
    total = data.get("total_commits")
    url = data.get("html_url")
    return Comparison(commits=commits,
                      total=total if isinstance(total, int) and total >= len(commits)
                      else len(commits),
                      url=url if isinstance(url, str) else None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# What branch protection counts as passed: https://docs.github.com/rest/checks/runs
_CHECK_PASSED = ("success", "neutral", "skipped")


def check_results(check_runs: dict[str, Any], combined: dict[str, Any]) -> list[CheckResult]:
    """Every check run (the newest per name) and commit status of a commit, as results."""
    found: dict[str, tuple[int, CheckResult]] = {}
    for run in check_runs.get("check_runs") or []:
        if not isinstance(run, dict) or not run.get("name"):
            continue
        status, conclusion = run.get("status"), run.get("conclusion")
        if status != "completed":
            state, detail = CheckState.PENDING, str(status or "queued").replace("_", " ")
        elif conclusion in _CHECK_PASSED:
            state, detail = CheckState.PASSED, str(conclusion)
        else:
            state, detail = CheckState.FAILED, str(conclusion or "failed").replace("_", " ")
        url = run.get("html_url") or run.get("details_url")
        run_id = run["id"] if isinstance(run.get("id"), int) else 0
        name = str(run["name"])
        if name not in found or found[name][0] < run_id:  # a re-run: the newest counts
            found[name] = (run_id, CheckResult(name=name, state=state, detail=detail,
                                               url=url if isinstance(url, str) else None))
    for status in combined.get("statuses") or []:  # the latest per context, says GitHub
        if not isinstance(status, dict) or not status.get("context"):
            continue
        said = str(status.get("state") or "pending")
        state = CheckState.PASSED if said == "success" else \
            CheckState.PENDING if said == "pending" else CheckState.FAILED
        url = status.get("target_url")
        name = str(status["context"])
        if name not in found:
            found[name] = (0, CheckResult(name=name, state=state, detail=said,
                                          url=url if isinstance(url, str) else None))
    return [result for _, result in found.values()]


def required_results(results: list[CheckResult], required: list[str] | str, ref: str
                     ) -> list[CheckResult]:
    """The results the gate looks at: the named ones (a missing one is PENDING), or with
    ``all`` every one reported (none at all is PENDING: nothing has checked it yet)."""
    if required == "all":
        return results or [CheckResult(name="any check", state=CheckState.PENDING,
                                       detail=f"none has reported on {ref}")]
    by_name = {r.name: r for r in results}
    return [by_name.get(name) or CheckResult(name=name, state=CheckState.PENDING,
                                             detail="not reported")
            for name in required]
