"""A traffic exporter the tests steer, for the real Prometheus in ``prometheus_fixture``:
``http_requests_total`` and ``http_request_duration_seconds`` of a baseline and a canary."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

TRACKS = ("baseline", "canary")


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
