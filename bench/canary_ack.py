"""``/deploy`` acks at a fixed arrival rate while canaries are being analysed, next to a
bare Bolt app at the same rate (the baseline, in the same run).

    PYTHONPATH=. .venv/bin/python bench/canary_ack.py [--canaries 50] [--rate 50]
        [--seconds 20] [--warmup 2] [--steps 4] [--interval 10] [--profile FILE]

Open loop: request i is due at t0 + i/rate whatever became of the earlier ones, and its
latency counts from that due time, so a stalled server cannot hide the queue behind it
(no coordinated omission). Every request is a signed ``/deploy <svc> <env> <version>``
to a slot (service, environment) nobody used, with its own trigger id.

Shipbot runs in its own spawned process with its whole engine (runner ticking every
second, notifier, scheduler) as bench/ack_latency.py serves it, plus ``--canaries``
canary deployments queued first (bench/engine_load.py's): ``--steps`` traffic steps of
``--interval`` seconds each, judged every 2 s against a real Prometheus that scrapes
bench/load_traffic.py. The measurement starts once every canary is in an analysis step
and they are still being judged when it ends (printed: how many were rolling out, how
many judgements ran during the window). Every deploy target is in memory (a deploy takes
3 s, a traffic change 0.3 s), so Shipbot's own work is what competes with the acks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, select

from bench.ack_latency import (
    ENVS,
    EXPECT,
    LogCounter,
    Sample,
    bench_settings,
    deployment_states,
    pct,
    post_command,
)
from bench.edge import Server
from bench.engine_load import Spec, install_targets, queue, service, strategy
from bench.load_traffic import World, running_world
from bot.config import ShipbotConfig, parse_config
from bot.devtools.driver import SlackDriver
from bot.devtools.local import LocalBot
from bot.engine.machine import State
from bot.engine.progressive import stage_now
from bot.store.models import Deployment

READY_SECONDS = 120.0  # at most this long for every canary to reach its first analysis


@dataclass(frozen=True)
class Load:
    """What the Shipbot process serves: the /deploy services and the canaries."""

    services: list[str]
    canaries: list[str]
    world: World
    steps: int
    interval: float
    database: str | None = None
    profile: str | None = None


def shipbot_config(load: Load) -> ShipbotConfig:
    """bench/ack_latency.py's services, and the canaries judged on the real Prometheus."""
    settings = bench_settings(load.services)
    settings["poll_interval_seconds"] = 1  # as bench/engine_load.py's replica polls
    settings["metrics"] = {"provider": "prometheus", "url": load.world.prometheus_url}
    weights = [round(100 * (i + 1) / (load.steps + 1)) for i in range(load.steps)]
    rollout = {**strategy("canary", load.world), "steps": [*weights, 100],
               "interval": f"{load.interval:g}s"}
    settings["services"].update({name: service(name, rollout) for name in load.canaries})
    return parse_config(settings)


async def canary_counts(bot: LocalBot, config: ShipbotConfig, load: Load) -> dict[str, Any]:
    """The canaries' states, how many are in an analysis step, each one's judgements."""
    async with bot.bot.sessions() as session:
        rows = (await session.exec(select(Deployment).where(
            col(Deployment.service).in_(load.canaries)))).all()
    baking = [r for r in rows if r.state == State.VERIFYING
              and (stage := stage_now(config, r)) is not None and stage.kind == "bake"]
    states: dict[str, int] = {}
    for r in rows:
        states[r.state] = states.get(r.state, 0) + 1
    return {"baking": len(baking), "states": states,
            "judged": {r.service: len(json.loads(r.analysis_log or "[]")) for r in rows}}


