"""Processes a test started through the command provider, found and stopped after it.

A deploy or build step runs under a supervisor that outlives the bot on purpose (a bot
restart must not kill a deploy). In a test that is a leak: a 30 s build left running
keeps loading the machine after its test has passed. ``make_bot`` cancels the runs a
test left going, as ``/deploy cancel`` would, then checks that no process mentioning the
test's directory (in its command line or environment: the supervisor's run directory,
the step's STEP_LOG / STEP_MARK) is left; one that is gets killed and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from integrations.command import _kill_program


def processes_mentioning(marker: str) -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line or environment contains ``marker``."""
    found, needle = [], marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if needle in cmdline or needle in environ:
            found.append((int(entry.name), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def cancel_runs(state_dir: Path) -> int:
    """Cancel every run under ``state_dir`` that has no result yet; return how many."""
    cancelled = 0
    for spec in state_dir.glob("**/spec.json"):
        rundir = spec.parent
        if (rundir / "result.json").exists():
            continue
        (rundir / "cancel").touch()  # the supervisor stops the program and records it
        _kill_program(rundir, signal.SIGTERM)
        cancelled += 1
    return cancelled


def leftovers(marker: str, timeout: float = 10.0) -> list[tuple[int, str]]:
    """Wait up to ``timeout`` for the processes mentioning ``marker`` to end; SIGKILL and
    return those that did not (an empty list: nothing leaked)."""
    deadline = time.monotonic() + timeout
    while (alive := processes_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid, _ in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return alive
