"""Schema migrations (Alembic), configured in code.

The scripts ship inside the package, so an installed ``shipbot`` migrates its database
on start without an alembic.ini in the working directory. Everything here is sync and
takes a sync ``Connection``: call it through ``AsyncConnection.run_sync`` so it runs on
the app's own async engine (aiosqlite, asyncpg) without blocking the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect
from sqlmodel import SQLModel

from bot.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

log = logging.getLogger(__name__)
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # one line per plugin

SCRIPT_LOCATION = Path(__file__).parent
# The revision matching the schema that SQLModel.metadata.create_all made before
# migrations existed: such databases are stamped with it instead of migrated.
INITIAL_REVISION = "0001"
# Key of the PostgreSQL advisory lock held while migrating, so replicas starting
# together migrate one after the other (the second finds the schema at head).
_PG_LOCK_KEY = 0x5348_4950  # "SHIP"


def alembic_config(connection: Connection | None = None,
                   database_url: str | None = None) -> Config:
    """An Alembic config pointing at the packaged scripts; env.py uses ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if database_url:
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def schema_differences(connection: Connection) -> list[Any]:
    """What autogenerate would change to make the database match the models."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, SQLModel.metadata))


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate to ``revision`` in one transaction, first adopting a database made by the
    old create_all (our tables but no alembic_version: the initial revision would fail
    on "table already exists", so such a database is stamped instead)."""
    if connection.dialect.name == "sqlite":
        _sqlite_atomically(connection, lambda: _upgrade(connection, revision))
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_LOCK_KEY})")
    _upgrade(connection, revision)


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config(connection)
    tables = set(inspect(connection).get_table_names())
    adopted = "alembic_version" not in tables and bool(tables & set(SQLModel.metadata.tables))
    if adopted:
        log.warning("database has tables but no migration history (made before Alembic): "
                    "stamping it at revision %s", INITIAL_REVISION)
        command.stamp(config, INITIAL_REVISION)
    command.upgrade(config, revision)
    if adopted:
        drift = schema_differences(connection)
        if drift:
            log.warning("the adopted schema differs from the models (made by an older "
                        "version?): %s", drift)


def _sqlite_atomically(connection: Connection, work: Callable[[], None]) -> None:
    """SQLite's Python driver opens a transaction only before DML, never before DDL, so a
    first start killed half-way would leave half a schema behind for good. Begin one
    explicitly. Foreign keys are off meanwhile (batch mode rebuilds a referenced table
    by copy, drop and rename) and checked before the commit; PRAGMA foreign_keys cannot
    change inside a transaction, hence the order."""
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        work()
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        connection.exec_driver_sql("COMMIT")
    except BaseException:
        connection.exec_driver_sql("ROLLBACK")
        raise
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
