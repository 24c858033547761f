"""What ``bench/engine_load.py``'s services serve, in a process of its own (run by it).

    python bench/load_traffic.py --canaries svc1,svc4 --bad svc4 --flaky svc5

Serves, on a free loopback port it prints on its first line:

- ``/metrics`` for Prometheus: ``http_requests_total{service,env,track,code}`` of every
  ``--canaries`` service, both tracks at ``--rps`` requests a second from start-up, 1 %
  of them errors; the canary track of a ``--bad`` service fails 8 % of its requests.
  Counts follow the clock (no background thread), so every scrape is consistent.
- ``/healthz/<service>``: the deployment's HTTP check. A ``--flaky`` service answers its
  first ``--flaky-attempts`` requests only after ``--flaky-seconds`` (longer than the
  check's timeout: the check retries), then ``ok`` at once, as everyone else does.

A process of its own so that serving it costs the measured process nothing.
``running_world`` (used by the bench) starts it and a real Prometheus scraping it.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ERROR_RATE, BAD_ERROR_RATE = 0.01, 0.08


class Traffic:
    """The counters' values now, and how many times each service's check was asked."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.canaries = [s for s in args.canaries.split(",") if s]
        self.bad = set(args.bad.split(",")) - {""}
        self.flaky = set(args.flaky.split(",")) - {""}
        self.rps, self.flaky_attempts = args.rps, args.flaky_attempts
        self.flaky_seconds = args.flaky_seconds
        self.started = time.monotonic()
        self.checks: Counter[str] = Counter()
        self.lock = threading.Lock()

    def exposition(self) -> bytes:
        requests = self.rps * (time.monotonic() - self.started)
        lines = ["# TYPE http_requests_total counter"]
        for service in self.canaries:
            for track in ("baseline", "canary"):
                rate = BAD_ERROR_RATE if track == "canary" and service in self.bad \
                    else ERROR_RATE
                for code, count in (("200", requests * (1 - rate)), ("500", requests * rate)):
                    lines.append(f'http_requests_total{{service="{service}",env="staging",'
                                 f'track="{track}",code="{code}"}} {count:.3f}')
        return ("\n".join(lines) + "\n").encode()

    def check_delay(self, service: str) -> float:
        with self.lock:
            self.checks[service] += 1
            attempt = self.checks[service]
        slow = service in self.flaky and attempt <= self.flaky_attempts
        return self.flaky_seconds if slow else 0.0


def handler(traffic: Traffic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, traffic.exposition(), "text/plain; version=0.0.4")
            elif self.path.startswith("/healthz/"):
                time.sleep(traffic.check_delay(self.path.removeprefix("/healthz/")))
                self._answer(200, b"ok", "text/plain")
            else:
                self._answer(404, b"not found", "text/plain")

        def _answer(self, status: int, body: bytes, kind: str) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the check gave up waiting (its timeout): nobody listens
                pass

        def log_message(self, format: str, *args: object) -> None:
            return None

    return Handler


@dataclass(frozen=True)
class World:
    """The traffic server's base URL and the Prometheus that scrapes it."""

    traffic_url: str
    prometheus_url: str
    target: str  # host:port, what the fixture's Prometheus config scrapes


@contextlib.contextmanager
def running_world(tmp: Path, *, canaries: list[str], bad: list[str],
                  flaky: list[str]) -> Iterator[World]:
    """This file as a subprocess, and Prometheus (1 s scrapes) as the tests start it."""
    from tests.prometheus_server import _stop, start_prometheus

    argv = [sys.executable, __file__, "--canaries", ",".join(canaries),
            "--bad", ",".join(bad), "--flaky", ",".join(flaky)]
    server = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        target = f"127.0.0.1:{port}"
        (tmp / "prometheus").mkdir(parents=True)
        prometheus = start_prometheus(tmp / "prometheus", World("", "", target))  # type: ignore[arg-type]
        try:
            yield World(f"http://{target}", prometheus.url, target)
        finally:
            _stop(prometheus.process)
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--canaries", default="")
    parser.add_argument("--bad", default="")
    parser.add_argument("--flaky", default="")
    parser.add_argument("--rps", type=float, default=200.0)
    parser.add_argument("--flaky-attempts", type=int, default=2)
    parser.add_argument("--flaky-seconds", type=float, default=3.0)
    traffic = Traffic(parser.parse_args())
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler(traffic))
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
