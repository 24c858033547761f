"""Alembic environment for Shipbot.

Normally ``bot.store.migrations.upgrade`` hands in a live connection of the app's own
async engine (``config.attributes["connection"]``), so migrating on start needs no
second engine. Without one (e.g. ``alembic`` run by hand) it opens an async engine
from ``sqlalchemy.url`` or ``DATABASE_URL``, as in Alembic's asyncio cookbook.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection, pool
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

from bot.settings import async_database_url
from bot.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

config = context.config
target_metadata = SQLModel.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from bot.settings import load_settings

        url = load_settings().DATABASE_URL
    return async_database_url(url)


def do_run_migrations(connection: Connection) -> None:
    """Batch mode on SQLite: its ALTER TABLE cannot change or drop most things."""
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """``--sql`` mode: print the DDL instead of running it."""
    url = _url()
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                      render_as_batch=url.startswith("sqlite"),
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    do_run_migrations(connection)
else:
    asyncio.run(run_async_migrations())
