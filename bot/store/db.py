"""Engine and session factories. SQLite runs in WAL mode with a busy timeout so
the web handlers and the engine can write concurrently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.settings import async_database_url
from bot.store import (
    migrations,
    models,  # noqa: F401  (registers the tables)
)

Sessions = async_sessionmaker[AsyncSession]


def create_engine(database_url: str) -> AsyncEngine:
    url = async_database_url(database_url)
    if url.startswith("sqlite"):
        # Work waiting for the write gate (bot/store/gate.py) may hold a connection; an
        # unbounded overflow means the gate's holder can always get one. SQLite
        # connections are cheap, and the pool keeps 20 of them open between bursts.
        engine = create_async_engine(url, pool_size=20, max_overflow=-1)
    else:
        engine = create_async_engine(url, pool_pre_ping=True)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def session_factory(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def create_schema(engine: AsyncEngine) -> None:
    """Migrate the database to the latest revision (Alembic), in one transaction on this
    engine; a database made before migrations existed is adopted (stamped) first.

    The audit table's append-only triggers come from the initial revision."""
    async with engine.begin() as conn:
        await conn.run_sync(migrations.upgrade)
