"""Ack latency of Shipbot's ``/deploy`` next to a bare Bolt app, over real HTTP on loopback.

Run by hand, not a test: ``.venv/bin/python bench/ack_latency.py --help``. Each server
runs in its own (spawned) process, so it never shares an event loop with the one
``httpx.AsyncClient`` that times every request. Shipbot runs with its whole background
engine (runner ticks, deploy subprocesses, notifier posting to the fake Slack), as in
production: the ack path must not wait for any of it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import math
import multiprocessing
import random
import secrets
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncAck, AsyncApp
from sqlmodel import col, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bot.config import parse_config
from bot.devtools.driver import SlackDriver, sign
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.slack.app import build_web_client
from bot.store.models import Deployment

ENVS = ("dev", "staging", "production")
# Out of every 20 requests: 16 deploys, 1 `status`, 1 `status <service>`, 2 unknown services.
MIX = ("deploy",) * 16 + ("status", "status-one", "invalid", "invalid")
EXPECT = {"deploy": "is on its way", "status": "What runs where",
          "status-one": "What runs where", "invalid": "Unknown service"}
Sample = tuple[str, float, int, str]  # kind, seconds, HTTP status, ack text
Measured = tuple[list[Sample], float, dict[str, Any]]  # samples, wall seconds, server report


def bench_settings(services: list[str]) -> dict[str, Any]:
    """Many services with a cheap ``command`` deploy step (no CI), channels shared by ten;
    the raw config, for a bench that adds to it (bench/canary_ack.py)."""
    deploy = {"provider": "command", "argv": [sys.executable, "-c", "pass"]}
    return {
        "poll_interval_seconds": 0.1,
        # No approval: every deploy goes straight through the engine to its subprocess.
        "environments": {"dev": {}, "staging": {}, "production": {"approval": False}},
        "services": {name: {"channel": f"#deploys-{i % 10}", "deploy": deploy}
                     for i, name in enumerate(services)},
    }


class LogCounter(logging.Handler):
    """Counts the server's warnings and errors by logger and message template."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        why = f" [{type(exc).__name__}: {str(exc)[:120]}]" if exc else ""
        first = str(record.msg).splitlines()[0][:70]
        self.seen[f"{record.levelname} {record.name}: {first}{why}"] += 1


async def _serve_bare(conn: Connection, before_response: bool) -> None:
    """A Bolt app whose /deploy listener only acks; same client setup and adapter."""
    secret = secrets.token_hex(16)
    async with FakeSlack() as slack:
        app = AsyncApp(client=build_web_client("xoxb-local-test", slack.base_url),
                       signing_secret=secret, process_before_response=before_response)

        @app.command("/deploy")
        async def only_ack(ack: AsyncAck) -> None:
            await ack()

        handler = AsyncSlackRequestHandler(app)

        async def events(request: Request) -> Response:
            return await handler.handle(request)

        asgi = Starlette(routes=[Route("/slack/events", events, methods=["POST"])])
        server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=0,
                                               log_level="warning"))  # as LocalBot serves
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                await task  # surfaces the start-up error
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        conn.send({"url": f"http://127.0.0.1:{port}", "secret": secret})
        began = time.process_time()
        await asyncio.to_thread(conn.recv)
        cpu = time.process_time() - began
        server.should_exit = True
        await task
    conn.send({"cpu_seconds": cpu})


async def deployment_states(bot: LocalBot, services: list[str]) -> dict[str, int]:
    """How many deployments of ``services`` the bot's database holds, by state."""
    async with bot.bot.sessions() as session:
        rows = (await session.exec(
            select(Deployment.state, func.count())
            .where(col(Deployment.service).in_(services))
            .group_by(Deployment.state))).all()
    return dict(rows)


