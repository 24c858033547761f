"""A real Prometheus scraping a ``TrafficExporter``: start it, wait until it has scraped,
stop it. The pytest side (the ``prometheus`` fixture, the spares) is ``prometheus_fixture``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from integrations.metrics import Samples
from integrations.prometheus import PrometheusConfig, PrometheusProvider
from tests.traffic_exporter import TrafficExporter

READY_TIMEOUT_SECONDS = 20.0


def find_binary(name: str, apt_package: str | None = None) -> str:
    """Path of a server binary; a missing one skips locally but fails on CI.

    On CI a skip would silently turn the real-server tests off, so it is an error.
    """
    # PATH first; then the usual places, in case PATH is trimmed (e.g. under sudo/CI).
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin:/usr/sbin")
    if path:
        return path
    message = f"{name} not found; install it with: apt-get install -y {apt_package or name}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """A port nothing listens on right now (the caller retries if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PROMETHEUS_YML = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {interval}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: shipbot-test
    static_configs:
      - targets: ["{target}"]
"""


@dataclass
class PrometheusServer:
    """A running Prometheus: its ``url``, the ``exporter`` it scrapes, and helpers."""

    url: str
    exporter: TrafficExporter
    process: subprocess.Popen[bytes]
    log_path: Path
    version: str

    def config(self, **overrides: object) -> PrometheusConfig:
        return PrometheusConfig.model_validate({"url": self.url, "timeout_seconds": 5,
                                               **overrides})

    def provider(self, **overrides: object) -> PrometheusProvider:
        return PrometheusProvider(self.config(**overrides))

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_for_points(self, query: str, points: int, *, lookback: float = 30.0,
                              step: float = 1.0, timeout: float = 20.0) -> Samples:
        """Poll until ``query`` has ``points`` finite values in the last ``lookback`` s."""
        provider = self.provider()
        deadline = time.monotonic() + timeout
        samples = Samples()
        while time.monotonic() < deadline:
            end = datetime.now(UTC)
            samples = await provider.query_range(query, end - timedelta(seconds=lookback),
                                                 end, step)
            if len(samples) >= points:
                return samples
            await asyncio.sleep(0.25)
        pytest.fail(f"{query!r} had {len(samples)} of {points} points after {timeout}s\n"
                    f"Prometheus log:\n{self.log_tail()}")


def _wait_ready(process: subprocess.Popen[bytes], url: str, log_path: Path) -> str | None:
    """Poll ``/-/ready``; the build version once ready, None if the port was taken."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = log_path.read_text(errors="replace")
                if "address already in use" in log:
                    return None
                print(log)
                pytest.fail(f"prometheus exited with {process.returncode}:\n{log[-4000:]}")
            try:
                if client.get(f"{url}/-/ready").status_code == 200:
                    info = client.get(f"{url}/api/v1/status/buildinfo").json()
                    return str(info["data"]["version"])
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
    log = log_path.read_text(errors="replace")
    print(log)
    pytest.fail(f"prometheus not ready after {READY_TIMEOUT_SECONDS}s:\n{log[-4000:]}")


def _wait_first_scrape(server: PrometheusServer) -> None:
    """Block until the exporter has been scraped once.

    Prometheus 2.x hands new targets to the scrape loop in 5 s batches, so the first
    scrape comes ~5 s after ``/-/ready`` (the fixture's spares wait in the background);
    waiting here means a test's own deadlines only have to cover the scrapes it needs.
    """
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            answer = client.get(f"{server.url}/api/v1/query", params={"query": "up"}).json()
            if answer["data"]["result"]:
                return
            time.sleep(0.1)
    print(server.log_tail())
    pytest.fail(f"prometheus did not scrape {server.exporter.target} within "
                f"{READY_TIMEOUT_SECONDS}s:\n{server.log_tail()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def start_prometheus(tmp_path: Path, exporter: TrafficExporter,
                     scrape_interval: str = "1s") -> PrometheusServer:
    """Start Prometheus on a free loopback port with its own TSDB under ``tmp_path``."""
    binary = find_binary("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_YML.format(interval=scrape_interval, target=exporter.target))
    log_path = tmp_path / "prometheus.log"
    for _ in range(3):  # the free port can be taken between probing and binding
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h",
        ]
        # A file, not a pipe: nobody has to drain it. An empty environment: a spare starts
        # during some other test, and must not carry that test's variables (its tmp_path,
        # which tests/processes.py looks for in every process once the test is over).
        with log_path.open("wb") as log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, env={},
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            version = _wait_ready(process, url, log_path)
        except BaseException:
            _stop(process)
            raise
        if version is not None:
            server = PrometheusServer(url, exporter, process, log_path, version)
            try:
                _wait_first_scrape(server)
            except BaseException:
                _stop(process)
                raise
            return server
        _stop(process)
    pytest.fail("prometheus could not get a free port three times")


def stop_prometheus(server: PrometheusServer) -> None:
    """Stop the server and its exporter."""
    _stop(server.process)
    server.exporter.close()
