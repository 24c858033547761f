"""The ``helm`` deploy target: ``helm upgrade --install`` of a release, ``helm rollback``
to the revision that ran the earlier version, ``helm status`` as the health check.

Each run is a ``helm`` argv handed to the command provider's supervisor
(``integrations.command``): a detached process with a run directory named after the
engine's idempotency key, so a bot restart neither loses a helm run nor starts it twice,
and cancel stops helm (``--atomic`` makes helm undo a half-done upgrade itself). helm
gets PATH, HOME, locale, TZ, KUBECONFIG (``kubeconfig:``) and the variables the config
names, never the bot's own tokens.

Rollbacks find their revision in ``helm history -o json`` (fields revision, updated,
status, chart, app_version, description: https://helm.sh/docs/helm/helm_history/).
Each upgrade records ``version=<version>`` in the revision's description
(``--description``), so the revision that ran a version is known even when the chart's
app_version does not follow the image tag; ``Rollback to N`` revisions inherit N's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from pathlib import Path
from typing import Any

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.command import CommandConfig, CommandProvider, provider_env
from integrations.command_templates import render, run_id_for
from integrations.helm_config import HelmConfig
from integrations.helm_output import helm_error, release_health, without_notes

HELM_GRACE_SECONDS = 120.0  # after helm's --timeout: time for --atomic to undo the upgrade
HISTORY_TIMEOUT_SECONDS = 60.0
GOOD_STATUSES = ("deployed", "superseded")  # a revision that once ran successfully
_VERSION_MARK = re.compile(r"(?:^|\s)version=(\S+)")
_ROLLED_BACK = re.compile(r"Rollback to (\d+)")
_HELM_UNSAFE = re.compile(r"[,\\{}\s]")  # what --set-string would split or we would render


class HelmProvider:
    """A ``DeployTarget`` with rollback and health (``HelmConfig.capabilities()``)."""

    def __init__(self, config: HelmConfig, state_dir: Path) -> None:
        self._config = config
        self._command = command_config(config)
        self._state_dir = Path(state_dir).absolute()
        self._runner = CommandProvider(self._command, self._state_dir)

    async def start(self, job: JobSpec) -> str:
        """``helm upgrade --install`` once per ``job.key``; the run id to poll."""
        return await self._runner.start(job, argv=self.upgrade_argv(job))

    def upgrade_argv(self, job: JobSpec) -> list[str]:
        """The upgrade as a template the runner fills ({service} {env} {version} {artifact})."""
        c = self._config
        argv = [c.binary, "upgrade", "--install", c.release, c.chart]
        if c.chart_version:
            argv += ["--version", c.chart_version]
        argv += self._target_flags()
        if c.create_namespace:
            argv.append("--create-namespace")
        for name in c.values_files:
            argv += ["-f", name]
        argv += ["--set-string", f"{c.set_path}={{version}}"]
        if c.set_artifact_path and job.artifact:
            if _HELM_UNSAFE.search(job.artifact):
                raise IntegrationError(
                    "the build's artifact has a character helm --set-string would split on "
                    "(comma, backslash, brace or space); it was not deployed: check what the "
                    "build reports as its artifact")
            argv += ["--set-string", f"{c.set_artifact_path}={{artifact}}"]
        argv += ["--description", "Shipbot deploy of {service} to {env}: version={version}",
                 *self._wait_flags(), "--atomic"]
        return argv

    def _target_flags(self) -> list[str]:
        c, flags = self._config, []
        if c.namespace:
            flags += ["--namespace", c.namespace]
        if c.kube_context:
            flags += ["--kube-context", c.kube_context]
        return flags

    def _wait_flags(self) -> list[str]:
        return ["--wait", "--timeout", f"{self._config.timeout_seconds:g}s"]

    async def rollback(self, job: JobSpec) -> str:
        """``helm rollback`` to the newest good revision that ran ``job.version``."""
        run_id = run_id_for(job.key)
        if (self._state_dir / run_id).is_dir():
            return run_id  # started before: the history has changed since, don't look again
        where = {"service": job.service, "env": job.env}
        release = render(self._config.release, where)
        flags = [render(flag, where) for flag in self._target_flags()]
        history = await self._history(release, flags)
        revision = revision_for(history, job.version)
        if revision is None:
            raise IntegrationError(
                f"helm history of release {release} has no revision that ran "
                f"{job.version} successfully (deployed or superseded), so there is nothing "
                "to roll back to: deploy that version instead")
        argv = [self._config.binary, "rollback", self._config.release, str(revision),
                *self._target_flags(), *self._wait_flags()]
        return await self._runner.start(job, argv=argv)

    async def health(self, job: JobSpec) -> str:
        """A ``helm status`` run; ``poll`` says healthy when the release is deployed."""
        argv = [self._config.binary, "status", self._config.release, *self._target_flags(),
                "-o", "json"]
        return await self._runner.start(job, argv=argv)

    async def cancel(self, run_id: str) -> None:
        await self._runner.cancel(run_id)

    async def poll(self, run_id: str) -> RunStatus:
        status = await self._runner.poll(run_id)
        spec = await asyncio.to_thread(_read_spec, self._runner.run_dir(run_id))
        argv = [str(a) for a in spec.get("argv", [])]
        verb = argv[1] if len(argv) > 1 else "helm"
        at = 3 if verb == "upgrade" else 2
        release = argv[at] if len(argv) > at else "the release"
        log, helm_failed = self._runner.run_dir(run_id) / "output.log", \
            status.state is RunState.FAILED
        if verb == "status":  # its JSON holds the values and the manifest: never shown
            status = await asyncio.to_thread(release_health, status, release, log)
        else:  # the chart's NOTES may render values
            status = await asyncio.to_thread(without_notes, status, log,
                                             self._config.output_lines)
        if status.state is RunState.RUNNING:
            return status.model_copy(update={"detail": f"helm {verb} of {release} is running"})
        if helm_failed:
            said = helm_error(status.output_tail)
            detail = f"helm {verb} of {release} {status.detail}" + (f": {said}" if said else "")
            return status.model_copy(update={"detail": detail})
        if verb == "status":
            return status
        return status.model_copy(update={"detail": f"helm {verb} of {release} succeeded"})

    async def _history(self, release: str, flags: list[str]) -> list[dict[str, Any]]:
        """``helm history -o json``, run directly: short, read-only, safe to repeat."""
        argv = [self._config.binary, "history", release, *flags, "-o", "json"]
        out = await run_helm(argv, provider_env(self._command, os.environ),
                             self._config.workdir, "helm history")
        try:
            data = json.loads(out)
        except ValueError:
            data = None
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            raise IntegrationError(f"helm history of {release} did not print a JSON list of "
                                   "revisions: check the helm binary configured")
        return data


def command_config(config: HelmConfig) -> CommandConfig:
    """The runner's settings: helm's environment and a deadline past helm's own."""
    env = {"KUBECONFIG": config.kubeconfig} if config.kubeconfig else {}
    return CommandConfig(argv=[config.binary], env=env, pass_env=config.pass_env,
                         secret_env=config.secret_env, workdir=config.workdir,
                         output_lines=config.output_lines,
                         timeout_seconds=config.timeout_seconds + HELM_GRACE_SECONDS)


