"""`shipbot` command line: serve, console, config check/schema, audit export, judges
report, db."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from bot.config import ConfigError, ShipbotConfig, json_schema, load_config
from bot.mrkdwn import count
from bot.settings import Settings, SettingsError, load_settings
from bot.store.preflight import DatabaseUnavailable, check_database

if TYPE_CHECKING:
    import uvicorn


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="shipbot", description="Slack ChatOps deployments.")
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the bot (HTTP, or Socket Mode with SLACK_APP_TOKEN)")
    serve.add_argument("--config", type=Path, help="config file (default: $SHIPBOT_CONFIG)")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=3000)
    console = sub.add_parser("console", help="try Shipbot locally with no Slack workspace")
    console.add_argument("--config", type=Path, help="config file (default: shipbot.yml)")
    console.add_argument("--database", help="database URL (default: a SQLite file under .shipbot/)")
    config = sub.add_parser("config", help="check the config or print its JSON Schema")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("file", nargs="?", type=Path)
    config_sub.add_parser("schema", help="print the config's JSON Schema")
    audit = sub.add_parser("audit", help="export the audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    export = audit_sub.add_parser("export", help="write audit events as JSON lines")
    export.add_argument("--since", required=True, help="YYYY-MM-DD or an ISO 8601 time (UTC)")
    export.add_argument("--output", type=Path, help="file to write (default: stdout)")
    judges = sub.add_parser("judges", help="canary judges: what shadow metrics would have done")
    judges_sub = judges.add_subparsers(dest="judges_command", required=True)
    report = judges_sub.add_parser("report", help="each shadow metric's would-have-rolled-back "
                                   "rate beside what happened")
    report.add_argument("--days", type=int, default=30, help="look back this many days")
    db = sub.add_parser("db", help="schema migrations (serve and console migrate on start)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate $DATABASE_URL to the latest revision")
    revision = db_sub.add_parser("revision", help="write a new migration script")
    revision.add_argument("-m", "--message", required=True)
    revision.add_argument("--autogenerate", action="store_true",
                          help="fill it with what the models changed (diffed on a scratch DB)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "config":
            return _config(args)
        if args.command == "audit":
            return asyncio.run(_audit_export(load_settings(), args.since, args.output))
        if args.command == "db":
            return asyncio.run(_db(args))
        if args.command == "judges":
            return asyncio.run(_judges_report(load_settings(), args.days))
        settings = load_settings()
        config_path = args.config or settings.SHIPBOT_CONFIG
        config = _load(config_path)
        if args.command == "serve":
            settings.require_slack()
            asyncio.run(_serve(settings, config, args.host, args.port))
            return 0
        from bot.devtools.console import run_console

        return asyncio.run(run_console(settings, config, database=args.database,
                                       config_path=config_path))
    except SettingsError as exc:
        print(f"shipbot: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print("shipbot: the config has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except DatabaseUnavailable as exc:
        print(f"shipbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _load(path: Path) -> ShipbotConfig:
    """The config, refusing also the service names the command grammar reserves."""
    from commands.grammar import reserved_names

    config = load_config(path)
    problems = reserved_names(config.services)
    if problems:
        raise ConfigError(problems)
    return config


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    path = args.file or load_settings().SHIPBOT_CONFIG
    try:
        config = _load(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}" if not problem.startswith(str(path)) else problem)
        print(f"{count(len(exc.problems), 'problem')} found.", file=sys.stderr)
        return 1
    settings = load_settings()
    if settings.SLACK_BOT_TOKEN is not None:
        problems = asyncio.run(_check_groups(settings, config))
        for problem in problems:
            print(f"{path}: {problem}")
        if problems:
            print(f"{count(len(problems), 'problem')} found.", file=sys.stderr)
            return 1
    else:
        print("note: set SLACK_BOT_TOKEN to also check that user groups exist in Slack.",
              file=sys.stderr)
    print(f"{path}: OK — {len(config.services)} services, "
          f"environments {' → '.join(config.environment_order)}.")
    return 0


async def _check_groups(settings: Settings, config: ShipbotConfig) -> list[str]:
    """Every @group the config names must exist in the workspace."""
    import difflib

    from slack_sdk.errors import SlackApiError, SlackClientError

    from bot.engine.directory import UnknownGroup
    from bot.slack.app import build_web_client
    from bot.slack.directory import SlackDirectory

    assert settings.SLACK_BOT_TOKEN is not None
    client = build_web_client(settings.SLACK_BOT_TOKEN.get_secret_value(),
                              settings.SLACK_API_URL)
    directory = SlackDirectory(client)
    problems: list[str] = []
    try:
        await directory.handles()
    except (SlackApiError, SlackClientError, OSError) as exc:
        return [f"could not ask Slack for user groups ({type(exc).__name__}); check "
                "SLACK_BOT_TOKEN, SLACK_API_URL and the usergroups:read scope"]
    for where, principal in config.principals():
        if not principal.startswith("@"):
            continue
        try:
            await directory.members(principal)
        except UnknownGroup:
            known = [f"@{h}" for h in await directory.handles()]
            close = difflib.get_close_matches(principal, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append(f"{where}: unknown user group {principal}{hint}")
    return problems


async def _audit_export(settings: Settings, since: str, output: Path | None) -> int:
    """JSON lines for compliance: one audit event per line, oldest first."""
    from datetime import datetime

    from sqlmodel import col, select

    from bot.clock import as_utc
    from bot.store.db import create_engine, session_factory
    from bot.store.models import AuditEvent

    try:
        start = as_utc(datetime.fromisoformat(since))
    except ValueError:
        print(f"shipbot: --since '{since}' is not a date; use YYYY-MM-DD", file=sys.stderr)
        return 2
    await check_database(settings.DATABASE_URL, need_schema=True)
    engine = create_engine(settings.DATABASE_URL)
    try:
        async with session_factory(engine)() as session:
            rows = (await session.exec(select(AuditEvent).where(col(AuditEvent.at) >= start)
                                       .order_by(col(AuditEvent.id)))).all()
    finally:
        await engine.dispose()
    lines = [json.dumps({**row.model_dump(mode="json"), "at": as_utc(row.at).isoformat()})
             for row in rows]
    text = "".join(line + "\n" for line in lines)
    if output:
        await asyncio.to_thread(output.write_text, text)
        print(f"wrote {len(lines)} events to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


async def _judges_report(settings: Settings, days: int) -> int:
    from datetime import UTC, datetime, timedelta

    from bot.engine.shadow_report import format_report, shadow_report
    from bot.store.db import create_engine, session_factory

    if days < 1:
        print("shipbot: --days must be 1 or more", file=sys.stderr)
        return 2
    await check_database(settings.DATABASE_URL, need_schema=True)
    engine = create_engine(settings.DATABASE_URL)
    try:
        async with session_factory(engine)() as session:
            rows = await shadow_report(session, datetime.now(UTC) - timedelta(days=days))
    finally:
        await engine.dispose()
    sys.stdout.write(format_report(rows, days))
    return 0


async def _db(args: argparse.Namespace) -> int:
    from bot.store import revisions
    from bot.store.db import create_engine, create_schema

    if args.db_command == "revision":
        path = await revisions.new_revision(args.message, autogenerate=args.autogenerate)
        print(f"wrote {path}: review it, then commit it with the model change")
        return 0
    url = load_settings().DATABASE_URL
    await check_database(url)
    engine = create_engine(url)
    try:
        await create_schema(engine)
    finally:
        await engine.dispose()
    return 0


async def _serve(settings: Settings, config: ShipbotConfig, host: str, port: int) -> None:
    """Start order: database (schema) and engine in the ASGI lifespan, then the HTTP server
    (health answers from here on), then the Socket Mode connection in the background. On
    SIGTERM uvicorn runs the lifespan's shutdown, which closes the WebSocket, then the bot."""
    import uvicorn

    from bot.logs import protect_logs
    from bot.runtime import Shipbot
    from bot.slack.socket_mode import SocketModeLink
    from bot.web.app import build_asgi_app

    await check_database(settings.DATABASE_URL)  # one clear line, not a lifespan traceback
    bot = Shipbot(settings, config)
    app_token = settings.SLACK_APP_TOKEN
    link = SocketModeLink(bot.slack, app_token.get_secret_value()) if app_token else None
    server = uvicorn.Server(uvicorn.Config(build_asgi_app(bot, slack_link=link), host=host,
                                           port=port, log_level="info", lifespan="on",
                                           timeout_graceful_shutdown=10))
    protect_logs(bot.redactor)  # after uvicorn.Config: it installs handlers of its own
    serving = asyncio.create_task(server.serve())
    if link is not None and await _listening(server, serving):
        await link.start()
    try:
        await serving
    finally:
        if link is not None:
            await link.close()


async def _listening(server: uvicorn.Server, serving: asyncio.Task[None]) -> bool:
    """Wait until uvicorn has run the lifespan's start-up and bound its sockets (True), or
    has stopped trying (False: the error surfaces when ``serving`` is awaited)."""
    while not server.started:
        if serving.done():
            return False
        await asyncio.sleep(0.05)
    return True


if __name__ == "__main__":
    sys.exit(main())