async def analysed(bot: LocalBot, config: ShipbotConfig, load: Load) -> None:
    """Wait until every canary is in an analysis step (``READY_SECONDS`` at the most)."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        counts = await canary_counts(bot, config, load)
        if counts["baking"] >= len(load.canaries) or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)


async def _serve(conn: Connection, load: Load) -> None:
    """Start the canaries, say ready once all are analysed; "start" and "end" mark the
    window (counts, and the profile between them); "stop" reports and ends."""
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    tmp = Path(tempfile.mkdtemp(prefix="shipbot-canary-ack-"))
    config = shipbot_config(load)
    try:
        bot = LocalBot(config, state_dir=tmp / "state", tick_seconds=1.0,
                       database_url=load.database or f"sqlite:///{tmp}/shipbot.db")
        async with bot:
            install_targets(bot, slow=set())
            await queue(bot, [Spec(name, "canary") for name in load.canaries])
            await analysed(bot, config, load)
            conn.send({"url": bot.url, "secret": bot.signing_secret})
            profiler, began = None, time.process_time()
            while (message := await asyncio.to_thread(conn.recv)) != "stop":
                counts = await canary_counts(bot, config, load)
                if message == "start":
                    profiler, began = start_profiler(load.profile), time.process_time()
                else:
                    counts["cpu_seconds"] = time.process_time() - began
                    stop_profiler(profiler, load.profile)
                conn.send(counts)
            states = await deployment_states(bot, load.services)
        conn.send({"states": states, "log": counter.seen.most_common(5)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def start_profiler(path: str | None) -> Any:
    """pyinstrument sampling this (the event loop's) thread, when a report is wanted."""
    if not path:
        return None
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    return profiler


def stop_profiler(profiler: Any, path: str | None) -> None:
    if profiler is not None and path:
        profiler.stop()
        Path(path).write_text(profiler.output_text(unicode=False, color=False))


def serve_canaries(conn: Connection, load: Load) -> None:
    """Child process entry point (spawned: nothing shared with the client's loop)."""
    asyncio.run(_serve(conn, load))


async def open_loop(client: httpx.AsyncClient, ready: dict[str, Any], texts: list[str],
                    rate: float) -> tuple[list[Sample], float]:
    """Send ``texts`` at ``rate`` a second, each at its own due time; each sample's
    latency counts from that due time. Also how late the client itself sent, at worst."""
    driver = SlackDriver(ready["url"], ready["secret"])
    await driver.aclose()  # only its request builder is used
    samples: list[Sample] = []
    tag = secrets.token_hex(4)

    async def one(due: float, text: str, trigger: str) -> None:
        body = driver.command_body(text, trigger_id=trigger)
        status, ack = await post_command(client, driver, body)
        samples.append(("deploy", time.perf_counter() - due, status, ack))

    tasks, late, t0 = [], 0.0, time.perf_counter() + 0.05
    for i, text in enumerate(texts):
        due = t0 + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        late = max(late, time.perf_counter() - due)
        tasks.append(asyncio.create_task(one(due, text, f"{tag}.{i}.{tag}")))
    await asyncio.gather(*tasks)
    return samples, late


def line(label: str, samples: list[Sample], late: float) -> str:
    ms = [s[1] * 1000 for s in samples]
    over = sum(1 for m in ms if m > 1000)
    return (f"{label:<22}{len(ms):>6}{pct(ms, .5):>9.1f}{pct(ms, .95):>9.1f}"
            f"{pct(ms, .99):>9.1f}{max(ms):>9.1f}{over:>7}{late * 1000:>11.1f}")


async def measure(app: str, load: Load, warm: list[str], texts: list[str],
                  rate: float) -> tuple[list[Sample], float, dict[str, Any]]:
    """One app in its own process: warm-up, then the window between "start" and "end"."""
    server = (Server(load, entry=serve_canaries) if app == "shipbot"
              else Server("bare", load.services, None, None))
    ready = await server.ready()
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        await open_loop(client, ready, warm, rate)
        before = await server.ask("start") if app == "shipbot" else {}
        samples, late = await open_loop(client, ready, texts, rate)
        after = await server.ask("end") if app == "shipbot" else {}
    report = await server.stop()
    return samples, late, {"before": before, "after": after, **report}


def report(args: argparse.Namespace, load: Load, n_warm: int, results: dict[str, Any]) -> None:
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"{args.rate:g} /deploy a second for {args.seconds:g} s, open loop, after "
          f"{args.warmup:g} s of warm-up; latency from each request's due time")
    print(f"{'':<22}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
          f"{'> 1 s':>7}{'sent late':>11}")
    print(line("bare Bolt ack", *results["bare"][:2]))
    samples, late, server = results["shipbot"]
    print(line(f"shipbot, {len(load.canaries)} canaries", samples, late))
    before, after = server["before"], server["after"]
    judged = [after["judged"][c] - before["judged"].get(c, 0) for c in after["judged"]]
    rolling = [c["states"].get(State.VERIFYING, 0) for c in (before, after)]
    print(f"canaries rolling out (verifying): {rolling[0]} at the window's start, "
          f"{rolling[1]} at its end (in an analysis step right then: {before['baking']}, "
          f"{after['baking']}; else shifting traffic); Prometheus judgements during it "
          f"{sum(judged)}, each canary {min(judged, default=0)}-{max(judged, default=0)}; "
          f"states at the end {after['states']}; Shipbot CPU in the window "
          f"{after['cpu_seconds']:.1f} s")
    acked = sum(1 for s in samples if s[2] == 200 and EXPECT["deploy"] in s[3])
    rows = sum(server["states"].values())
    print(f"answered 'on its way': {acked}/{len(samples)}; deployments of the /deploy "
          f"services in the DB: {rows} for {len(samples) + n_warm} sent, warm-up included "
          f"({'ok' if rows == len(samples) + n_warm else 'MISMATCH'}) {server['states']}")
    for kind, _, status, text in [s for s in samples if EXPECT["deploy"] not in s[3]][:3]:
        print(f"  unexpected {kind} reply ({status}): {text[:160]!r}")
    for text, count in server["log"]:
        print(f"  server log x{count}: {text}")
    ms = [s[1] * 1000 for s in samples]
    met = pct(ms, .99) < 100 and max(ms) <= 1000
    print(f"target (p99 < 100 ms, none over 1 s): {'met' if met else 'NOT met'}")


async def main(args: argparse.Namespace) -> None:
    n_warm, n = round(args.warmup * args.rate), round(args.seconds * args.rate)
    tag = secrets.token_hex(2)
    services = [f"svc{i}-{tag}" for i in range(-(-(n_warm + n) // len(ENVS)))]
    slots = [(s, e) for s in services for e in ENVS]
    random.Random(7).shuffle(slots)
    texts = [f"{s} {e} v1.0.{i} --reason \"bench\"" for i, (s, e) in enumerate(slots)]
    canaries = [f"canary{i}" for i in range(args.canaries)]
    with tempfile.TemporaryDirectory(prefix="shipbot-canary-ack-") as tmp, \
            running_world(Path(tmp), canaries=canaries, bad=[], flaky=[]) as world:
        load = Load(services, canaries, world, args.steps, args.interval,
                    args.database, args.profile)
        results = {app: await measure(app, load, texts[:n_warm], texts[n_warm:n_warm + n],
                                      args.rate) for app in ("bare", "shipbot")}
    report(args, load, n_warm, results)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canaries", type=int, default=50)
    parser.add_argument("--rate", type=float, default=50.0, help="/deploy requests a second")
    parser.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds at the rate first")
    parser.add_argument("--steps", type=int, default=4, help="canary analysis steps")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--database", help="Shipbot's DATABASE_URL (default: a temp SQLite)")
    parser.add_argument("--profile", help="write a pyinstrument profile of Shipbot's "
                        "process during the window to this file")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
