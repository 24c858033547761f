"""The ``command`` provider: runs a local program as a CI build or as a deploy step.

Every run gets a directory ``state_dir/<run_id>`` whose name is derived from the
engine's idempotency key; creating it is the claim that the run was started, so a
repeated ``start`` (e.g. after a bot restart) finds it instead of running the step a
second time. The program is supervised by ``integrations.command_wrapper``, a detached
process that records pid, output and result in that directory, so that any bot
process, including one started after a crash, can poll or cancel the run.

Runs live on this machine's disk only. With several replicas, the engine leaves a
deployment to the replica that started its run (``bot.engine.replicas``); if that
replica dies, another one calls ``start`` again with the same key, finds no run
directory on its own disk and so **runs the command again**: it cannot observe or
adopt a process on another machine. Build and deploy commands must be safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.command_templates import CommandConfig, render, run_id_for
from integrations.command_wrapper import is_alive, now_iso, read_pid

__all__ = ["RUNNER_LOST", "CommandConfig", "CommandProvider", "provider_env", "render",
           "run_id_for"]

_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# The directory holding the ``integrations`` package: ``-m`` finds the wrapper from
# there whether or not the package is installed, whatever the bot's cwd is.
_IMPORT_ROOT = str(Path(__file__).resolve().parent.parent)
_MAX_TAIL_CHARS = 2500
BASE_ENV = ("PATH", "HOME", "LANG", "TZ")  # with LC_*: every program's environment
RUNNER_LOST = "the runner stopped without reporting a result (was the machine restarted?)"


class CommandProvider:
    """Implements ``CIProvider`` and every deploy capability (``FullTarget``) on top of
    local programs; its config says which of them a service has (``capabilities()``)."""

    LAUNCH_GRACE_SECONDS = 30.0  # a run dir without a runner pid may still be launching
    WEDGE_GRACE_SECONDS = 30.0  # after the timeout, how long the runner gets to report
    LATEST_VERSION_TIMEOUT_SECONDS = 30.0

    def __init__(self, config: CommandConfig, state_dir: Path, *, python: str = sys.executable):
        self._config = config
        self._state_dir = Path(state_dir).absolute()
        self._python = python

    def _env(self) -> dict[str, str]:
        return provider_env(self._config, os.environ)

    def run_dir(self, run_id: str) -> Path:
        """The run's directory; IntegrationError for ids we never handed out."""
        path = self._state_dir / run_id
        if not _RUN_ID.fullmatch(run_id) or not path.is_dir():
            raise IntegrationError(f"unknown command run: {run_id!r}")
        return path

    async def rollback(self, job: JobSpec) -> str:
        """The target's native undo (``rollback_argv``), supervised like any other run."""
        return await self.start(job, argv=self._argv("rollback_argv", "roll back natively"))

    async def set_weight(self, job: JobSpec, weight: int) -> str:
        """Send ``weight`` percent of traffic to ``job.version``; a run to ``poll``."""
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 100:
            raise IntegrationError(f"traffic weight must be a whole number 0-100, not {weight!r}")
        argv = self._argv("set_weight_argv", "shift traffic")
        return await self.start(job, argv=argv, extra={"weight": str(weight)})

    async def promote(self, job: JobSpec) -> str:
        return await self.start(job, argv=self._argv("promote_argv", "promote a new version"))

    async def abort(self, job: JobSpec) -> str:
        return await self.start(job, argv=self._argv("abort_argv", "abort a rollout"))

    async def health(self, job: JobSpec) -> str:
        """A run of ``health_argv``: exit code 0 means healthy."""
        return await self.start(job, argv=self._argv("health_argv", "check health"))

    def _argv(self, setting: str, purpose: str) -> list[str]:
        argv: list[str] | None = getattr(self._config, setting)
        if argv is None:
            raise IntegrationError(f"this deploy target cannot {purpose}: it has no "
                                   f"{setting} configured")
        return argv

    async def start(self, job: JobSpec, argv: list[str] | None = None,
                    extra: dict[str, str] | None = None) -> str:
        """Start ``argv`` (default: the deploy) once per ``job.key``; return the run id."""
        run_id = run_id_for(job.key)
        rundir = self._state_dir / run_id
        values = {"service": job.service, "env": job.env, "version": job.version,
                  "artifact": job.artifact or job.version, **(extra or {})}
        spec = {
            "argv": [render(arg, values) for arg in argv or self._config.argv],
            "env_names": sorted(self._config.env),  # never the values: they can be secrets
            "timeout_seconds": self._config.timeout_seconds,
            "workdir": self._config.workdir or os.getcwd(),
            "started_at": now_iso(),
        }
        try:
            await asyncio.to_thread(self._claim, rundir, spec)
        except FileExistsError:
            return run_id  # started before, maybe by a previous bot process
        try:
            launcher = await asyncio.create_subprocess_exec(
                self._python, "-m", "integrations.command_wrapper", str(rundir),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True,
                env={**self._env(), **_coverage_env(os.environ), **_job_env(job, rundir)},
                cwd=_IMPORT_ROOT,
            )
            # Returns as soon as the launcher has forked off the supervisor: milliseconds.
            code = await launcher.wait()
        except OSError as exc:
            code, why = None, exc.strerror
        else:
            why = f"exit code {code}"
        if code != 0:
            error = f"could not launch the command runner ({why})"
            await asyncio.to_thread(_publish_result, rundir, {"error": error})
        return run_id

    def _claim(self, rundir: Path, spec: dict[str, Any]) -> None:
        """mkdir is atomic: exactly one caller gets to start the run for a key."""
        self._state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        rundir.mkdir(mode=0o700)  # raises FileExistsError if already started
        tmp = rundir / ".spec.json.tmp"
        tmp.write_text(json.dumps(spec, indent=2))
        os.replace(tmp, rundir / "spec.json")

    async def poll(self, run_id: str) -> RunStatus:
        rundir = self.run_dir(run_id)
        return await asyncio.to_thread(self._poll_sync, rundir)

    def _poll_sync(self, rundir: Path) -> RunStatus:
        spec = _read_json(rundir / "spec.json") or {}
        result = _read_json(rundir / "result.json") or self._check_runner(rundir, spec)
        tail = _output_tail(rundir / "output.log", self._config.output_lines)
        if result is None:
            return RunStatus(state=RunState.RUNNING, output_tail=tail, detail="is running")
        code, error = result.get("exit_code"), result.get("error")
        state = RunState.FAILED
        if error:
            detail = "was cancelled" if error == "cancelled" else str(error)
        elif result.get("timed_out"):
            timeout = spec.get("timeout_seconds", self._config.timeout_seconds)
            detail = f"timed out after {timeout:g} s and was stopped"
        elif code is None:
            detail = "finished without an exit code"
        elif code < 0:
            detail = f"was killed by signal {-code}"
            with contextlib.suppress(ValueError):
                detail = f"was killed by {signal.Signals(-code).name}"
        else:
            detail = f"exited with code {code}"
            state = RunState.SUCCEEDED if code == 0 else RunState.FAILED
        outputs = _outputs(rundir / OUTPUTS) if state is RunState.SUCCEEDED else {}
        return RunStatus(state=state, exit_code=code, output_tail=tail, detail=detail,
                         artifact=outputs.get("artifact"), commit=outputs.get("commit"))

    def _check_runner(self, rundir: Path, spec: dict[str, Any]) -> dict[str, Any] | None:
        """No result yet: None while the runner is healthy, else the result to record."""
        started = _parse_time(spec.get("started_at")) or rundir.stat().st_mtime
        runner = read_pid(rundir / "pid")
        overdue = started + float(spec.get("timeout_seconds", self._config.timeout_seconds))
        if runner is not None and is_alive(runner):
            if time.time() < overdue + self.WEDGE_GRACE_SECONDS:
                return None
            # The runner should have stopped the program long ago: it is wedged.
            with contextlib.suppress(ProcessLookupError):
                os.kill(runner[0], signal.SIGKILL)
            _kill_program(rundir, signal.SIGKILL)
            return _publish_result(rundir, {"timed_out": True})
        if runner is None and time.time() < started + self.LAUNCH_GRACE_SECONDS:
            return None  # still being launched (start() is between mkdir and fork)
        # The runner is gone: it may have written its result just before exiting.
        result = _read_json(rundir / "result.json")
        if result is not None:
            return result
        _kill_program(rundir, signal.SIGKILL)  # nobody supervises it any more
        return _publish_result(rundir, {"error": RUNNER_LOST})

    async def cancel(self, run_id: str) -> None:
        rundir = self.run_dir(run_id)
        await asyncio.to_thread(self._cancel_sync, rundir)

    def _cancel_sync(self, rundir: Path) -> None:
        """Mark the run cancelled and stop the program; the runner records the result."""
        if (rundir / "result.json").exists():
            return
        (rundir / "cancel").touch()  # the runner also checks this, e.g. before spawning
        _kill_program(rundir, signal.SIGTERM)
        if not is_alive(read_pid(rundir / "pid")):  # nobody left to record the outcome
            _kill_program(rundir, signal.SIGKILL)
            _publish_result(rundir, {"error": "cancelled"})

    async def latest_version(self, service: str) -> str | None:
        if self._config.latest_version_argv is None:
            return None
        argv = [render(arg, {"service": service}) for arg in self._config.latest_version_argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=self._env(), cwd=self._config.workdir,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            missing = exc.filename if exc.filename == self._config.workdir else argv[0]
            raise IntegrationError(f"latest-version command: {missing} not found") from exc
        except OSError as exc:
            raise IntegrationError(f"latest-version command: {argv[0]}: {exc.strerror}") from exc
        timeout = self.LATEST_VERSION_TIMEOUT_SECONDS
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            msg = f"latest-version command timed out after {timeout:g} s"
            raise IntegrationError(msg) from None
        if proc.returncode != 0:
            last = _last_line(err.decode(errors="replace"))[:200]
            raise IntegrationError(
                f"latest-version command exited with code {proc.returncode}"
                + (f": {last}" if last else "")
            )
        return _last_line(out.decode(errors="replace")) or None


def provider_env(config: CommandConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """The program's whole environment: what any program needs to run (``PATH``, ``HOME``,
    locale, ``TZ``), the variables the config passes by name, then its ``env:``. Nothing
    else, so a build that prints its environment cannot show the bot's tokens. The
    supervisor (``python -m integrations.command_wrapper``, standard library only, found
    through its cwd) needs no more than that either."""
    names = [n for n in environ if n in BASE_ENV or n.startswith("LC_")]
    names += [n for n in (*config.pass_env, *config.secret_env) if n in environ]
    return {**{n: environ[n] for n in names}, **config.env}


OUTPUTS = "outputs"  # the program's $SHIPBOT_OUTPUT, in its run directory
_OUTPUT_LIMITS = {"artifact": 500, "commit": 64}


def _job_env(job: JobSpec, rundir: Path) -> dict[str, str]:
    """What the program is told besides its argv: where to report its product (like
    GitHub's $GITHUB_OUTPUT) and, for a deploy, the artifact to put on the environment."""
    env = {"SHIPBOT_OUTPUT": str(rundir / OUTPUTS)}
    if job.artifact:
        env["SHIPBOT_ARTIFACT"] = job.artifact
    return env


def _outputs(path: Path) -> dict[str, str]:
    """`key=value` lines a build wrote to $SHIPBOT_OUTPUT; only the keys Shipbot records,
    bounded, one printable word each (an image reference, a SHA); the last one wins."""
    found: dict[str, str] = {}
    try:
        text = path.read_text(errors="replace")[:20_000]
    except OSError:
        return found
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        printable = value.isprintable() and " " not in value and "`" not in value
        if sep and key in _OUTPUT_LIMITS and printable and 0 < len(value) <= _OUTPUT_LIMITS[key]:
            found[key] = value
    return found


def _coverage_env(environ: Mapping[str, str]) -> dict[str, str]:
    """When the bot itself is measured (``./dev test``), the supervisor is too: it gets
    coverage's settings; the wrapper leaves them out of the program's environment."""
    return {n: v for n, v in environ.items() if n.startswith("COVERAGE_")}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _parse_time(value: Any) -> float | None:
    try:
        return datetime.fromisoformat(value).timestamp()
    except (TypeError, ValueError):
        return None


def _publish_result(rundir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    """Record a result the runner could not, without overwriting one it did write."""
    result = {"exit_code": None, "timed_out": False, "error": None, **fields,
              "finished_at": now_iso()}
    tmp = rundir / f".result.json.{secrets.token_hex(8)}.tmp"  # concurrent polls
    tmp.write_text(json.dumps(result, indent=2))
    try:
        os.link(tmp, rundir / "result.json")  # atomic create-if-absent
    except FileExistsError:
        result = _read_json(rundir / "result.json") or result
    finally:
        tmp.unlink()
    return result


def _kill_program(rundir: Path, signum: int) -> None:
    """Signal the program's process group, if it is still the process we started."""
    child = read_pid(rundir / "child.pid")
    if child is not None and is_alive(child):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child[0], signum)


def _output_tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines (at most ~2500 chars) of the output, for the Slack thread."""
    if lines <= 0:
        return ""
    try:
        with path.open("rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - 64 * 1024)
            fh.seek(start)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    all_lines = text.splitlines()[1 if start else 0 :]  # the first one may be cut
    tail = "\n".join(all_lines[-lines:])
    return tail if len(tail) <= _MAX_TAIL_CHARS else "…" + tail[-_MAX_TAIL_CHARS + 1 :]
