"""Waking the runner when a deployment it just advanced is due again, not at a tick.

A step that waits (polls its run, checks the canary again, ends a bake) sets its next
due time from the moment it started, which is just after the tick that claimed it; so
"poll again in 1 s" came due just after the next 1 s tick and waited for the one
after: nearly a whole tick of lag on every step, more under load. A timer at the due
time claims it then. Timers falling within ``GRAIN`` of each other share one wake-up
(one claim for all of them), and due times further off than ``HORIZON`` are left to the
ticks, which still look at everything (other replicas' work, a clock that jumped).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import datetime

from bot.clock import Clock, as_utc

GRAIN = 0.05  # seconds
HORIZON = 300.0  # seconds
MARGIN = 0.005  # seconds after the due time: the loop's clock and the wall clock differ


class Wakeups:
    def __init__(self, clock: Clock, wake: Callable[[], None]) -> None:
        self.clock, self.wake = clock, wake
        self._timers: dict[float, asyncio.TimerHandle] = {}  # loop time -> its timer

    def at(self, due: datetime | None) -> None:
        """Call ``wake`` once ``due`` (by the clock) has come, unless it is far off."""
        if due is None:
            return
        delay = (as_utc(due) - self.clock()).total_seconds()
        if delay > HORIZON:
            return
        loop = asyncio.get_running_loop()
        when = math.ceil((loop.time() + max(delay, 0.0) + MARGIN) / GRAIN) * GRAIN
        if when not in self._timers:
            self._timers[when] = loop.call_at(when, self._fire, when)

    def _fire(self, when: float) -> None:
        self._timers.pop(when, None)
        self.wake()

    def cancel(self) -> None:
        """Shutting down: no more wake-ups."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def __len__(self) -> int:
        return len(self._timers)
