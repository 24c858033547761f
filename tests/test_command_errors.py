"""The command provider's error paths, as the thread words them ("Build failed: <detail>").

Real processes, no mocks: a working directory that is gone, a program that is not
executable or dies by a signal, a supervisor stopped by SIGTERM, and run files that a
crash left corrupt or missing.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from integrations.base import RunState
from integrations.command import RUNNER_LOST, CommandConfig, CommandProvider
from integrations.command_wrapper import is_alive, process_fingerprint, read_pid
from tests.test_command_provider import PY, finish, job, make, program, program_pid, wait_for

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

__all__ = ["program"]  # the fixture, imported for the tests below


async def test_a_working_directory_that_is_gone(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, workdir=str(tmp_path / "checkout"))
    status = await finish(provider, await provider.start(job()))
    assert (status.state, status.detail) == (
        RunState.FAILED, f"working directory not found: {tmp_path / 'checkout'}")


async def test_a_program_that_is_not_executable(tmp_path: Path, program: Path) -> None:
    provider = CommandProvider(CommandConfig(argv=[str(program)]), tmp_path / "state")
    status = await finish(provider, await provider.start(job()))
    assert (status.state, status.detail) == (
        RunState.FAILED, f"command not executable: {program}")


async def test_a_program_killed_by_a_signal_without_a_name(tmp_path: Path) -> None:
    """Real-time signals have numbers, not names: the thread says the number."""
    rt = signal.SIGRTMIN + 6
    kill_self = f"import os; os.kill(os.getpid(), {int(rt)})"
    provider = CommandProvider(CommandConfig(argv=[PY, "-c", kill_self]), tmp_path / "state")
    status = await finish(provider, await provider.start(job()))
    assert (status.state, status.exit_code) == (RunState.FAILED, -rt)
    assert status.detail == f"was killed by signal {int(rt)}"


async def test_a_supervisor_stopped_by_sigterm_stops_the_program_and_says_so(
        tmp_path: Path, program: Path) -> None:
    """The machine shuts down (SIGTERM to every process): the supervisor stops the program
    and records why, so the deployment fails with a reason instead of hanging."""
    provider = make(tmp_path, program, env={"SLEEP": "30"})
    run_id = await provider.start(job())
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    runner = read_pid(tmp_path / "state" / run_id / "pid")
    assert runner is not None
    os.kill(runner[0], signal.SIGTERM)
    status = await finish(provider, run_id)
    assert (status.state, status.detail) == (RunState.FAILED,
                                             "the runner was stopped by SIGTERM")
    assert process_fingerprint(program_pid(tmp_path)) is None


async def test_a_result_file_that_is_not_an_object_counts_as_missing(
        tmp_path: Path, program: Path) -> None:
    """A result.json a crash left as some other JSON value, its runner gone: the run was
    lost, and the corrupt file is not read as a success."""
    provider = make(tmp_path, program)
    run_id = await provider.start(job())
    rundir = tmp_path / "state" / run_id
    assert (await finish(provider, run_id)).state is RunState.SUCCEEDED
    await wait_for(lambda: not is_alive(read_pid(rundir / "pid")))  # the runner has exited
    (rundir / "result.json").write_text("[0]")
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED, RUNNER_LOST)


async def test_a_corrupt_pid_file_is_a_lost_runner_once_the_launch_grace_is_over(
        tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"})
    provider.LAUNCH_GRACE_SECONDS = 0.5
    run_id = await provider.start(job())
    rundir = tmp_path / "state" / run_id
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    runner = read_pid(rundir / "pid")
    assert runner is not None
    os.kill(runner[0], signal.SIGKILL)  # a crash: no result, and a torn pid file
    (rundir / "pid").write_text("not a pid")
    (rundir / "spec.json").write_text("{")
    status = await finish(provider, run_id)
    assert (status.state, status.detail) == (RunState.FAILED, RUNNER_LOST)
    await wait_for(lambda: process_fingerprint(program_pid(tmp_path)) is None)


async def test_a_result_with_no_exit_code(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program)
    run_id = await provider.start(job())
    await finish(provider, run_id)
    result = tmp_path / "state" / run_id / "result.json"
    result.write_text(json.dumps({"exit_code": None, "timed_out": False, "error": None}))
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "finished without an exit code")


async def test_cancel_after_the_runner_died_records_the_cancel(
        tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"})
    run_id = await provider.start(job())
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    runner = read_pid(tmp_path / "state" / run_id / "pid")
    assert runner is not None
    os.kill(runner[0], signal.SIGKILL)
    await wait_for(lambda: process_fingerprint(runner[0]) is None)
    await provider.cancel(run_id)
    status = await provider.poll(run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "was cancelled")
    await wait_for(lambda: process_fingerprint(program_pid(tmp_path)) is None)


async def test_a_python_that_cannot_be_launched_is_reported(
        tmp_path: Path, program: Path) -> None:
    config = CommandConfig(argv=[PY, str(program)])
    provider = CommandProvider(config, tmp_path / "state", python=str(tmp_path / "no-python"))
    status = await provider.poll(await provider.start(job()))
    assert (status.state, status.detail) == (
        RunState.FAILED, "could not launch the command runner (No such file or directory)")


async def test_no_output_lines_wanted_and_an_unreadable_log(
        tmp_path: Path, program: Path) -> None:
    quiet = make(tmp_path, program, output_lines=0)
    status = await finish(quiet, await quiet.start(job()))
    assert (status.state, status.output_tail) == (RunState.SUCCEEDED, "")
    loud = make(tmp_path, program)
    run_id = await loud.start(job("deploy-2"))
    await finish(loud, run_id)
    log = tmp_path / "state" / run_id / "output.log"
    log.unlink()
    log.mkdir()  # reading it fails: no tail, no crash
    assert (await loud.poll(run_id)).output_tail == ""
