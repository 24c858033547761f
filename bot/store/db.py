"""Engine and session factories. SQLite runs in WAL mode with a busy timeout so
the web handlers and the engine can write concurrently."""

from __future__ import annotations

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

Sessions = async_sessionmaker[AsyncSession]
MIRRORED_INFO = "shipbot_mirrored_services"
REDACTOR_INFO = "redactor"


def create_engine(database_url: str) -> AsyncEngine:
    url = async_database_url(database_url)
    if url.startswith("sqlite") and not _sqlite_file(url):
        # In memory: SQLAlchemy gives it a single shared connection (StaticPool), which
        # takes no pool sizing; each new connection would be another, empty database.
        engine = create_async_engine(url)
    elif url.startswith("sqlite"):
        # Work waiting for the writer queue (bot/store/writers.py) may hold a connection; an
        # unbounded overflow means the queue's current writer can always get one. SQLite
        # connections are cheap, and the pool keeps 20 of them open between bursts.
        engine = create_async_engine(url, pool_size=20, max_overflow=-1)
    else:
        # Sized for the runner's steps (each holds a connection only while it reads and
        # writes, never across the target's I/O), the notifier, the web handlers and
        # slash-command acks (SQLAlchemy's default, 5 + 10, made an ack wait behind the
        # slowest step). Each replica may open 40 of the server's max_connections (100 by
        # default); one finding none fails after 10 s rather than SQLAlchemy's 30 s.
        engine = create_async_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=30,
                                     pool_timeout=10)
    if url.startswith("sqlite"):

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


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
