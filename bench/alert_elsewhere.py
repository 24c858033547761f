"""A rate-limited channel must not delay alerts elsewhere: how long a new alert's root
takes to be posted in a quiet channel while another channel is throttled by Slack's 1
post/s, next to the same alert on an idle bot (the baseline, measured in the same run).

Run by hand: ``PYTHONPATH=. .venv/bin/python bench/alert_elsewhere.py [--rounds N]``.
The test (tests/test_alert_threads.py) asserts the order (the quiet channel's root is
posted while the busy channel still waits); this prints the times, in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from bot.devtools.local import LocalBot
from tests.alert_helpers import alert_config, alert_roots, am_alert, am_payload, post


async def one(tmp: Path, noisy: int) -> float:
    bot = LocalBot(alert_config(tmp), database_url=f"sqlite:///{tmp}/shipbot.db",
                   state_dir=tmp / "state")
    await bot.start()
    try:
        for i in range(noisy):  # two posts each for #deploys-api: most wait for Retry-After
            await post(bot, "alertmanager", am_payload(am_alert(
                {"alertname": f"Noisy{i}", "service": "api", "env": "staging"},
                fingerprint=f"n{i}"), group_key=f"noisy{i}"))
        sent = time.perf_counter()
        await post(bot, "alertmanager", am_payload(am_alert(
            {"alertname": "Elsewhere", "service": "web", "env": "staging"}, fingerprint="w"),
            group_key="web"))
        for _ in range(15_000):  # 2 ms steps, 30 s at most
            if alert_roots(bot, "#deploys-web", "Elsewhere"):
                return time.perf_counter() - sent
            await asyncio.sleep(0.002)
        raise RuntimeError("the alert's root was never posted")
    finally:
        await bot.stop()


async def main(rounds: int) -> None:
    results: dict[int, list[float]] = {0: [], 8: []}
    for _ in range(rounds):
        for noisy in results:  # interleaved, so both see the same machine load
            with tempfile.TemporaryDirectory() as tmp:
                results[noisy].append(await one(Path(tmp), noisy))
    for noisy, label in ((8, "root in #deploys-web, #deploys-api throttled"),
                         (0, "root in #deploys-web, idle bot (baseline)")):
        ms = [s * 1000 for s in results[noisy]]
        print(f"{label:<46} median {statistics.median(ms):8.1f} ms  worst {max(ms):8.1f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    asyncio.run(main(parser.parse_args().rounds))
