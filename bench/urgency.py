"""How long the notifier's hold (``bot.engine.urgency``) keeps a waiter, next to baselines
measured in the same run. The tests assert who goes first; the times are here.

Run by hand: ``.venv/bin/python bench/urgency.py [--rounds N]``. Prints, in milliseconds
(median and worst of N rounds):
- quiet: ``wait_quiet`` with nothing urgent, next to an ``await`` that does not suspend
  (baseline: the cost of a coroutine call);
- release: from the urgent task's end to the waiter going on, next to an
  ``asyncio.Event`` wake-up (baseline: one hop through the loop);
- starved: the hold when urgent work never ends, next to ``MAX_WAIT`` (the cap).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from bot.engine.urgency import MAX_WAIT, Urgency


async def _nothing() -> None:
    return None


async def quiet() -> float:
    urgency = Urgency()
    started = time.perf_counter()
    await urgency.wait_quiet()
    return time.perf_counter() - started


async def no_suspend() -> float:
    started = time.perf_counter()
    await _nothing()
    return time.perf_counter() - started


async def release() -> float:
    urgency, done = Urgency(), asyncio.Event()
    ended: list[float] = []

    async def urgent() -> None:
        await done.wait()
        ended.append(time.perf_counter())

    urgency.until_done(asyncio.create_task(urgent()))
    waiter = asyncio.create_task(urgency.wait_quiet())
    await asyncio.sleep(0)
    done.set()
    await waiter
    return time.perf_counter() - ended[0]


async def event_hop() -> float:
    event = asyncio.Event()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    started = time.perf_counter()
    event.set()
    await waiter
    return time.perf_counter() - started


async def starved() -> float:
    urgency = Urgency()
    async with urgency.urgent():
        started = time.perf_counter()
        await urgency.wait_quiet()
        return time.perf_counter() - started


async def cap() -> float:
    return MAX_WAIT


async def measure(probe: Callable[[], Awaitable[float]], rounds: int) -> list[float]:
    return [await probe() for _ in range(rounds)]


def line(name: str, samples: list[float], baseline_name: str, baseline: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    base = [s * 1000 for s in baseline]
    return (f"{name:<8} median {statistics.median(ms):9.4f} ms  worst {max(ms):9.4f} ms   "
            f"{baseline_name}: median {statistics.median(base):9.4f} ms  "
            f"worst {max(base):9.4f} ms")


async def main(rounds: int) -> None:
    slow_rounds = max(3, rounds // 50)  # each starved round lasts MAX_WAIT
    print(line("quiet", await measure(quiet, rounds),
               "no-suspend await", await measure(no_suspend, rounds)))
    print(line("release", await measure(release, rounds),
               "event wake-up", await measure(event_hop, rounds)))
    print(line("starved", await measure(starved, slow_rounds),
               "MAX_WAIT", await measure(cap, slow_rounds)))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=500)
    asyncio.run(main(parser.parse_args().rounds))
