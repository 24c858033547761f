"""`/deploy` ack latency while an alert storm is recorded. Run by hand, not a test::

    .venv/bin/python bench/alert_storm.py [--payloads 4] [--alerts 2000] [--every 0.1]

Three runs in one invocation, each against a fresh Shipbot in its own (spawned) process
on a fresh SQLite database, timed over real HTTP on loopback by this process:
  * baseline: `/deploy` commands with no alerts arriving;
  * one transaction: ``--payloads`` Alertmanager deliveries of ``--alerts`` alerts each,
    sent at once, recorded the way Shipbot did before (the whole delivery in one gated
    transaction: the alert service's chunk set larger than any payload);
  * chunked: the same storm recorded as Shipbot does now (chunks of ``alerts.CHUNK``,
    or ``--chunk``);
and the storm alone both ways (no commands), for what chunking costs in recording time.
While the storm is recorded, a `/deploy` to a fresh slot is sent every ``--every``
seconds, one at a time; each waits for its ack (Slack gives up after 3 s). The table
shows the acks' p50/p99/max, how many missed 3 s, how long the storm took to record,
and checks that every command made exactly one deployment and every alert one row.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import func, select

from bot.config import ShipbotConfig, parse_config
from bot.devtools.driver import SlackDriver, sign
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.engine.alerts import CHUNK
from bot.store.models import AlertInstance, Deployment

SERVICES = 200
ENVS = ("dev", "staging", "production")
ONE_TRANSACTION = 10**9  # a chunk larger than any payload: the old behaviour
Sample = tuple[float, int, str]  # seconds, HTTP status, ack text


def bench_config() -> ShipbotConfig:
    deploy = {"provider": "command", "argv": [sys.executable, "-c", "pass"]}
    return parse_config({
        "poll_interval_seconds": 0.1,
        "environments": {"dev": {}, "staging": {}, "production": {"approval": False}},
        "services": {f"svc{i}": {"channel": f"#deploys-{i % 10}", "deploy": deploy}
                     for i in range(SERVICES)},
        "alerts": {"default_channel": "#alerts"},
    })


async def _serve(conn: Connection, chunk: int) -> None:
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)  # ticks cancelled at stop
    tmp = Path(tempfile.mkdtemp(prefix="shipbot-storm-"))
    try:
        # rate_limits=False: this measures the bot's own throughput under a storm; with Slack's
        # per-channel pacing it would measure the fake's 1 post/s instead.
        async with FakeSlack(rate_limits=False) as slack:
            bot = LocalBot(bench_config(), state_dir=tmp / "state", fake_slack=slack,
                           database_url=f"sqlite:///{tmp}/shipbot.db")
            async with bot:
                bot.bot.alerts.chunk = chunk
                conn.send({"url": bot.url, "secret": bot.signing_secret,
                           "token": bot.webhook_token})
                await asyncio.to_thread(conn.recv)
                async with bot.bot.sessions() as session:
                    deps = (await session.exec(select(func.count()).select_from(
                        Deployment))).one()
                    alerts = (await session.exec(select(func.count()).select_from(
                        AlertInstance))).one()
        conn.send({"deployments": deps, "alerts": alerts})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def serve(conn: Connection, chunk: int) -> None:
    """Child process entry point: serve until the parent says stop."""
    asyncio.run(_serve(conn, chunk))


def payload(n: int, alerts: int) -> dict[str, Any]:
    """One Alertmanager group (version 4 body) of ``alerts`` firing alerts for svc``n``."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    labels = {"alertname": f"Storm{n}", "service": f"svc{n}", "env": "staging"}
    return {
        "version": "4", "groupKey": f'{{}}:{{alertname="Storm{n}"}}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "shipbot", "groupLabels": {"alertname": f"Storm{n}"},
        "commonLabels": labels, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "alerts": [{"status": "firing", "labels": {**labels, "pod": f"svc{n}-{i}"},
                    "annotations": {"summary": "5xx above 5%"}, "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom/graph",
                    "fingerprint": f"{n:04x}{i:012x}"} for i in range(alerts)],
    }


async def deploy_until(client: httpx.AsyncClient, driver: SlackDriver, slots: list[str],
                       storm: asyncio.Future[Any] | None, count: int,
                       every: float) -> list[Sample]:
    """One `/deploy` at a time, every ``every`` s, until the storm is recorded (or
    ``count`` were sent without a storm); each to a slot of its own."""
    samples: list[Sample] = []
    for slot in slots:
        if (storm is not None and storm.done()) or (storm is None and len(samples) >= count):
            break
        body = driver.command_body(f"{slot} v1.0.0")
        headers = {**sign(driver.secret, body), "Content-Type": "application/x-www-form-urlencoded"}
        started = time.perf_counter()
        resp = await client.post(driver.url, content=body, headers=headers)
        took = time.perf_counter() - started
        text = resp.json().get("text", "") if resp.status_code == 200 and resp.content else ""
        samples.append((took, resp.status_code, text or resp.text[:160]))
        await asyncio.sleep(max(0.0, every - took))
    return samples