async def _serve_shipbot(conn: Connection, services: list[str], database: str | None,
                         memory_targets: bool = False) -> None:
    """A LocalBot with ``services``; reports its deployment rows by state when told to stop."""
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    tmp = Path(tempfile.mkdtemp(prefix="shipbot-bench-"))
    try:
        bot = LocalBot(parse_config(bench_settings(services)), state_dir=tmp / "state",
                       database_url=database or f"sqlite:///{tmp}/shipbot.db")
        async with bot:
            if memory_targets:
                from bench.engine_load import install_targets
                install_targets(bot, slow=set())
            conn.send({"url": bot.url, "secret": bot.signing_secret})
            began = time.process_time()  # this process's CPU, its threads' included
            await asyncio.to_thread(conn.recv)
            cpu = time.process_time() - began
            states = await deployment_states(bot, services)
        conn.send({"states": states, "log": counter.seen.most_common(5), "cpu_seconds": cpu})
    finally:  # detached deploy runners may still be writing their result: sweep twice
        shutil.rmtree(tmp, ignore_errors=True)
        await asyncio.sleep(2)
        shutil.rmtree(tmp, ignore_errors=True)


def serve(conn: Connection, target: str, services: list[str], database: str | None,
          profile: str | None = None, memory_targets: bool = False) -> None:
    """Child process entry point: serve ``target`` until the parent says stop. With
    ``profile``, Shipbot's process is sampled by pyinstrument (``pip install
    pyinstrument``) and the report written there: where the event loop's time goes.
    ``memory_targets``: every deploy target in memory (bench/engine_load.py) instead of
    the ``command`` provider, whose two Python processes per deploy compete for the cores."""
    if target == "shipbot" and profile:
        from pyinstrument import Profiler
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        with profiler:
            asyncio.run(_serve_shipbot(conn, services, database, memory_targets))
        Path(profile).write_text(profiler.output_text(unicode=False, color=False,
                                                      show_all=False))
    elif target == "shipbot":
        asyncio.run(_serve_shipbot(conn, services, database, memory_targets))
    else:
        asyncio.run(_serve_bare(conn, before_response=target == "bare-pbr"))


async def post_command(client: httpx.AsyncClient, driver: SlackDriver,
                       body: str) -> tuple[int, str]:
    """POST one slash-command ``body``, signed now: the HTTP status and the ack's text
    (the start of the body when it is not a JSON ack)."""
    headers = {**sign(driver.secret, body), "Content-Type": "application/x-www-form-urlencoded"}
    resp = await client.post(driver.url, content=body, headers=headers)
    ack = resp.json().get("text", "") if resp.content and resp.status_code == 200 else ""
    return resp.status_code, ack or resp.text[:200]


async def fire(client: httpx.AsyncClient, ready: dict[str, Any],
               requests: list[tuple[str, str]], concurrency: int) -> tuple[list[Sample], float]:
    """Send ``requests`` (kind, text) with ``concurrency`` workers; time each until its ack."""
    driver = SlackDriver(ready["url"], ready["secret"])
    await driver.aclose()  # only its request builder is used: one shared client for all
    pending, samples = iter(requests), []

    async def worker() -> None:
        for kind, text in pending:
            started = time.perf_counter()
            status, ack = await post_command(client, driver, driver.command_body(text))
            samples.append((kind, time.perf_counter() - started, status, ack))

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - began


def plan(n: int, rng: random.Random, deploys: collections.deque[tuple[str, str]],
         services: list[str]) -> list[tuple[str, str]]:
    """``n`` requests in the MIX proportions, shuffled; each deploy takes a fresh slot."""
    kinds = [MIX[i % len(MIX)] for i in range(n)]
    rng.shuffle(kinds)
    texts = {"status": lambda: "status",
             "status-one": lambda: f"status {rng.choice(services)}",
             "invalid": lambda: "nosuch-service staging v1",
             "deploy": lambda: "{} {} v1.0.{} --reason \"bench\"".format(
                 *deploys.popleft(), rng.randrange(1000))}
    return [(kind, texts[kind]()) for kind in kinds]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile of non-empty ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def row(label: str, samples: list[Sample], wall: float | None) -> str:
    ms = [s[1] * 1000 for s in samples]
    rate = f"{len(ms) / wall:8.0f}" if wall else f"{'':>8}"
    return (f"{label:<22}{len(ms):>6}{pct(ms, 0.5):>9.1f} ms{pct(ms, 0.99):>8.1f} ms"
            f"{max(ms):>8.1f} ms{rate}")