def revision_for(history: list[dict[str, Any]], version: str) -> int | None:
    """The newest revision that ran ``version`` and got deployed, or None."""
    by_revision: dict[int, dict[str, Any]] = {
        e["revision"]: e for e in history if isinstance(e.get("revision"), int)}
    found = [n for n, e in by_revision.items()
             if e.get("status") in GOOD_STATUSES
             and version in (_version_of(e, by_revision), e.get("app_version"))]
    return max(found) if found else None


def _version_of(entry: dict[str, Any], by_revision: dict[int, dict[str, Any]]) -> str | None:
    """What Shipbot recorded in the description, following ``Rollback to N`` links."""
    for _ in range(len(by_revision) + 1):  # a loop in the links cannot hang us
        description = str(entry.get("description") or "")
        mark = _VERSION_MARK.search(description)
        if mark:
            return mark.group(1)
        link = _ROLLED_BACK.fullmatch(description.strip())
        if not link or int(link.group(1)) not in by_revision:
            return None
        entry = by_revision[int(link.group(1))]
    return None


async def run_helm(argv: list[str], env: dict[str, str], workdir: str | None,
                   label: str) -> str:
    """A short read-only helm command; its stdout, or IntegrationError with helm's error."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=env, cwd=workdir, start_new_session=True)
    except OSError as exc:
        raise IntegrationError(f"{label}: could not run {argv[0]} ({exc.strerror}): check "
                               "the helm binary configured and the PATH") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), HISTORY_TIMEOUT_SECONDS)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        raise IntegrationError(f"{label} did not answer within {HISTORY_TIMEOUT_SECONDS:g} s; "
                               "check the cluster is reachable") from None
    if proc.returncode != 0:
        said = helm_error(err.decode(errors="replace")) or f"exit code {proc.returncode}"
        raise IntegrationError(f"{label} failed: {said}")
    return out.decode(errors="replace")


def _read_spec(rundir: Path) -> dict[str, Any]:
    try:
        data = json.loads((rundir / "spec.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
