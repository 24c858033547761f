"""Slash-command acks at the edge: Shipbot next to a bare Bolt app, driven by wrk and by
a Python client, with the mix and with each kind of request alone.

    PYTHONPATH=. .venv/bin/python bench/edge.py [--seconds 4] [--requests 600]
        [--concurrency 20] [--clients wrk,python] [--scenarios mix,deploy,status,invalid]

Needs wrk (``apt-get install -y wrk``; ``--clients python`` runs without it). The mix is
80 % ``/deploy <svc> <env> <version>`` over 300 services, 10 % ``/deploy status``, 10 %
an unknown service. Both apps run as in bench/ack_latency.py, each in its own spawned
process: the bare app acks every ``/deploy`` and does nothing else; Shipbot runs its
whole engine (runner, notifier, scheduler). Every run gets a fresh server, so each deploy
takes a free slot (service, environment) and is answered "on its way".

wrk sends pre-signed requests from a file (bench/wrk_load.py), for ``--seconds``;
the Python client (httpx) sends ``--requests`` and reports each kind of a mix apart.
Printed per client, scenario and app: requests/s, p50, p99, max, and Shipbot's
requests/s over the bare app's in the same run (the number that counts on a shared
machine), then what the replies said and the deployment rows Shipbot holds after.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing
import random
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.ack_latency import ENVS, EXPECT, fire, pct, serve
from bench.wrk_load import run_wrk, write_requests
from bot.devtools.driver import SlackDriver

KINDS = ("deploy", "status", "invalid")
MIX = ("deploy",) * 8 + ("status", "invalid")
WARMUP = 40  # unmeasured requests per server (a tenth of them deploys, on their own slots)


@dataclass
class Run:
    """One client's run of one scenario against one app."""

    n: int
    seconds: float
    p50: float
    p99: float
    max: float
    errors: int = 0
    replies: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, list[float]] = field(default_factory=dict)  # ms by kind (Python client)
    rows: int | None = None  # Shipbot's deployment rows after the run
    acked: int = 0  # deploys answered "on its way", warm-up included
    cpu_ms: float = 0.0  # the server's CPU per request answered (warm-up included)

    @property
    def rate(self) -> float:
        return self.n / self.seconds


class Plans:
    """Request texts; every deploy goes to a slot no earlier deploy of this server used."""

    def __init__(self, services: list[str], seed: int = 7) -> None:
        self.services, self.rng = services, random.Random(seed)
        self.slots = [(s, e) for s in services for e in ENVS]
        self.rng.shuffle(self.slots)
        self.used = 0

    def fresh(self) -> None:
        """A new server: every slot is free again."""
        self.used = 0

    def text(self, kind: str) -> str:
        if kind == "status":
            return "status"
        if kind == "invalid":
            return f"nosuch-{self.rng.randrange(10**6)} staging v1"  # each a new name
        service, env = self.slots[self.used % len(self.slots)]  # past the end: "busy"
        self.used += 1
        return f"{service} {env} v1.0.{self.rng.randrange(1000)}"

    def kinds(self, scenario: str, n: int) -> list[str]:
        if scenario != "mix":
            return [scenario] * n
        kinds = [MIX[i % len(MIX)] for i in range(n)]
        self.rng.shuffle(kinds)
        return kinds

    def requests(self, scenario: str, n: int) -> list[tuple[str, str]]:
        return [(kind, self.text(kind)) for kind in self.kinds(scenario, n)]


class Server:
    """An app in its own spawned process: ``entry(conn, *args)``, by default
    bench/ack_latency.py's ``serve``, which answers "stop" with its report."""

    def __init__(self, *args: Any, entry: Callable[..., None] = serve) -> None:
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        self.conn = ours
        self.proc = multiprocessing.get_context("spawn").Process(
            target=entry, args=(theirs, *args), daemon=True)
        self.proc.start()
        theirs.close()

    async def ready(self) -> dict[str, Any]:
        return dict(await asyncio.to_thread(self.conn.recv))

    async def ask(self, message: str) -> dict[str, Any]:
        self.conn.send(message)
        return dict(await asyncio.to_thread(self.conn.recv))

    async def stop(self) -> dict[str, Any]:
        report = await self.ask("stop")
        await asyncio.to_thread(self.proc.join, 20)
        if self.proc.is_alive():
            self.proc.terminate()
        return dict(report)


def free_slots(plans: Plans, scenario: str, n: int) -> int:
    """How many requests of ``scenario`` take no slot a deploy took before."""
    share = {"mix": 0.8, "deploy": 1.0}.get(scenario)
    left = len(plans.slots) - plans.used
    return n if share is None else min(n, int(left / share) - len(MIX))


