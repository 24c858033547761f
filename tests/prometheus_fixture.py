"""The ``prometheus`` fixture: a real Prometheus scraping a traffic exporter the test steers.

Canary analysis is only as good as the PromQL it runs, and PromQL's edge cases
(rate extrapolation, 0/0 = NaN, histogram interpolation) are easy to get wrong in a
mock; so these fixtures run the actual server (``prometheus_server``). Use via
``pytest_plugins = ["tests.prometheus_fixture"]`` and the ``prometheus`` fixture.

A new server's first scrape comes 5-6 s after it is ready: Prometheus hands new targets
to its scrape loop on a 5 s tick, in discovery and again in the scrape manager (2.42 has
no setting below 5 s: ``--scrape.discovery-reload-interval`` is floored at it). So each
test process keeps two spares: started as soon as the collected tests show that one will be
wanted, another as each is handed out, every one in a background thread. That wait then
overlaps other tests instead of preceding each of these.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.prometheus_server import PrometheusServer, start_prometheus, stop_prometheus
from tests.traffic_exporter import TrafficExporter


class Spares:
    """``DEPTH`` Prometheus servers (and exporters) always starting or ready, for the next
    tests: two, because a worker often runs two of these tests back to back."""

    DEPTH = 2

    def __init__(self) -> None:
        self._base = tempfile.TemporaryDirectory(prefix="shipbot-prometheus-")
        self._pool = ThreadPoolExecutor(self.DEPTH, thread_name_prefix="prometheus-spare")
        self._next: deque[Future[PrometheusServer]] = deque()

    def prepare(self) -> None:
        """Start spares until ``DEPTH`` are on their way."""
        while len(self._next) < self.DEPTH:
            self._next.append(self._pool.submit(self._start))

    def take(self) -> PrometheusServer:
        """The oldest spare (waiting for it if it is still starting); another starts now.

        A spare that failed to start fails (or, without the binary, skips) the test that
        takes it, as starting its own would have."""
        self.prepare()
        taken = self._next.popleft()
        self.prepare()
        return taken.result()

    def close(self) -> None:
        """Stop the spares nobody took and remove what the spares wrote."""
        for spare in self._next:
            if not spare.cancel() and spare.exception() is None:
                stop_prometheus(spare.result())
        self._pool.shutdown(wait=True)
        self._base.cleanup()

    def _start(self) -> PrometheusServer:
        directory = Path(tempfile.mkdtemp(dir=self._base.name))
        exporter = TrafficExporter()
        try:
            return start_prometheus(directory, exporter)
        except BaseException:
            exporter.close()
            raise


SPARES = pytest.StashKey[Spares]()


def spares_of(config: pytest.Config) -> Spares:
    """This test process's spares, made on first use."""
    if SPARES not in config.stash:
        config.stash[SPARES] = Spares()
    return config.stash[SPARES]


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the spares once it is known that a test here will want one."""
    if session.config.option.collectonly:
        return
    if any("prometheus" in getattr(item, "fixturenames", ()) for item in session.items):
        spares_of(session.config).prepare()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No Prometheus outlives the test session."""
    if SPARES in session.config.stash:
        session.config.stash[SPARES].close()


@pytest.fixture
def prometheus(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrometheusServer]:
    """A real Prometheus (1 s scrapes) of its own ``exporter``, already scraping it.

    The exporter starts with no traffic (no ``http_*`` series at all), however long the
    spare waited. Its config and log are copied to ``tmp_path / "prometheus"`` afterwards,
    for a failed test's post-mortem.
    """
    server = spares_of(request.config).take()
    try:
        yield server
    finally:
        stop_prometheus(server)
        directory = server.log_path.parent
        shutil.copytree(directory, tmp_path / "prometheus", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("tsdb"))
        shutil.rmtree(directory, ignore_errors=True)
