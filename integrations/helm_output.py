"""What of helm's output may reach the Slack thread and the database.

``helm status -o json`` prints the whole release: the user-supplied values (``config``)
and the rendered manifest, Secret data included (base64, which no redactor recognises),
so a status run's output is never shown: its ``output_tail`` is a one-line summary of the
release (name, revision, info.status, info.description), or helm's ``Error:`` line.
``helm upgrade`` and ``helm rollback`` print no values or manifests (Shipbot never passes
``--debug`` or ``--dry-run``), but the chart's NOTES.txt, printed after ``NOTES:``, may
render values, so their output is kept only up to that line. ``helm history -o json``
(revision, updated, status, chart, app_version, description) is read, never shown.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from integrations.base import RunState, RunStatus

MAX_TAIL_CHARS = 2500
MAX_LOG_BYTES = 4 * 1024 * 1024


def helm_error(output: str) -> str:
    """helm's own last ``Error: ...`` line, the part worth showing."""
    lines = [line.strip() for line in output.splitlines() if line.strip().startswith("Error:")]
    return lines[-1][:300] if lines else ""


def without_notes(status: RunStatus, log: Path, lines: int) -> RunStatus:
    """An upgrade's or rollback's output tail, cut before the chart's NOTES."""
    try:
        with log.open("rb") as fh:
            start = max(0, fh.seek(0, 2) - MAX_LOG_BYTES)
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return status.model_copy(update={"output_tail": ""})
    kept = text.splitlines()[1 if start else 0:]  # the first one may be cut
    if "NOTES:" in (line.strip() for line in kept):
        kept = kept[: [line.strip() for line in kept].index("NOTES:")]
    tail = "\n".join(kept[-lines:]) if lines > 0 else ""
    if len(tail) > MAX_TAIL_CHARS:
        tail = "…" + tail[-MAX_TAIL_CHARS + 1:]
    return status.model_copy(update={"output_tail": tail})


def release_health(status: RunStatus, release: str, log: Path) -> RunStatus:
    """``helm status -o json`` printed the release: healthy when its status is deployed.
    The output kept is the summary, never the JSON (values and manifest)."""
    if status.state is not RunState.SUCCEEDED:  # running, or helm said Error: ...
        return status.model_copy(update={"output_tail": helm_error(status.output_tail)})
    data: Any = {}
    with contextlib.suppress(OSError, ValueError):  # helm's warnings may come around it
        text = log.read_text(errors="replace")
        data = json.loads(text[text.find("{"): text.rfind("}") + 1])
    data = data if isinstance(data, dict) else {}
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    state = str(info.get("status") or "unknown")
    said = str(info.get("description") or "")[:200]
    revision = data.get("version")
    summary = f"release {release}" + (f", revision {revision}" if isinstance(
        revision, int) else "") + f": {state}" + (f" ({said})" if said else "")
    if state == "deployed":
        return status.model_copy(update={"detail": f"release {release} is deployed",
                                         "output_tail": summary})
    return status.model_copy(update={
        "state": RunState.FAILED, "output_tail": summary,
        "detail": f"release {release} is {state}, not deployed" + (f": {said}" if said else "")})
