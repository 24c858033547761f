"""A real Prometheus for tests, scraping a traffic exporter the test steers.

Canary analysis is only as good as the PromQL it runs, and PromQL's edge cases
(rate extrapolation, 0/0 = NaN, histogram interpolation) are easy to get wrong in a
mock; so these fixtures run the actual server. Use via
``pytest_plugins = ["tests.prometheus_fixture"]`` and the ``prometheus`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from integrations.metrics import Samples
from integrations.prometheus import PrometheusConfig, PrometheusProvider

TRACKS = ("baseline", "canary")
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


@dataclass
class Traffic:
    """What one track serves: requests per second, share of 5xx, and latency."""

    rps: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 50.0
    version: str = "1.0.0"


@dataclass
class _TrackState:
    requests: dict[tuple[str, str], float] = field(default_factory=dict)  # (version, code)
    buckets: list[float] = field(default_factory=list)  # cumulative, one per bound
    count: float = 0.0
    total_seconds: float = 0.0


class TrafficExporter:
    """Serves ``http_requests_total`` and ``http_request_duration_seconds`` for two tracks.

    A background thread adds ``rps * elapsed`` requests every ``tick_seconds``, split
    by ``error_rate`` into code 500 and 200, all observed at ``latency_ms``. Counts are
    fractional so ratios are exact, and every scrape sees one consistent snapshot
    (state changes and collection share a lock), so a 5 % canary reads as 0.05.
    """

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self, service: str = "api", env: str = "production",
                 tick_seconds: float = 0.1) -> None:
        self.service, self.env, self.tick_seconds = service, env, tick_seconds
        self._lock = threading.Lock()
        self._traffic = {
            "baseline": Traffic(version="1.0.0"), "canary": Traffic(version="1.1.0"),
        }
        self._state = {t: _TrackState(buckets=[0.0] * len(self.BUCKETS)) for t in TRACKS}
        self._stop = threading.Event()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)
        self._server, _ = start_http_server(0, addr="127.0.0.1", registry=self._registry)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._generate, name="traffic", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set_traffic(self, track: str, rps: float, error_rate: float = 0.0,
                    latency_ms: float = 50.0, version: str | None = None) -> None:
        """Change what ``track`` serves from now on."""
        if track not in TRACKS:
            raise ValueError(f"track must be one of {TRACKS}")
        with self._lock:
            old = self._traffic[track]
            self._traffic[track] = Traffic(rps, error_rate, latency_ms, version or old.version)

    def record(self, track: str, requests: float, errors: float = 0.0,
               latency_ms: float = 50.0, version: str | None = None) -> None:
        """Count requests directly, for tests that want exact totals rather than rates."""
        with self._lock:
            self._record(track, requests, errors, latency_ms,
                         version or self._traffic[track].version)

    def _record(self, track: str, requests: float, errors: float, latency_ms: float,
                version: str) -> None:
        state = self._state[track]
        for code, count in (("200", requests - errors), ("500", errors)):
            state.requests[(version, code)] = state.requests.get((version, code), 0.0) + count
        seconds = latency_ms / 1000
        for i, bound in enumerate(self.BUCKETS):
            if seconds <= bound:
                state.buckets[i] += requests
        state.count += requests
        state.total_seconds += requests * seconds

    def _generate(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.tick_seconds):
            now = time.monotonic()
            elapsed, last = now - last, now
            with self._lock:
                for track, t in self._traffic.items():
                    if t.rps > 0:
                        n = t.rps * elapsed
                        self._record(track, n, n * t.error_rate, t.latency_ms, t.version)

    def collect(self) -> Iterable[Metric]:
        """The prometheus_client Collector hook: one snapshot under the lock."""
        requests = CounterMetricFamily(
            "http_requests_total", "Requests served.",
            labels=["service", "env", "track", "version", "code"],
        )
        duration = HistogramMetricFamily(
            "http_request_duration_seconds", "Request latency.",
            labels=["service", "env", "track"],
        )
        with self._lock:
            for track, state in self._state.items():
                for (version, code), value in sorted(state.requests.items()):
                    requests.add_metric([self.service, self.env, track, version, code], value)
                if state.count:
                    buckets = [(repr(b), c) for b, c in zip(self.BUCKETS, state.buckets,
                                                             strict=True)]
                    buckets.append(("+Inf", state.count))
                    duration.add_metric([self.service, self.env, track], buckets,
                                        state.total_seconds)
        return [requests, duration]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.shutdown()
        self._server.server_close()


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
    scrape comes ~5 s after ``/-/ready``; waiting here means a test's own deadlines
    only have to cover the scrapes it needs.
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
        with log_path.open("wb") as log:  # a file, not a pipe: nobody has to drain it
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
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


@pytest.fixture
def traffic_exporter() -> Iterator[TrafficExporter]:
    exporter = TrafficExporter()
    yield exporter
    exporter.close()


@pytest.fixture
def prometheus(tmp_path: Path, traffic_exporter: TrafficExporter) -> Iterator[PrometheusServer]:
    """A real Prometheus (1 s scrapes) of ``traffic_exporter``, already scraping it.

    Setup takes ~5-6 s (see ``_wait_first_scrape``); the exporter starts with no traffic.
    """
    server = start_prometheus(tmp_path, traffic_exporter)
    yield server
    _stop(server.process)
