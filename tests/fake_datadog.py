"""A small Datadog metrics API for tests: ``GET /api/v1/query`` answered from traffic the
test steers, per track and version.

Answers are built from tests/fixtures/datadog (shaped as Datadog's API reference shows
"Query timeseries points": docs.datadoghq.com/api/latest/metrics/#query-timeseries-points),
with the series' points computed from the query's own scope: ``service:``, ``track:`` and
``version:`` must match a track's traffic, so a query rendered with the wrong version has
no data, as on Datadog. Understood queries (enough for canary analysis):

- ``sum:trace.http.request.hits{...}.as_count()`` / ``...errors...``: counts per interval;
  without ``.as_count()`` a per-second rate;
- ``A / B`` of two such terms: the ratio per point (``null`` where B is 0);
- ``p95:trace.http.request{...}`` (or p50/p99/avg): the track's latency in seconds;
- ``... by {host}``: one series per host (two hosts), as the reference's example.

Keys: ``DD-API-KEY`` and ``DD-APPLICATION-KEY`` must equal ``api_key``/``app_key`` (else
403). ``faults`` answers the next requests instead (status, headers, fixture). ``handler``
serves httpx.MockTransport; ``app`` serves the same on loopback for a whole bot.
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "datadog"
API_KEY, APP_KEY = "dd-api-key-0123456789abcdef", "dd-app-key-fedcba9876543210"
_TERM = re.compile(r"^(?:(?P<agg>\w+):)?(?P<metric>[\w.]+)\{(?P<scope>[^}]*)\}"
                   r"(?:\s*by\s*\{(?P<by>[^}]*)\})?(?P<funcs>(?:\.\w+\([^)]*\))*)$")


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class Traffic:
    """What one track serves: requests per second, share of errors, latency, version."""

    rps: float = 0.0
    error_rate: float = 0.0
    latency_ms: float = 50.0
    version: str | None = None  # None: any version tag matches


@dataclass
class Fault:
    status: int
    body: str = "error_400.json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeDatadog:
    service: str = "api"
    interval: int = 1  # seconds between points for short ranges, like Datadog's rollup
    tracks: dict[str, Traffic] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    # Datadog aligns intervals to multiples of the rollup, so the first point's interval
    # may begin before ``from`` (it then counts requests from before it): True answers so.
    floor_buckets: bool = False

    def set_traffic(self, track: str, **values: Any) -> None:
        self.tracks[track] = Traffic(**values)

    def queries(self) -> list[str]:
        return [r.url.params["query"] for r in self.requests]

    # --- the API ------------------------------------------------------------------------

    def answer(self, request: httpx.Request) -> tuple[int, dict[str, str], Any]:
        self.requests.append(request)
        if request.method != "GET" or request.url.path != "/api/v1/query":
            return 404, {}, {"errors": ["Not found"]}
        if (request.headers.get("DD-API-KEY") != API_KEY
                or request.headers.get("DD-APPLICATION-KEY") != APP_KEY):
            return 403, {}, fixture("error_403.json")
        if self.faults:
            fault = self.faults.pop(0)
            return fault.status, fault.headers, fixture(fault.body)
        params = request.url.params
        try:
            start, end = int(params["from"]), int(params["to"])
            query = params["query"]
        except (KeyError, ValueError):
            return 400, {}, fixture("error_400.json")
        body = fixture("query.json")
        body.update(query=query, from_date=start * 1000, to_date=end * 1000)
        try:
            body["series"] = self._series(query, start, end, body["series"][0])
        except ValueError as exc:
            body.update(status="error", error=f"Error parsing query: {exc}", series=[])
            return 400, {}, {"errors": [f"Error parsing query: {exc}"]}
        body["group_by"] = ["host"] if len(body["series"]) > 1 else []
        return 200, {}, body

    def _series(self, query: str, start: float, end: float, shape: dict[str, Any]
                ) -> list[dict[str, Any]]:
        parts = [self._parse(p.strip()) for p in query.split(" / ")]
        if len(parts) > 2:
            raise ValueError("only A / B is understood here")
        step = max(self.interval, math.ceil((end - start) / 300))
        first = (math.floor if self.floor_buckets else math.ceil)(start / step) * step
        times = range(first, int(end) + 1, step)
        values = [self._values(p, times, step) for p in parts]
        if any(v is None for v in values):
            return []
        points: list[list[float | None]] = []
        for i, t in enumerate(times):
            num = values[0][i]  # type: ignore[index]
            den = values[1][i] if len(values) > 1 else 1.0  # type: ignore[index]
            value = None if num is None or den is None or den == 0 else num / den
            points.append([t * 1000.0, value])
        hosts = [h.strip() for h in (parts[0]["by"] or "").split(",") if h.strip()]
        copies = [f"host:i-{n}" for n in ("0a1b", "2c3d")] if hosts else [None]
        made = []
        for host in copies:
            series = copy.deepcopy(shape)
            scope = ",".join(filter(None, [parts[0]["scope"], host]))
            series.update(metric=parts[0]["metric"], display_name=parts[0]["metric"],
                          expression=query, scope=scope, pointlist=points,
                          length=len(points), interval=step,
                          start=times[0] * 1000 if points else start * 1000,
                          end=(times[-1] + step) * 1000 - 1 if points else end * 1000)
            made.append(series)
        return made

    def _parse(self, term: str) -> dict[str, Any]:
        match = _TERM.match(term)
        if not match:
            raise ValueError(f"unable to parse {term}")
        tags = dict(t.split(":", 1) for t in match["scope"].split(",") if ":" in t)
        return {**match.groupdict(), "tags": tags}

    def _values(self, term: dict[str, Any], times: range, step: int
                ) -> list[float | None] | None:
        """Per point, or None when no track's traffic matches the scope (no data)."""
        tags = term["tags"]
        traffic = self.tracks.get(tags.get("track", ""))
        if (traffic is None or traffic.rps <= 0 or tags.get("service") != self.service
                or (traffic.version and tags.get("version") not in (None, traffic.version))):
            return None
        as_count = ".as_count()" in (term["funcs"] or "")
        metric = term["metric"]
        if metric == "trace.http.request.hits":
            per_second = traffic.rps
        elif metric == "trace.http.request.errors":
            per_second = traffic.rps * traffic.error_rate
        elif metric == "trace.http.request":
            return [traffic.latency_ms / 1000 if t >= self.started - step else None
                    for t in times]
        else:
            return None
        return [(per_second * step if as_count else per_second)
                if t >= self.started - step else None for t in times]

    # --- transports ---------------------------------------------------------------------

    def handler(self, request: httpx.Request) -> httpx.Response:
        status, headers, body = self.answer(request)
        return httpx.Response(status, headers=headers, json=body)

    def app(self) -> web.Application:
        async def serve(request: web.Request) -> web.Response:
            proxied = httpx.Request(request.method, str(request.url),
                                    headers=dict(request.headers))
            status, headers, body = self.answer(proxied)
            return web.json_response(body, status=status, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", serve)
        return app
