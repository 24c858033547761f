"""A real Alertmanager on loopback, for end-to-end tests of the alert webhook.

Import the fixture into a test module (``from tests.alertmanager_fixture import
alertmanager_factory  # noqa: F401``); conftest.py stays untouched. Alerts are pushed
through Alertmanager's own ``POST /api/v2/alerts``, exactly as Prometheus would, so
grouping, fingerprints, auth headers and resolve notifications are Alertmanager's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

ALERTMANAGER_BINARY = "prometheus-alertmanager"
ALERTMANAGER_APT = "prometheus-alertmanager"


def find_binary(name: str, apt_package: str) -> str:
    """Path of ``name``; skip locally (fail on CI) so a missing package is never silent there."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path:
        return path
    reason = f"{name} not found: install it with `apt-get install -y {apt_package}`"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    """A loopback port that was free a moment ago (the caller binds it right away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def alertmanager_config(webhook_url: str, token: str) -> str:
    """alertmanager.yml routing every alert to one webhook, with 1 s grouping for tests."""
    return textwrap.dedent(f"""\
        route:
          receiver: shipbot
          group_by: [alertname, service, env]
          group_wait: 1s
          group_interval: 1s
          repeat_interval: 1h
        receivers:
          - name: shipbot
            webhook_configs:
              - url: {webhook_url}
                send_resolved: true
                http_config:
                  authorization:
                    type: Bearer
                    credentials: {token}
        """)


def _iso(when: datetime | None = None) -> str:
    """RFC 3339 as Alertmanager wants it; a naive datetime is taken as UTC."""
    when = when or datetime.now(UTC)
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return when.isoformat().replace("+00:00", "Z")


@dataclass
class AlertmanagerProcess:
    """A running Alertmanager and a client for pushing alerts into it."""

    base_url: str
    log_path: Path
    proc: asyncio.subprocess.Process
    _fired: dict[frozenset[tuple[str, str]], dict[str, object]] = field(default_factory=dict)

    async def _post(self, alert: dict[str, object]) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            response = await client.post("/api/v2/alerts", json=[alert])
        assert response.status_code == 200, f"POST /api/v2/alerts: {response.text}"

    async def fire(self, labels: dict[str, str], annotations: dict[str, str] | None = None,
                   starts_at: datetime | None = None, generator_url: str = "") -> None:
        """Post a firing alert (no endsAt: Alertmanager applies resolve_timeout)."""
        alert: dict[str, object] = {
            "labels": labels, "annotations": annotations or {},
            "startsAt": _iso(starts_at),
            "generatorURL": generator_url}
        self._fired[frozenset(labels.items())] = alert
        await self._post(alert)

    async def resolve(self, labels: dict[str, str], annotations: dict[str, str] | None = None,
                      ends_at: datetime | None = None) -> None:
        """Re-post the fired alert with endsAt now; Alertmanager then sends it as resolved.

        startsAt, annotations and generatorURL are repeated from ``fire`` (as Prometheus
        does): Alertmanager keeps the *latest* post's annotations, and rejects
        endsAt < startsAt.
        """
        end = _iso(ends_at)
        alert = dict(self._fired.get(frozenset(labels.items()),
                                     {"labels": labels, "startsAt": end}))
        if annotations is not None:
            alert["annotations"] = annotations
        await self._post(alert | {"endsAt": end})

    async def alerts(self) -> list[dict[str, object]]:
        """Alertmanager's current view (GET /api/v2/alerts), handy when a test stalls."""
        async with httpx.AsyncClient(base_url=self.base_url, timeout=5) as client:
            response = await client.get("/api/v2/alerts")
        response.raise_for_status()
        return list(response.json())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


async def _wait_ready(am: AlertmanagerProcess, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient(base_url=am.base_url, timeout=1) as client:
        while True:
            if am.proc.returncode is not None:
                raise RuntimeError(f"alertmanager exited with {am.proc.returncode}:\n{am.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/-/ready")).status_code == 200:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"alertmanager not ready after {timeout}s:\n{am.log()}")
            await asyncio.sleep(0.05)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout=5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


AlertmanagerFactory = Callable[[str, str], Awaitable[AlertmanagerProcess]]


@pytest.fixture
async def alertmanager_factory(tmp_path: Path) -> AsyncIterator[AlertmanagerFactory]:
    """``await alertmanager_factory(webhook_url, token)`` starts an Alertmanager.

    Each one's log is printed at teardown; pytest shows captured teardown output only
    when the test failed, which is when the log is wanted.
    """
    binary = find_binary(ALERTMANAGER_BINARY, ALERTMANAGER_APT)
    started: list[AlertmanagerProcess] = []

    async def start(webhook_url: str, token: str) -> AlertmanagerProcess:
        home = tmp_path / f"alertmanager-{len(started)}"
        (home / "data").mkdir(parents=True)
        config = home / "alertmanager.yml"
        config.write_text(alertmanager_config(webhook_url, token))
        port = free_port()
        argv = [binary, f"--config.file={config}", f"--storage.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--web.external-url=http://127.0.0.1:{port}",
                "--cluster.listen-address=",  # empty string disables HA gossip
                "--log.level=debug"]
        log_path = home / "alertmanager.log"
        with log_path.open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
        am = AlertmanagerProcess(f"http://127.0.0.1:{port}", log_path, proc)
        started.append(am)
        await _wait_ready(am, timeout=15)
        return am

    yield start
    for am in started:
        await _stop(am.proc)
        print(f"--- alertmanager log ({am.base_url}) ---\n{am.log()}")