async def measure(target: str, client: httpx.AsyncClient, args: argparse.Namespace,
                  services: list[str], plans: list[list[tuple[str, str]]]) -> Measured:
    """Start ``target`` in its own process, fire the warm-up then the measured plan at it."""
    ours, theirs = multiprocessing.get_context("spawn").Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=serve, args=(theirs, target, services, args.database, args.profile),
        daemon=True)
    proc.start()
    theirs.close()
    try:
        ready = await asyncio.to_thread(ours.recv)
        for warm in plans[:-1]:
            await fire(client, ready, warm, args.concurrency)
        samples, wall = await fire(client, ready, plans[-1], args.concurrency)
        ours.send("stop")
        report = await asyncio.to_thread(ours.recv)
    except EOFError:
        raise SystemExit(f"the {target} server process died; its traceback is above") from None
    await asyncio.to_thread(proc.join, 20)
    if proc.is_alive():  # a stuck event-loop teardown must not hang the benchmark
        proc.terminate()
    return samples, wall, report


def report(args: argparse.Namespace, results: dict[str, Measured], deploys_sent: int) -> int:
    """Print the table and the correctness checks; the exit status says if all passed."""
    db = "PostgreSQL" if (args.database or "").startswith("postgres") else "SQLite"
    warm = f", after {args.warmup} warm-up requests" if args.warmup else ""
    print(f"\nack latency over loopback, N={args.requests} C={args.concurrency} ({db}){warm}")
    print(f"{'':<22}{'n':>6}{'p50':>12}{'p99':>11}{'max':>11}{'req/s':>8}")
    print(row("bare Bolt ack", *results["bare"][:2]))
    print(row("bare Bolt ack (pbr)", *results["bare-pbr"][:2]))
    shipbot, wall, server = results["shipbot"]
    print(row("shipbot (all kinds)", shipbot, wall))
    for kind, label in (("deploy",) * 2, ("status",) * 2, ("status-one", "status <svc>"),
                        ("invalid",) * 2):
        print(row(f"shipbot {label}", [s for s in shipbot if s[0] == kind], None))
    print("(pbr: process_before_response=True, which skips Bolt's 10 ms ack polling)")
    failed = 0
    for target, (samples, _, _) in results.items():
        bad = collections.Counter(s[2] for s in samples if s[2] != 200)
        failed += sum(bad.values())
        print(f"{target}: {len(samples) - sum(bad.values())}/{len(samples)} acks 200"
              + (f"  NOT 200: {dict(bad)}" if bad else ""))
    late = sum(1 for s in shipbot if s[1] >= 3.0)
    print(f"shipbot acks at or over Slack's 3 s limit: {late}")
    wrong = [s for s in shipbot if EXPECT[s[0]] not in s[3]]
    print(f"shipbot replies with the expected text: {len(shipbot) - len(wrong)}/{len(shipbot)}")
    for kind, _, status, text in wrong[:3]:
        print(f"  unexpected {kind} reply ({status}): {text[:160]!r}")
    rows = sum(server["states"].values())
    print(f"deployment rows: {rows} for {deploys_sent} deploy commands "
          f"({'ok' if rows == deploys_sent else 'MISMATCH'}); at stop: {server['states']}")
    for line, count in server["log"]:
        print(f"  server log x{count}: {line}")
    return 0 if not failed and not wrong and rows == deploys_sent else 1


async def run(args: argparse.Namespace) -> int:
    rng, tag = random.Random(7), secrets.token_hex(2)
    counts = [args.warmup, args.requests] if args.warmup else [args.requests]
    n_deploys = sum(1 for k in counts for i in range(k) if MIX[i % len(MIX)] == "deploy")
    services = [f"svc{i}-{tag}" for i in range(math.ceil(n_deploys / len(ENVS)))]
    slots = collections.deque((s, e) for s in services for e in ENVS)
    # One plan for all three apps (the bare ones ack anything): each deploy slot used once.
    plans = [plan(k, rng, slots, services) for k in counts]
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        results = {target: await measure(target, client, args, services, plans)
                   for target in ("bare", "bare-pbr", "shipbot")}
    return report(args, results, n_deploys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="measured requests per app")
    parser.add_argument("--concurrency", type=int, default=20, help="requests in flight")
    parser.add_argument("--database", help="Shipbot's DATABASE_URL (default: a temp SQLite)")
    parser.add_argument("--profile", help="write a pyinstrument profile of Shipbot's "
                        "process to this file")
    parser.add_argument("--warmup", type=int, nargs="?", const=50, default=0,
                        help="unmeasured requests first (default 50 when given alone)")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