async def measure(label: str, chunk: int, args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(theirs, chunk), daemon=True)
    proc.start()
    theirs.close()
    ready = await asyncio.to_thread(ours.recv)
    driver = SlackDriver(ready["url"], ready["secret"])
    slots = [f"svc{i} {env}" for env in ENVS for i in range(SERVICES)]
    async with httpx.AsyncClient(timeout=120) as client:
        hooks = {"Authorization": f"Bearer {ready['token']}"}
        began, storm = time.perf_counter(), None
        if args.payloads:
            storm = asyncio.ensure_future(asyncio.gather(*(
                client.post(f"{ready['url']}/webhooks/alertmanager", headers=hooks,
                            json=payload(n, args.alerts)) for n in range(args.payloads))))
        samples = await deploy_until(client, driver, slots, storm, args.baseline, args.every) \
            if args.commands else []
        answers = await storm if storm is not None else []
        recorded_in = time.perf_counter() - began
    await driver.aclose()
    ours.send("stop")
    server = await asyncio.to_thread(ours.recv)
    await asyncio.to_thread(proc.join, 20)
    if proc.is_alive():
        proc.terminate()
    return {"label": label, "samples": samples, "server": server, "took": recorded_in,
            "hooks": [r.status_code for r in answers]}


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    print(f"\n/deploy ack latency while {args.payloads} x {args.alerts}-alert payloads are "
          f"recorded (SQLite, one /deploy every {args.every:.2f} s)")
    print(f"{'':<28}{'n':>5}{'p50':>11}{'p99':>11}{'max':>11}{'>=3s':>6}{'not 200':>9}"
          f"{'storm':>9}")
    bad = 0
    for r in results:
        ms = [s[0] * 1000 for s in r["samples"]]
        late = sum(m >= 3000 for m in ms)
        wrong = [s for s in r["samples"] if s[1] != 200 or "is on its way" not in s[2]]
        failed = len(wrong)
        storm = f"{r['took']:7.1f} s" if r["hooks"] else f"{'-':>9}"
        times = (f"{pct(ms, .5):>8.0f} ms{pct(ms, .99):>8.0f} ms{max(ms):>8.0f} ms" if ms
                 else f"{'-':>11}{'-':>11}{'-':>11}")
        print(f"{r['label']:<28}{len(ms):>5}{times}{late:>6}{failed:>9}{storm}")
        for took, status, text in wrong[:2]:
            print(f"{'':<28}after {took:.1f} s, HTTP {status}: {text[:90]!r}")
        alerts_ok = r["server"]["alerts"] == args.alerts * len(r["hooks"])
        deps_ok = r["server"]["deployments"] == len(r["samples"])
        hooks_ok = all(code == 200 for code in r["hooks"])
        print(f"{'':<28}deployments {r['server']['deployments']} for {len(ms)} commands"
              f" ({'ok' if deps_ok else 'MISMATCH'}), alert rows {r['server']['alerts']}"
              f" ({'ok' if alerts_ok else 'MISMATCH'}), webhooks {r['hooks'] or '-'}")
        bad += failed + (not alerts_ok) + (not deps_ok) + (not hooks_ok)
    print("(>=3s: acks Slack would have shown as an error; storm: time to record all of it)")
    return 1 if bad else 0


async def run(args: argparse.Namespace) -> int:
    chunk = args.chunk
    runs = [("baseline (no alerts)", chunk, 0, True),
            ("storm, one transaction", ONE_TRANSACTION, args.payloads, True),
            (f"storm, chunks of {chunk}", chunk, args.payloads, True),
            ("storm alone, one transaction", ONE_TRANSACTION, args.payloads, False),
            (f"storm alone, chunks of {chunk}", chunk, args.payloads, False)]
    results = []
    for label, chunk, payloads, commands in runs:
        results.append(await measure(label, chunk, argparse.Namespace(
            **{**vars(args), "payloads": payloads, "commands": commands})))
    return report(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payloads", type=int, default=4, help="deliveries sent at once")
    parser.add_argument("--alerts", type=int, default=2000, help="alerts per delivery")
    parser.add_argument("--every", type=float, default=0.1, help="seconds between commands")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="alerts per transaction")
    parser.add_argument("--baseline", type=int, default=40, help="commands in the baseline")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