async def one_run(app: str, client: str, scenario: str, plans: Plans,
                  args: argparse.Namespace, workdir: Path) -> Run:
    """Start ``app``, warm it up, measure one scenario with one client, stop it."""
    plans.fresh()
    profile = args.profile and f"{args.profile}-{client}-{scenario}.txt"
    database = args.new_database() if app == "shipbot" and args.new_database else None
    server = Server(app, plans.services, database, profile if app == "shipbot" else None,
                    args.targets == "memory")
    ready = await server.ready()
    limits = httpx.Limits(max_connections=args.concurrency,
                          max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        warm, _ = await fire(http, ready, plans.requests("mix", WARMUP), args.concurrency)
        if client == "wrk":
            run = await asyncio.to_thread(wrk_run, app, ready, scenario, plans, args, workdir)
        else:
            n = free_slots(plans, scenario, args.requests)
            if n < args.requests:
                raise SystemExit(f"--requests {args.requests}: only {n} free slots left")
            samples, wall = await fire(http, ready, plans.requests(scenario, n),
                                       args.concurrency)
            run = python_run(samples, wall)
    report = await server.stop()
    run.cpu_ms = report["cpu_seconds"] * 1000 / (run.n + WARMUP)
    if app == "shipbot":
        run.rows = sum(report["states"].values())
        run.acked = run.replies.get("deploy", 0) + sum(
            1 for kind, _, _, text in warm if kind == "deploy" and EXPECT[kind] in text)
    return run


def wrk_run(app: str, ready: dict[str, Any], scenario: str, plans: Plans,
            args: argparse.Namespace, workdir: Path) -> Run:
    """Enough signed requests that wrk never runs out within ``--seconds``."""
    driver = SlackDriver(ready["url"], ready["secret"])
    budget = int(args.max_rate * args.seconds)
    if app == "shipbot":  # the bare app acks a deploy to a slot in use all the same
        budget = free_slots(plans, scenario, budget)
    bodies = [driver.command_body(text) for _, text in plans.requests(scenario, budget)]
    path = workdir / f"requests-{secrets.token_hex(4)}.txt"
    write_requests(path, ready["secret"], bodies)
    result = run_wrk(driver.url, path, workdir, seconds=args.seconds,
                     connections=args.concurrency)
    if result.wrapped:
        print(f"  warning: wrk ran out of signed requests for {app} {scenario} "
              f"({result.wrapped} sent again: replays, or deploys to a slot in use)")
    return Run(result.requests, result.seconds, result.p50_ms, result.p99_ms, result.max_ms,
               result.errors, result.replies)


def python_run(samples: list[tuple[str, float, int, str]], wall: float) -> Run:
    ms = [s[1] * 1000 for s in samples]
    replies: collections.Counter[str] = collections.Counter()
    for kind, _, status, text in samples:
        replies[kind if status == 200 and EXPECT[kind] in text else f"unexpected {kind}"] += 1
    kinds = {kind: [s[1] * 1000 for s in samples if s[0] == kind] for kind in KINDS}
    return Run(len(ms), wall, pct(ms, 0.5), pct(ms, 0.99), max(ms), replies=dict(replies),
               kinds=kinds)


def line(label: str, run: Run, bare: Run | None = None) -> str:
    ratio = f"{run.rate / bare.rate:6.2f}x" if bare else f"{'':>7}"
    cpu = f"{run.cpu_ms:7.2f}" + (f" ({run.cpu_ms / bare.cpu_ms:4.1f}x)" if bare else " " * 7)
    rows = f"  rows {run.rows} (acked {run.acked})" if run.rows is not None else ""
    return (f"{label:<28}{run.n:>6}{run.rate:>8.0f}{run.p50:>9.1f}{run.p99:>9.1f}"
            f"{run.max:>9.1f}{ratio}{cpu}  {dict(sorted(run.replies.items()))}"
            + (f"  errors {run.errors}" if run.errors else "") + rows)


async def main(args: argparse.Namespace) -> None:
    tag = secrets.token_hex(2)
    plans = Plans([f"svc{i}-{tag}" for i in range(args.services)])
    print(f"{'client scenario app':<28}{'n':>6}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'max ms':>9}{'ratio':>7}{'CPU ms/req':>14}  replies")
    with tempfile.TemporaryDirectory(prefix="shipbot-edge-") as tmp:
        for client in args.clients:
            for scenario in args.scenarios:
                bare = await one_run("bare", client, scenario, plans, args, Path(tmp))
                ours = await one_run("shipbot", client, scenario, plans, args, Path(tmp))
                print(line(f"{client} {scenario} bare", bare))
                print(line(f"{client} {scenario} shipbot", ours, bare), flush=True)
                for kind, ms in ours.kinds.items():
                    if ms and scenario == "mix":
                        print(f"{'':<4}{kind:<24}{len(ms):>6}{'':>8}{pct(ms, 0.5):>9.1f}"
                              f"{pct(ms, 0.99):>9.1f}{max(ms):>9.1f}")
    print("ratio: Shipbot's requests/s over the bare Bolt app's, same client and scenario. "
          "CPU ms/req: the server process's CPU per request (its threads, background work "
          "and warm-up included; steadier than req/s on a shared machine), and over the bare's. "
          "rows: deployments Shipbot holds after the run; acked: deploys answered 'on its "
          "way' (wrk stops with up to --concurrency requests unanswered, which may add rows)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    listed: Callable[[str], list[str]] = lambda text: text.split(",")  # noqa: E731
    parser.add_argument("--seconds", type=int, default=4, help="each wrk run")
    parser.add_argument("--requests", type=int, default=600, help="each Python client run")
    parser.add_argument("--concurrency", type=int, default=20, help="connections")
    parser.add_argument("--services", type=int, default=300)
    parser.add_argument("--max-rate", type=float, default=3000,
                        help="requests/s signed ahead per wrk second (more than any app does)")
    parser.add_argument("--profile", help="write a pyinstrument profile of each Shipbot run "
                        "to PROFILE-<client>-<scenario>.txt")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite",
                        help="Shipbot's database: a fresh one for each run")
    parser.add_argument("--targets", choices=("command", "memory"), default="command",
                        help="Shipbot's deploy targets: the command provider (two Python "
                        "processes per deploy) or in memory (what Shipbot itself costs)")
    parser.add_argument("--clients", type=listed, default=["wrk", "python"])
    parser.add_argument("--scenarios", type=listed, default=["mix", *KINDS])
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    args.new_database = None
    if args.db == "sqlite":
        asyncio.run(main(args))
        return
    from tests.postgres_fixture import create_database, running_postgres
    with running_postgres() as server:
        args.new_database = lambda: create_database(server)
        asyncio.run(main(args))


if __name__ == "__main__":
    run(parse_args())
