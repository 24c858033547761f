"""Alert-thread latency over real HTTP on loopback. Run by hand, not a test::

    .venv/bin/python bench/alert_to_thread.py [--services 150] [--alerts 300]
                                              [--concurrency 5] [--tick 1.0]

Measures, with the clock both processes share (CLOCK_MONOTONIC):
  * webhook → root: from sending an Alertmanager webhook to the root message's
    ``chat.postMessage`` arriving at the fake Slack Web API;
  * webhook → suspect: to the suspect reply (the one with the buttons) arriving there;
  * click → target: from sending the signed "Roll back" ``block_actions`` to the deploy
    target's rollback being called.

Shipbot runs in its own (spawned) process with its whole engine: runner ticks, notifier,
the scheduler at production pace (``--tick``). The fake Slack (in this process) has no
post rate limit, so the numbers are Shipbot's own, not Slack's 1 message/s per channel.
The deploy target is an in-memory stand-in that records when it is called. Half of the
alerts (and of the clicks, one per service) go one at a time, half in bursts of
``--concurrency``; each waits for the previous one or burst to be answered, so this
measures latency rather than a backlog the benchmark builds itself (clicks wait until
the previous rollbacks have finished and been reported).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import multiprocessing
import shutil
import sys
import tempfile
import time
import types
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from bot.config import ShipbotConfig, parse_config
from bot.devtools.driver import SlackDriver, sign
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.fake_slack_channels import ChannelDirectory
from bot.devtools.local import LocalBot, invite_bot
from bot.slack.blocks_alerts import ALERT_ROLLBACK_ACTION
from integrations.base import JobSpec, RunState, RunStatus


def bench_config(services: int) -> ShipbotConfig:
    deploy = {"provider": "command", "argv": ["true"], "timeout_seconds": 60}
    return parse_config({
        "poll_interval_seconds": 0.1,
        "environments": {"staging": {}},
        "services": {f"svc{i}": {"channel": f"#bench-{i % 20}", "deploy": deploy}
                     for i in range(services)},
    })


class RecordingTarget:
    """Succeeds at once; remembers when each run started (the "target called" moment).
    Installed as the target and as its native rollback (``ServiceProviders.rollback``)."""

    def __init__(self, calls: list[tuple[str, str, str, float]]) -> None:
        self.calls = calls

    async def start(self, job: JobSpec) -> str:
        self.calls.append(("deploy", job.service, job.version, time.monotonic()))
        return job.key

    async def rollback(self, job: JobSpec) -> str:
        self.calls.append(("rollback", job.service, job.version, time.monotonic()))
        return job.key

    async def poll(self, run_id: str) -> RunStatus:
        return RunStatus(state=RunState.SUCCEEDED, exit_code=0, detail="exited with code 0")

    async def cancel(self, run_id: str) -> None:
        return None


async def _serve(conn: Connection, services: int, slack_url: str, tick: float) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="shipbot-alert-bench-"))
    calls: list[tuple[str, str, str, float]] = []
    try:
        # The fake Slack runs in the parent; its channel IDs are derived from names, so a
        # directory of our own maps them the same way.
        stub: Any = types.SimpleNamespace(base_url=slack_url, channels=ChannelDirectory())
        bot = LocalBot(bench_config(services), database_url=f"sqlite:///{tmp}/shipbot.db",
                       state_dir=tmp / "state", fake_slack=stub, tick_seconds=tick)
        async with bot:
            target = RecordingTarget(calls)
            for name, providers in list(bot.bot.providers.items()):
                bot.bot.providers[name] = replace(providers, target=target, rollback=target)
            conn.send({"url": bot.url, "secret": bot.signing_secret,
                       "token": bot.webhook_token})
            await asyncio.to_thread(conn.recv)
        conn.send(calls)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def serve(conn: Connection, services: int, slack_url: str, tick: float) -> None:
    asyncio.run(_serve(conn, services, slack_url, tick))


def payload(i: int, service: str) -> bytes:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    labels = {"alertname": f"Bench{i}", "service": service, "env": "staging",
              "severity": "critical"}
    return json.dumps({
        "version": "4", "groupKey": f"bench:{i}", "status": "firing", "receiver": "shipbot",
        "groupLabels": labels, "commonLabels": labels, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": labels,
                    "annotations": {"summary": f"bench alert {i}"}, "startsAt": now,
                    "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "",
                    "fingerprint": f"{i:016x}"}],
    }).encode()


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]


def row(label: str, ms: list[float]) -> str:
    if not ms:
        return f"{label:<34}{0:>6}"
    return (f"{label:<34}{len(ms):>6}{pct(ms, 0.5):>9.1f} ms{pct(ms, 0.99):>8.1f} ms"
            f"{max(ms):>8.1f} ms")


async def gather_limited(jobs: list[Any], concurrency: int) -> None:
    pending = iter(jobs)

    async def worker() -> None:
        for job in pending:
            await job()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def wait_for(check: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the bot did not finish in time")
        await asyncio.sleep(0.05)


async def run(args: argparse.Namespace) -> int:
    services = [f"svc{i}" for i in range(args.services)]
    # rate_limits=False: this times alert-to-thread latency inside the bot; Slack's pacing
    # would add the fake's Retry-After waits to every number.
    async with FakeSlack(rate_limits=False) as slack:
        invite_bot(slack, bench_config(args.services))  # the bot runs in a child process
        ctx = multiprocessing.get_context("spawn")
        ours, theirs = ctx.Pipe()
        proc = ctx.Process(target=serve, args=(theirs, args.services, slack.base_url, args.tick))
        proc.start()
        theirs.close()
        ready = await asyncio.to_thread(ours.recv)
        driver = SlackDriver(ready["url"], ready["secret"], timeout=60,
                             channels=slack.channels, triggers=slack.issue_trigger)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            for version in ("v1", "v2"):  # every service gets a suspect and a version before
                await gather_limited([lambda s=s, v=version: driver.command(f"{s} staging {v}")
                                      for s in services], 20)
                await wait_for(lambda v=version: sum(
                    "is live on staging" in str(c.params.get("text")) and f" {v} " in
                    str(c.params.get("text")) for c in slack.calls) >= len(services))
            await asyncio.sleep(3)  # let the set-up's card updates drain first
            measured = await measure(args, slack, client, driver, ready, services)
        await driver.aclose()
        ours.send("stop")
        calls = await asyncio.to_thread(ours.recv)
        await asyncio.to_thread(proc.join, 30)
    return report(args, measured, calls)


class Watcher:
    """Follows the fake Slack's recorded calls incrementally: alert roots, suspect replies
    (with their button values) and "started rollback" replies, with arrival times."""

    def __init__(self, slack: FakeSlack) -> None:
        self.slack, self.seen = slack, 0
        self.root_of: dict[str, int] = {}
        self.root_at: dict[int, float] = {}
        self.suspect_at: dict[int, float] = {}
        self.button: dict[int, str] = {}
        self.started: set[int] = set()
        self.finished: set[int] = set()

    def scan(self) -> None:
        calls = self.slack.calls
        for call in calls[self.seen:]:
            text = str(call.params.get("text", ""))
            parent = self.root_of.get(str(call.params.get("thread_ts")), -1)
            if call.method != "chat.postMessage" or call.failed:
                continue
            if text.startswith("🔥 Bench") and not call.params.get("thread_ts"):
                index = int(text.split()[1][5:])
                self.root_of[str(call.response.get("ts"))], self.root_at[index] = index, call.at
            elif parent >= 0 and "Suspect deployment" in text:
                self.suspect_at[parent] = call.at
                for block in call.params.get("blocks") or []:
                    if block.get("type") == "actions":
                        self.button[parent] = block["elements"][0]["value"]
            elif parent >= 0 and "started rollback" in text:
                self.started.add(parent)
            elif parent >= 0 and "Rollback #" in text and " done" in text:
                self.finished.add(parent)
        self.seen = len(calls)

    async def until(self, done: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.scan()
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the bot did not answer in time")
            await asyncio.sleep(0.002)


async def measure(args: argparse.Namespace, slack: FakeSlack, client: httpx.AsyncClient,
                  driver: SlackDriver, ready: dict[str, Any], services: list[str]
                  ) -> tuple[Watcher, dict[int, float], dict[int, int], dict[str, float],
                             list[float]]:
    """Half of the alerts one at a time, half in bursts of ``--concurrency``; each waits
    until the previous one (or burst) has its suspect reply, so the numbers are latency,
    not a queue the benchmark itself builds up. Clicks likewise: one per service."""
    watch, sent, status, acks = Watcher(slack), {}, {}, []
    url = f"{ready['url']}/webhooks/alertmanager"
    headers = {"Authorization": f"Bearer {ready['token']}", "Content-Type": "application/json"}

    async def alert(i: int) -> None:
        body = payload(i, services[i % len(services)])
        sent[i] = time.monotonic()
        resp = await client.post(url, content=body, headers=headers)
        acks.append((time.monotonic() - sent[i]) * 1000)
        status[i] = resp.status_code

    half, size = args.alerts // 2, args.concurrency
    batches = [[i] for i in range(half)] + [
        list(range(n, min(n + size, args.alerts))) for n in range(half, args.alerts, size)]
    for batch in batches:
        await asyncio.gather(*(alert(i) for i in batch))
        await watch.until(lambda b=batch: all(i in watch.suspect_at for i in b))
    await asyncio.sleep(1.0)  # the link notes in the deployments' threads drain
    clicked: dict[str, float] = {}

    async def click(i: int) -> None:
        body = driver.action_payload(ALERT_ROLLBACK_ACTION, watch.button[i], user="U0BENCH")
        form = urlencode({"payload": json.dumps(body)})
        clicked[services[i]] = time.monotonic()
        await client.post(driver.url, content=form, headers={
            **sign(driver.secret, form), "Content-Type": "application/x-www-form-urlencoded"})

    firsts, half = list(range(len(services))), len(services) // 2
    clicks = [[i] for i in firsts[:half]] + [
        firsts[n:n + size] for n in range(half, len(firsts), size)]
    for batch in clicks:  # each waits until the previous rollbacks have finished
        await asyncio.gather(*(click(i) for i in batch))
        await watch.until(lambda b=batch: all(i in watch.finished for i in b))
        await asyncio.sleep(0.05)
    await asyncio.sleep(max(2.0, args.tick * 2))
    return watch, sent, status, clicked, acks


def report(args: argparse.Namespace, measured: tuple[Any, ...],
           calls: list[tuple[str, str, str, float]]) -> int:
    watch, sent, status, clicked, acks = measured
    half = args.alerts // 2
    to_root = {i: (watch.root_at[i] - sent[i]) * 1000 for i in sent if i in watch.root_at}
    to_suspect = {i: (watch.suspect_at[i] - sent[i]) * 1000 for i in sent
                  if i in watch.suspect_at}
    target_at = {service: at for kind, service, _, at in calls if kind == "rollback"}
    to_target = {s: (target_at[s] - t) * 1000 for s, t in clicked.items() if s in target_at}
    first_burst = len(clicked) // 2
    order = {s: n for n, s in enumerate(clicked)}
    print(f"\nalert threads over loopback: {args.alerts} alerts on {args.services} services, "
          f"half one at a time, half in bursts of {args.concurrency}; tick {args.tick:g}s; "
          "SQLite")
    print(f"{'':<34}{'n':>6}{'p50':>12}{'p99':>11}{'max':>11}")
    print(row("webhook HTTP response", acks))
    for label, values in (("webhook -> root message", to_root),
                          ("webhook -> suspect reply", to_suspect)):
        print(row(label, list(values.values())))
        print(row("  one at a time", [v for i, v in values.items() if i < half]))
        print(row(f"  bursts of {args.concurrency}", [v for i, v in values.items() if i >= half]))
    print(row("rollback click -> target called", list(to_target.values())))
    print(row("  one at a time", [v for s, v in to_target.items() if order[s] < first_burst]))
    print(row(f"  bursts of {args.concurrency}",
              [v for s, v in to_target.items() if order[s] >= first_burst]))
    bad = {code for code in status.values() if code != 200}
    missing = args.alerts - len(to_suspect)
    print(f"webhooks answered 200: {sum(c == 200 for c in status.values())}/{len(status)}; "
          f"threads without a suspect reply: {missing}; rollbacks that reached the target: "
          f"{len(target_at)}/{len(clicked)}")
    worst = [pct(list(v), 0.99) for v in (to_root.values(), to_suspect.values(),
                                          to_target.values()) if v]
    print(f"goal (p99 < 200 ms for all three): "
          f"{'met' if len(worst) == 3 and max(worst) < 200 else 'NOT met'}")
    return 0 if not bad and not missing and len(target_at) == len(clicked) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=150)
    parser.add_argument("--alerts", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=5)
    parser.add_argument("--tick", type=float, default=1.0, help="SHIPBOT_TICK_SECONDS")
    sys.exit(asyncio.run(run(parser.parse_args())))


if __name__ == "__main__":
    main()
