"""Histogram increases as the sequential judge reads them: whole requests, and the number
slower than each bound is the true one rounded, whatever the fractional parts of the
counters (a rate-derived or test exporter's counters are fractional). Rounding each
bucket alone made one slow request read 1, then 0, then 1 as the total grew: "counters
went backwards (restart?)" on a healthy canary."""

from __future__ import annotations

import math

from bot.engine.measure import increase_of


def slower(h: dict[float, int], le: float) -> int:
    return h[math.inf] - h[le]


def test_one_slow_request_stays_one_as_the_total_grows() -> None:
    before = {0.05: 0.0, 0.1: 0.0, math.inf: 0.0}
    seen = []
    for total in (200.4, 200.5, 200.6, 401.5, 602.5):  # the slow one is exactly 1.0
        after = {0.05: total - 1.0, 0.1: total, math.inf: total}
        h = increase_of(before, after)
        assert h is not None
        seen.append((h[math.inf], slower(h, 0.05), slower(h, 0.1)))
    assert [s[1:] for s in seen] == [(1, 0)] * 5
    assert [s[0] for s in seen] == sorted(s[0] for s in seen)  # totals never go down


def test_a_counter_reset_still_reads_as_one_and_no_data_as_none() -> None:
    assert increase_of({math.inf: 500.0, 0.1: 400.0}, {math.inf: 20.0, 0.1: 10.0}) == \
        {math.inf: -480, 0.1: -390}  # the judge re-anchors on it
    assert increase_of({math.inf: 5.0}, {}) is None
