"""Reading GitHub's answers: a workflow run's state, the job that failed, the newest tag.

Pure functions over the REST API's JSON (shapes as in GitHub's docs), apart from the
provider's HTTP code so that each stays short and testable on fixtures.
"""

from __future__ import annotations

import re
from typing import Any

from integrations.base import RunState

_ENDED = {"success": "succeeded", "failure": "failed", "cancelled": "was cancelled",
          "timed_out": "timed out", "startup_failure": "could not start",
          "action_required": "is waiting for someone to approve it on GitHub"}
_FAILED_JOB = ("failure", "timed_out", "cancelled", "startup_failure")
_CHUNK = re.compile(r"(\d+)")


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
