"""`/deploy status`, `history` and `audit` at the size of a large company, through the app.

Run by hand: ``PYTHONPATH=. .venv/bin/python bench/scale.py [--db sqlite|postgres|both]``.
It seeds 1,000 services x 4 environments with 200,000 past deployments (50 per slot, a
tenth of them failed) and two audit rows each, plus a quiet service deployed once before
all of them (its history and audit are the oldest rows), into SQLite and into a
throwaway PostgreSQL (started as the tests do: tests/postgres_fixture.py), then sends each
command as Slack would (signed HTTP to the running bot, whole engine running) and prints
milliseconds per command (median, p99, worst), the reply's length, and the query plans of
the SQL each command ran (captured from the engine, explained on the same database).

The baseline, measured in the same run: `/deploy help`, which reads nothing from the
database — the difference is what the data costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text

from bot.config import ShipbotConfig, parse_config
from bot.devtools.local import LocalBot
from tests.history_seed import insert_history
from tests.postgres_fixture import create_database, running_postgres

ENVS = ("dev", "staging", "perf", "production")
OUTCOMES = ("succeeded",) * 9 + ("failed",)
QUIET = "quiet"  # deployed once, before everything else: its rows are the oldest


def commands(services: int) -> dict[str, str]:
    svc = f"svc{services // 2:04}"
    return {"help (baseline)": "help", "status": "status", "status <svc>": f"status {svc}",
            "history <svc> <env>": f"history {svc} production", "audit <svc>": f"audit {svc}",
            "history <quiet> <env>": f"history {QUIET} production",
            "audit <quiet>": f"audit {QUIET}"}


def config(services: int) -> ShipbotConfig:
    deploy = {"provider": "command", "argv": [sys.executable, "-c", "pass"]}
    return parse_config({
        "environments": {env: {"approval": False} if env == "production" else {} for env in ENVS},
        "services": {name: {"channel": f"#deploys-{i % 50}", "deploy": deploy}
                     for i, name in enumerate([QUIET, *(f"svc{i:04}" for i in range(services))])},
    })


def rows(services: int, per_slot: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deployments in time order (ids grow with time, as in production) and their audit:
    the quiet service's first, then ``per_slot`` rounds over every other slot."""
    start = datetime(2025, 1, 1, tzinfo=UTC)
    deps: list[dict[str, Any]] = []
    audit: list[dict[str, Any]] = []

    def add(service: str, env: str, version: str) -> None:
        n = len(deps) + 1
        at = start + timedelta(minutes=n)
        state = OUTCOMES[(n * 7) % len(OUTCOMES)]
        deps.append({
            "id": n, "request_key": f"seed-{n}", "service": service, "env": env,
            "version": version, "requester": "U0BOB", "state": state,
            "channel": "C0DEPLOYS", "kind": "deploy", "row_version": 1,
            "created_at": at, "updated_at": at, "finished_at": at})
        for action, to in (("requested", "requested"), ("transition", state)):
            audit.append({"deployment_id": n, "service": service, "env": env,
                          "actor": "U0BOB", "action": action, "to_state": to,
                          "detail": "", "at": at})

    for env in ENVS:
        add(QUIET, env, "v0.0")
    for round_ in range(per_slot):
        for i in range(services):
            for env in ENVS:
                add(f"svc{i:04}", env, f"v{round_}.{i}")
    return deps, audit


async def seed(bot: LocalBot, services: int, per_slot: int) -> None:
    deps, audit = rows(services, per_slot)
    await insert_history(bot.bot.sessions, deps, audit)
    if bot.database_url.startswith("postgresql"):
        async with bot.bot.sessions() as session:
            await session.exec(text("ANALYZE"))  # type: ignore[call-overload]
            await session.commit()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(database_url: str, label: str, args: argparse.Namespace, tmp: Path) -> None:
    bot = LocalBot(config(args.services), database_url=database_url, state_dir=tmp / label,
                   tick_seconds=1.0)
    await bot.start()
    try:
        began = time.perf_counter()
        await seed(bot, args.services, args.per_slot)
        seeded = (args.services * args.per_slot + 1) * len(ENVS)
        print(f"\n## {label}: seeded {seeded:,} deployments in "
              f"{time.perf_counter() - began:.0f} s")
        captured: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            captured.append((statement, params))

        print("| command | median ms | p99 ms | worst ms | reply chars |")
        print("|---|---:|---:|---:|---:|")
        plans: dict[str, list[tuple[str, Any]]] = {}
        for name, command in commands(args.services).items():
            times, reply = [], ""
            for i in range(args.repeat + 3):
                captured.clear()
                if i == args.repeat + 2:
                    event.listen(bot.bot.db.sync_engine, "before_cursor_execute", capture)
                began = time.perf_counter()
                reply = (await bot.driver.command(command)).json()["text"]
                if i >= 3:  # warm-up excluded
                    times.append((time.perf_counter() - began) * 1000)
            event.remove(bot.bot.db.sync_engine, "before_cursor_execute", capture)
            plans[name] = [c for c in captured if c[0].lstrip().upper().startswith("SELECT")
                           and "GROUP BY deployment.state" not in c[0]]  # the runner's gauge
            print(f"| {name} | {statistics.median(times):.1f} | {pct(times, 0.99):.1f} | "
                  f"{max(times):.1f} | {len(reply)} |")
        await explain(bot, plans)
    finally:
        await bot.stop()


async def explain(bot: LocalBot, plans: dict[str, list[tuple[str, Any]]]) -> None:
    """The plan of every SELECT a command ran, on the same data."""
    sqlite = bot.database_url.startswith("sqlite")
    async with bot.bot.db.connect() as conn:
        for name, statements in plans.items():
            for statement, params in statements:
                if "inboundrequest" in statement or "FROM replica" in statement:
                    continue  # bookkeeping of the request, not the command
                prefix = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
                raw = await conn.exec_driver_sql(prefix + statement, params)
                lines = [" ".join(str(v) for v in row[-1:]) for row in raw.fetchall()]
                print(f"\n{name}: {' '.join(statement.split())[:140]}…")
                for line in lines[:8]:
                    print(f"    {line}")


async def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--per-slot", type=int, default=50, help="deployments per slot")
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.db in ("sqlite", "both"):
            await run(f"sqlite:///{tmp}/scale.db", "SQLite", args, Path(tmp))
        if args.db in ("postgres", "both"):
            with running_postgres() as server:
                await run(create_database(server), "PostgreSQL", args, Path(tmp))


if __name__ == "__main__":
    asyncio.run(main())
