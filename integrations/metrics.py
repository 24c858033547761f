"""The metrics-provider role: what canary analysis asks of a time-series database.

Queries are expected to aggregate to ONE series (e.g. ``sum(rate(...))``), so a
provider returns plain numbers and the analysis never has to guess which series
of several it was meant to look at. The one exception is a histogram
(``query_buckets``): its series are told apart by the ``le`` label and nothing else.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from integrations.base import IntegrationError


class MetricsError(IntegrationError):
    """A query could not be answered; the message is safe to show in Slack.

    ``transient`` is True for failures that may pass on their own (the server was
    unreachable or overloaded), False for ones that need a fix (a bad query or URL).
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True, slots=True)
class Sample:
    """One point of a series; ``timestamp`` is timezone-aware (UTC)."""

    timestamp: datetime
    value: float


class Samples(list[Sample]):
    """A series' points, plus what the provider had to leave out.

    ``skipped`` counts NaN/Inf points (e.g. an error ratio over zero requests): they
    are dropped so statistics never see them, but counted so the analysis can tell
    "no traffic" from "healthy". ``warnings`` are the server's own warnings.
    """

    def __init__(
        self, samples: list[Sample] | None = None, *, skipped: int = 0,
        warnings: tuple[str, ...] = (),
    ) -> None:
        super().__init__(samples or [])
        self.skipped = skipped
        self.warnings = warnings


class MetricsProvider(Protocol):
    """Answers queries in its own language (PromQL, Datadog's) that aggregate to a single
    series."""

    def render_query(self, template: str, **values: Any) -> str:
        """``template`` with ``{service}``, ``{env}``, ``{track}``, ``{version}`` and
        ``{window}`` filled by the rules of this provider's query language."""
        ...

    async def increase(self, query: str, start: datetime, end: datetime) -> float | None:
        """How much the counter ``query`` grew from ``start`` to ``end`` (the sequential
        judge's requests and errors, both tracks over the same interval); None without
        data at ``end``. Negative when the counter went down (its pods restarted)."""
        ...

    async def query_range(
        self, query: str, start: datetime, end: datetime, step: float
    ) -> list[Sample]:
        """Points of the one series ``query`` yields, every ``step`` seconds.

        No data is an empty list, not an error. Implementations return ``Samples``.
        """
        ...

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        """The single value of ``query`` at ``at`` (default: now); None if no data."""
        ...

    async def query_buckets(self, query: str, at: datetime | None = None) -> dict[float, float]:
        """Cumulative histogram buckets at ``at`` (default: now) as {upper bound le: value}.

        One series per ``le`` label, ``+Inf`` as ``math.inf``; no data is ``{}``. A
        series without ``le``, a repeated ``le`` or a NaN value is a ``MetricsError``.
        """
        ...


class CumulativeCounters:
    """``increase`` where counters only grow (Prometheus's): the value at ``end`` minus the
    value at ``start``; no series at ``start`` counts from zero (the canary's pods did not
    exist yet)."""

    async def query(self, query: str, at: datetime | None = None) -> float | None:
        raise NotImplementedError

    async def increase(self, query: str, start: datetime, end: datetime) -> float | None:
        before, after = await asyncio.gather(self.query(query, start), self.query(query, end))
        if after is None or not math.isfinite(after):
            return None
        return after - (before if before is not None and math.isfinite(before) else 0.0)
