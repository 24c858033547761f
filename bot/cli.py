"""`shipbot` command line: serve, console, config check, config schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from bot.config import ConfigError, ShipbotConfig, json_schema, load_config
from bot.settings import Settings, SettingsError, load_settings


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
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "config":
            return _config(args)
        settings = load_settings()
        config_path = args.config or settings.SHIPBOT_CONFIG
        config = load_config(config_path)
        if args.command == "serve":
            settings.require_slack()
            asyncio.run(_serve(settings, config, args.host, args.port))
            return 0
        from bot.devtools.console import run_console

        return asyncio.run(run_console(settings, config, database=args.database))
    except SettingsError as exc:
        print(f"shipbot: {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print("shipbot: the config has problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _config(args: argparse.Namespace) -> int:
    if args.config_command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    path = args.file or load_settings().SHIPBOT_CONFIG
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}" if not problem.startswith(str(path)) else problem)
        print(f"{len(exc.problems)} problem(s) found.", file=sys.stderr)
        return 1
    print(f"{path}: OK — {len(config.services)} services, "
          f"environments {' → '.join(config.environment_order)}.")
    return 0


async def _serve(settings: Settings, config: ShipbotConfig, host: str, port: int) -> None:
    import uvicorn
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    from bot.runtime import Shipbot
    from bot.web.app import build_asgi_app

    bot = Shipbot(settings, config)
    server = uvicorn.Server(uvicorn.Config(build_asgi_app(bot), host=host, port=port,
                                           log_level="info", lifespan="on"))
    if settings.SLACK_APP_TOKEN is None:
        await server.serve()
        return
    socket = AsyncSocketModeHandler(bot.slack, settings.SLACK_APP_TOKEN.get_secret_value())
    await socket.connect_async()
    try:
        await server.serve()
    finally:
        await socket.close_async()


if __name__ == "__main__":
    sys.exit(main())
