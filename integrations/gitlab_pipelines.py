"""Reading GitLab's answers: a pipeline's state, the jobs that failed, a comparison's
commits, the newest tag, an error's message.

Pure functions over the REST API's JSON (shapes as in GitLab's API docs), apart from the
provider's HTTP code so that each stays short and testable on fixtures.
"""

from __future__ import annotations

import json
import re
from typing import Any

from integrations.base import Commit, Comparison, RunState

_RUNNING = {"created": "is created", "waiting_for_resource": "is waiting for a resource",
            "preparing": "is preparing", "pending": "is pending (waiting for a runner)",
            "running": "is running", "scheduled": "is scheduled",
            "manual": "is waiting for someone to run its manual job on GitLab"}
_ENDED = {"failed": "failed", "canceled": "was cancelled", "canceling": "is being cancelled",
          "skipped": "was skipped (no job ran: check the rules in .gitlab-ci.yml)"}
# "See merge request group/project!123", as GitLab writes it in a merge commit's message.
_MERGE_REQUEST = re.compile(r"See merge request [\w.\-/]*!(\d+)")
_CHUNK = re.compile(r"(\d+)")
MAX_COMMITS = 20


def describe_pipeline(pipeline: dict[str, Any]) -> tuple[RunState, str]:
    """The pipeline's state for the engine and a short sentence for the thread.

    Only ``success`` passes: ``skipped`` or ``canceled`` built nothing to deploy; a
    ``manual`` pipeline keeps running until someone plays its job (or the step times out).
    """
    what = f"pipeline #{pipeline.get('id', '?')}"
    status = str(pipeline.get("status") or "created")
    if status == "success":
        return RunState.SUCCEEDED, f"{what} succeeded"
    if status in _RUNNING:
        return RunState.RUNNING, f"{what} {_RUNNING[status]}"
    if status == "canceling":  # on its way to canceled
        return RunState.RUNNING, f"{what} {_ENDED[status]}"
    return RunState.FAILED, f"{what} {_ENDED.get(status, 'ended ' + status.replace('_', ' '))}"


def failed_job_lines(jobs: Any) -> list[str]:
    """One line per job that failed and was not allowed to, naming its stage and why."""
    found: list[str] = []
    failed = [job for job in (jobs if isinstance(jobs, list) else [])
              if isinstance(job, dict) and job.get("status") == "failed"
              and not job.get("allow_failure")]
    failed.sort(key=lambda job: int(job["id"]) if isinstance(job.get("id"), int) else 0)
    for job in failed:  # the earliest first (GitLab lists the newest first)
        line = f"job `{job.get('name')}` failed in stage `{job.get('stage')}`"
        reason = job.get("failure_reason")
        if isinstance(reason, str) and reason:
            line += f" ({reason.replace('_', ' ')})"
        found.append(line)
    return found


def merge_request(commit: dict[str, Any]) -> int | None:
    """The merge request a commit names ("See merge request group/project!123", which
    GitLab writes in merge commits), from its message or else its title."""
    for text in (commit.get("message"), commit.get("title")):
        if isinstance(text, str):
            match = _MERGE_REQUEST.search(text)
            if match:
                return int(match.group(1))
    return None


def comparison(data: dict[str, Any], *, base: str, head: str,
               project_url: str | None) -> Comparison:
    """The compare API's answer as a changelog: at most ``MAX_COMMITS`` commits, oldest
    first, and how many there are in all."""
    raw = [c for c in data.get("commits") or [] if isinstance(c, dict)]
    newest = data.get("commit")
    if len(raw) > 1 and isinstance(newest, dict) and raw[0].get("id") == newest.get("id"):
        raw.reverse()  # newest first: turned around
    commits = [_commit(c, project_url) for c in raw[:MAX_COMMITS]]
    url = data.get("web_url")
    if not isinstance(url, str) or not url:
        url = f"{project_url}/-/compare/{base}...{head}" if project_url else None
    return Comparison(commits=commits, total=len(raw), url=url)


def _commit(data: dict[str, Any], project_url: str | None) -> Commit:
    sha = str(data.get("id") or "")
    short = str(data.get("short_id") or sha[:8])
    url = data.get("web_url")
    if not isinstance(url, str) or not url:
        url = f"{project_url}/-/commit/{sha}" if project_url and sha else None
    return Commit(sha=short, title=str(data.get("title") or "").strip(),
                  author=str(data.get("author_name") or "unknown"),
                  pr=merge_request(data), url=url)


def newest_tag(names: list[str]) -> str | None:
    """The highest of ``names`` in version order (v1.10.0 after v1.9.2), None if empty."""
    def key(name: str) -> list[tuple[int, int | str]]:
        return [(0, int(part)) if part.isdigit() else (1, part)
                for part in _CHUNK.split(name) if part]

    return max(names, key=key) if names else None


def gitlab_message(body: Any) -> str:
    """GitLab's explanation in an error body: ``message`` (a string, or a hash of field
    errors such as ``{"base": ["Reference not found"]}``) or ``error``."""
    if not isinstance(body, dict):
        return ""
    parts: list[str] = []
    for key in ("message", "error", "error_description"):
        value = body.get(key)
        if isinstance(value, str) and value:
            parts.append(value)
        elif isinstance(value, dict):
            for field, errors in value.items():
                said = "; ".join(map(str, errors)) if isinstance(errors, list) \
                    else str(errors)
                parts.append(said if field == "base" else f"{field} {said}")
        elif isinstance(value, list):
            parts.extend(str(v) for v in value)
        elif value is not None:
            parts.append(json.dumps(value))
    return "; ".join(parts)
