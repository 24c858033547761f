"""Is the database there? Asked once before serving or exporting, so that a misspelt
``DATABASE_URL`` or a server that is down is one line naming the host and what to check,
not a traceback from deep inside a driver."""

from __future__ import annotations

import asyncio
import socket

from sqlalchemy import inspect, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from bot.settings import async_database_url
from bot.store.db import create_engine


class DatabaseUnavailable(Exception):
    """The database cannot be used; the message says which one and what to check."""


def describe(url: str) -> str:
    """Where the database is, without its password: ``host:port/name`` or the file."""
    parsed = make_url(async_database_url(url))
    if parsed.drivername.startswith("sqlite"):
        return f"the SQLite database {parsed.database or ':memory:'}"
    return f"the PostgreSQL server {parsed.host or 'localhost'}:{parsed.port or 5432}" \
           f"/{parsed.database or ''}"


async def check_database(url: str, *, timeout: float = 10.0, need_schema: bool = False) -> None:
    """Connect once (and, with ``need_schema``, look for Shipbot's tables), or raise
    :class:`DatabaseUnavailable` saying why in words a person can act on."""
    where = describe(url)
    engine = create_engine(url)
    try:
        async with asyncio.timeout(timeout), engine.connect() as conn:
            if need_schema and not await conn.run_sync(
                    lambda sync: inspect(sync).has_table("deployment")):
                raise DatabaseUnavailable(
                    f"{where} has no Shipbot tables yet: run `shipbot db upgrade` "
                    "(or start `shipbot serve` once) with this DATABASE_URL first.")
    except TimeoutError:
        raise DatabaseUnavailable(
            f"{where} did not answer within {timeout:g}s: check the host and port in "
            "DATABASE_URL and that a firewall lets this machine reach it.") from None
    except (OSError, SQLAlchemyError) as exc:
        raise DatabaseUnavailable(f"cannot use {where}: {_why(exc)}") from None
    finally:
        await engine.dispose()


def _why(exc: BaseException) -> str:
    """The driver's reason, with the fix that usually goes with it."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig else exc
    while cause.__cause__ is not None and not isinstance(cause, OSError):
        cause = cause.__cause__
    name = type(cause).__name__
    if isinstance(cause, socket.gaierror):
        return "its host name does not resolve: check the host in DATABASE_URL."
    if isinstance(cause, ConnectionRefusedError) or "refused" in str(cause).lower():
        return "the connection was refused: is the server running, and on that port?"
    if "password" in name.lower() or "authentication" in str(cause).lower():
        return "the login was refused: check the user and password in DATABASE_URL."
    if name == "InvalidCatalogNameError":
        return "that database does not exist: create it, or fix its name in DATABASE_URL."
    if "unable to open database file" in str(cause):
        return "the file cannot be opened: check that its directory exists and is writable."
    return f"{name}: {str(cause).splitlines()[0] if str(cause) else 'no details'}"
