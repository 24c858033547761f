"""Supervisor for one ``command`` provider run: ``python -m integrations.command_wrapper RUNDIR``.

It lives outside the bot so that a bot restart neither kills the step nor loses its
outcome: everything it knows goes into RUNDIR (``pid``, ``child.pid``, ``output.log``,
``result.json``), where any later bot process can read it. Standard library only, so
it starts fast and cannot be broken by the bot's dependencies.

The process started by the bot forks once and exits: the supervisor is then nobody's
asyncio child, so the bot's event loop (which kills still-running children when their
transport is closed at shutdown) cannot take it down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KILL_GRACE_SECONDS = 5.0  # between SIGTERM and SIGKILL when stopping the program
TICK_SECONDS = 0.1  # how often the cancel marker and the deadline are checked

_stop_signal: int | None = None


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Readers only ever see a whole file: write a temporary file, then rename it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def process_fingerprint(pid: int) -> str | None:
    """None if ``pid`` is dead (or a zombie), else its kernel start time ("" without /proc).

    Stored next to a pid, it tells our process from an unrelated one that reuses the
    pid later, e.g. after a reboot, so we never report or kill the wrong process.
    """
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):  # another user's process is not ours
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return None if fields[0] in ("Z", "X") else fields[19]


def write_pid(path: Path, pid: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{pid} {process_fingerprint(pid) or ''}\n")
    os.replace(tmp, path)


def read_pid(path: Path) -> tuple[int, str] | None:
    try:
        pid, _, fingerprint = path.read_text().strip().partition(" ")
        return int(pid), fingerprint
    except (OSError, ValueError):
        return None


def is_alive(record: tuple[int, str] | None) -> bool:
    """Whether the process recorded by ``write_pid`` is still the one running."""
    if record is None:
        return False
    current = process_fingerprint(record[0])
    return current is not None and (not current or not record[1] or current == record[1])


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the program's process group, SIGKILL whatever is left after the grace."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(KILL_GRACE_SECONDS)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:  # also reaps helpers the program left behind in its group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _program_env() -> dict[str, str]:
    """The bot already chose the environment; only coverage's settings (given to the
    supervisor when the bot runs under coverage) are not the program's business."""
    return {n: v for n, v in os.environ.items() if not n.startswith("COVERAGE_")}


def _on_signal(signum: int, _frame: object) -> None:
    global _stop_signal
    _stop_signal = signum


def supervise(rundir: Path) -> dict[str, Any]:
    """Run the program described by spec.json; return the result to record."""
    spec = json.loads((rundir / "spec.json").read_text())
    argv: list[str] = spec["argv"]
    workdir: str | None = spec.get("workdir")
    cancel_marker = rundir / "cancel"
    result: dict[str, Any] = {"exit_code": None, "timed_out": False, "error": None}
    if cancel_marker.exists():
        return {**result, "error": "cancelled"}
    with open(rundir / "output.log", "ab") as log:
        try:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=workdir, start_new_session=True, env=_program_env(),
            )
        except FileNotFoundError as exc:
            if workdir and exc.filename == workdir:
                return {**result, "error": f"working directory not found: {workdir}"}
            return {**result, "error": f"command not found: {argv[0]}"}
        except PermissionError:
            return {**result, "error": f"command not executable: {argv[0]}"}
        except OSError as exc:
            return {**result, "error": f"could not start {argv[0]}: {exc.strerror}"}
    write_pid(rundir / "child.pid", proc.pid)
    deadline = time.monotonic() + float(spec["timeout_seconds"])
    while True:
        try:
            code = proc.wait(TICK_SECONDS)
            break
        except subprocess.TimeoutExpired:
            pass
        if _stop_signal is not None or cancel_marker.exists():
            _stop_group(proc)
            code = proc.returncode
            break
        if time.monotonic() >= deadline:
            _stop_group(proc)
            return {**result, "exit_code": proc.returncode, "timed_out": True}
    result["exit_code"] = code
    if code != 0 and cancel_marker.exists():
        result["error"] = "cancelled"
    elif code != 0 and _stop_signal is not None:
        result["error"] = f"the runner was stopped by {signal.Signals(_stop_signal).name}"
    return result


def main(args: list[str] | None = None) -> int:
    args = sys.argv[1:] if args is None else args
    if len(args) != 1:
        print("usage: python -m integrations.command_wrapper RUNDIR", file=sys.stderr)
        return 2
    rundir = Path(args[0])
    child = os.fork()
    if child:  # the launcher: record the supervisor and get out of the bot's way
        write_pid(rundir / "pid", child)
        return 0
    return supervisor_main(rundir)


def supervisor_main(rundir: Path) -> int:
    """The forked supervisor: run the program, always record a result. (A function of its
    own: a tracer restarted in the child, such as coverage's, sees new frames only.)"""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _on_signal)
    try:
        result = supervise(rundir)
    except Exception as exc:  # a result must always be written
        result = {"exit_code": None, "timed_out": False, "error": f"runner error: {exc}"}
    write_json_atomic(rundir / "result.json", {**result, "finished_at": now_iso()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
