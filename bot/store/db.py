"""Engine and session factories. SQLite runs in WAL mode with a busy timeout so
the web handlers and the engine can write concurrently."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.redact import Redactor
from bot.settings import async_database_url
from bot.store import (
    migrations,
    models,  # noqa: F401  (registers the tables)
)
from bot.store.sqlite_driver import one_hop_dbapi

Sessions = async_sessionmaker[AsyncSession]
MIRRORED_INFO = "shipbot_mirrored_services"
REDACTOR_INFO = "redactor"


@dataclass(frozen=True)
class PoolSize:
    """A PostgreSQL connection pool: kept open, opened beyond that, and how long a
    session waits for one before it fails."""

    size: int
    overflow: int
    timeout: float


# Two pools per replica, 40 of the server's max_connections (100 by default) in all.
# The engine's: the runner's steps (a step holds one from its first read to its commit),
# the notifier, mirrors, heartbeats; background work waits for a connection rather than
# fail, up to 15 s: below a third of the default lease, so a replica short of connections
# fails a renewal (retried) before its leases and heartbeat would lapse. The edge's:
# slash commands, clicks and webhooks, each holding one only for a few short queries,
# so they never wait behind the engine's work and miss Slack's 3 s.
ENGINE_POOL = PoolSize(size=20, overflow=10, timeout=15)
EDGE_POOL = PoolSize(size=5, overflow=5, timeout=10)


def create_engine(database_url: str, pool: PoolSize = ENGINE_POOL) -> AsyncEngine:
    """``pool`` sizes a PostgreSQL pool; SQLite's is unbounded (see below)."""
    url = async_database_url(database_url)
    if url.startswith("sqlite") and not _sqlite_file(url):
        # In memory: SQLAlchemy gives it a single shared connection (StaticPool), which
        # takes no pool sizing; each new connection would be another, empty database.
        engine = create_async_engine(url)
    elif url.startswith("sqlite"):
        # Work waiting for the writer queue (bot/store/writers.py) may hold a connection; an
        # unbounded overflow means the queue's current writer can always get one. SQLite
        # connections are cheap, and the pool keeps 20 of them open between bursts.
        engine = create_async_engine(url, pool_size=20, max_overflow=-1,
                                     module=one_hop_dbapi())
    else:
        engine = create_async_engine(url, pool_pre_ping=True, pool_size=pool.size,
                                     max_overflow=pool.overflow, pool_timeout=pool.timeout)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


def edge_engine(engine: AsyncEngine, database_url: str) -> AsyncEngine:
    """The edge's own pool on PostgreSQL. On SQLite, the same engine: its pool has no
    bound to exhaust, and an in-memory database exists only on that engine's connection."""
    if async_database_url(database_url).startswith("sqlite"):
        return engine
    return create_engine(database_url, EDGE_POOL)


def _sqlite_file(url: str) -> bool:
    """A database file, not ``sqlite://``, ``:memory:`` or ``?mode=memory`` (as SQLAlchemy
    decides, in ``SQLiteDialect_pysqlite._is_url_file_db``)."""
    parsed = make_url(url)
    return bool(parsed.database) and parsed.database != ":memory:" and \
        parsed.query.get("mode") != "memory"


def session_factory(engine: AsyncEngine, redactor: Redactor | None = None,
                    mirrored: frozenset[str] = frozenset()) -> Sessions:
    """Sessions that carry the bot's redactor, for what is written to the audit trail,
    and the services whose deployments are mirrored (``MirrorEvent`` rows to write)."""
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False,
                              info={REDACTOR_INFO: redactor or Redactor(),
                                    MIRRORED_INFO: mirrored})


def mirrored_of(session: AsyncSession) -> frozenset[str]:
    """The services whose state changes the session's bot mirrors (GitHub Deployments)."""
    found = session.info.get(MIRRORED_INFO)
    return found if isinstance(found, frozenset) else frozenset()


def redactor_of(session: AsyncSession) -> Redactor:
    """The redactor the session was made with; token shapes only for a bare session."""
    found = session.info.get(REDACTOR_INFO)
    return found if isinstance(found, Redactor) else Redactor()


async def create_schema(engine: AsyncEngine) -> None:
    """Migrate the database to the latest revision (Alembic), in one transaction on this
    engine; a database made before migrations existed is adopted (stamped) first.

    The audit table's append-only triggers come from the initial revision."""
    async with engine.begin() as conn:
        await conn.run_sync(migrations.upgrade)
