"""Engine and session factories. SQLite runs in WAL mode with a busy timeout so
the web handlers and the engine can write concurrently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.settings import async_database_url
from bot.store import models  # noqa: F401  (registers the tables)

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


_APPEND_ONLY_SQLITE = [
    f"CREATE TRIGGER IF NOT EXISTS auditevent_no_{op.lower()} BEFORE {op} ON auditevent "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    for op in ("UPDATE", "DELETE")
]
_APPEND_ONLY_POSTGRES = [
    "CREATE OR REPLACE FUNCTION shipbot_audit_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS auditevent_append_only ON auditevent",
    "CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON auditevent "
    "FOR EACH ROW EXECUTE FUNCTION shipbot_audit_append_only()",
]


async def create_schema(engine: AsyncEngine) -> None:
    """Create tables, and make the audit table refuse UPDATE and DELETE in the database."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
        statements = (_APPEND_ONLY_SQLITE if engine.dialect.name == "sqlite"
                      else _APPEND_ONLY_POSTGRES)
        for statement in statements:
            await conn.exec_driver_sql(statement)
