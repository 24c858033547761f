"""Schema migrations: the scripts build exactly what the models describe, on SQLite and
on a real PostgreSQL, keep the audit trail append-only, and adopt databases made by the
old create_all without losing rows."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, text
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from bot.cli import main as cli_main
from bot.store import migrations
from bot.store.db import create_engine, create_schema, session_factory
from bot.store.models import AuditEvent, Deployment

pytest_plugins = ["tests.postgres_fixture"]

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
# What bot/store/db.py did before migrations: create_all, then these triggers.
OLD_TRIGGERS = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS auditevent_no_{op.lower()} BEFORE {op} ON auditevent "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
        for op in ("UPDATE", "DELETE")
    ],
    "postgresql": [
        "CREATE OR REPLACE FUNCTION shipbot_audit_append_only() RETURNS trigger AS $$ "
        "BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END; $$ LANGUAGE plpgsql",
        "CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON auditevent "
        "FOR EACH ROW EXECUTE FUNCTION shipbot_audit_append_only()",
    ],
}


@pytest.fixture(params=["sqlite", "postgresql"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on an empty database, SQLite file or real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/shipbot.db"
    else:
        url = request.getfixturevalue("postgres_url")
    db = create_engine(url)
    yield db
    await db.dispose()


async def differences(engine: AsyncEngine) -> list[object]:
    async with engine.connect() as conn:
        return await conn.run_sync(migrations.schema_differences)


async def revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(migrations.current_revision)


def head() -> str:
    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()
    assert head is not None
    return head


async def add_rows(engine: AsyncEngine) -> None:
    async with session_factory(engine)() as session:
        dep = Deployment(request_key="k1", service="api", env="prod", requester="U1",
                         state="queued", channel="#d", created_at=NOW, updated_at=NOW)
        session.add(dep)
        await session.flush()
        session.add(AuditEvent(deployment_id=dep.id, service="api", env="prod", actor="U1",
                               action="request", to_state="queued", at=NOW))
        await session.commit()


async def count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def assert_audit_append_only(engine: AsyncEngine) -> None:
    for statement in ("UPDATE auditevent SET actor = 'mallory'", "DELETE FROM auditevent"):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    assert await count(engine, "auditevent") == 1


def test_one_head() -> None:
    """Two branches that each added a revision must be merged before they ship."""
    heads = ScriptDirectory.from_config(migrations.alembic_config()).get_heads()
    assert len(heads) == 1, f"several migration heads {heads}: run `alembic merge`"


async def test_migrations_match_the_models(engine: AsyncEngine) -> None:
    """Fails when a model changes without a migration: `shipbot db revision --autogenerate`."""
    await create_schema(engine)
    assert await revision(engine) == head()
    assert await differences(engine) == []


async def test_audit_trail_stays_append_only(engine: AsyncEngine) -> None:
    await create_schema(engine)
    await add_rows(engine)
    await assert_audit_append_only(engine)


async def test_database_made_by_create_all_is_adopted(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
        for statement in OLD_TRIGGERS[engine.dialect.name]:
            await conn.exec_driver_sql(statement)
    await add_rows(engine)
    assert await revision(engine) is None

    await create_schema(engine)

    assert await revision(engine) == head()
    assert await count(engine, "deployment") == 1
    assert await differences(engine) == []
    await assert_audit_append_only(engine)


async def test_adopted_database_from_an_older_version_is_reported(
        engine: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    """create_all never added columns, so an old database can lack some: say so on start."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all)
        await conn.execute(text("ALTER TABLE deployment DROP COLUMN analysis_log"))

    await create_schema(engine)

    assert await revision(engine) == head()
    assert "differs from the models" in caplog.text
    assert "analysis_log" in caplog.text


async def test_create_schema_twice_changes_nothing(engine: AsyncEngine) -> None:
    await create_schema(engine)
    await add_rows(engine)
    statements: list[str] = []
    event.listen(engine.sync_engine, "before_cursor_execute",
                 lambda _c, _cur, statement, *_a: statements.append(statement))

    await create_schema(engine)

    ddl = [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))]
    writes = [s for s in statements
              if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert (ddl, writes) == ([], [])
    assert await revision(engine) == head()
    assert await count(engine, "deployment") == 1


async def test_downgrade_to_base_and_back(engine: AsyncEngine) -> None:
    """The downgrade scripts run too (a bad release is rolled back with them)."""
    await create_schema(engine)

    def downgrade(conn: Connection) -> None:
        command.downgrade(migrations.alembic_config(conn), "base")

    async with engine.begin() as conn:
        await conn.run_sync(downgrade)
        tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    assert set(tables) <= {"alembic_version"}
    await create_schema(engine)
    assert await differences(engine) == []


def test_cli_revision_is_numbered_after_head(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`shipbot db revision --autogenerate` with unchanged models: an empty next revision."""
    old_head = head()
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations.SCRIPT_LOCATION, scripts,
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "SCRIPT_LOCATION", scripts)

    assert cli_main(["db", "revision", "-m", "add a column", "--autogenerate"]) == 0

    number = head()  # reads the copy now, which has the new script
    assert number == f"{int(old_head) + 1:04d}"
    body = (scripts / "versions" / f"{number}_add_a_column.py").read_text()
    assert f"down_revision: str | None = '{old_head}'" in body
    upgrade = body.split("def upgrade() -> None:")[1].split("def downgrade")[0]
    assert [line.strip() for line in upgrade.splitlines() if line.strip()
            and not line.strip().startswith("#")] == ["pass"]


def test_cli_upgrade(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")
    assert cli_main(["db", "upgrade"]) == 0
    assert cli_main(["db", "upgrade"]) == 0
    assert (tmp_path / "cli.db").exists()


async def test_a_first_start_killed_mid_migration_leaves_nothing_behind(
        engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after a few tables: the next start must not trip over half a schema
    (SQLite's driver does not begin a transaction before DDL on its own)."""
    from alembic.operations import Operations

    real, made = Operations.create_table, []

    def create_table(self: Operations, name: str, *columns: object, **kw: object) -> object:
        if len(made) == 3:
            raise KeyboardInterrupt("killed during the first start")
        made.append(name)
        return real(self, name, *columns, **kw)

    monkeypatch.setattr(Operations, "create_table", create_table)
    with pytest.raises(KeyboardInterrupt):
        await create_schema(engine)
    async with engine.connect() as conn:
        left = await conn.run_sync(lambda c: c.exec_driver_sql(
            "SELECT 1 FROM information_schema.tables WHERE table_name = 'deployment'"
            if c.dialect.name == "postgresql" else
            "SELECT 1 FROM sqlite_master WHERE name = 'deployment'").fetchall())
    assert left == [] and made[:1]  # tables were made, then all rolled back

    monkeypatch.setattr(Operations, "create_table", real)
    await create_schema(engine)  # the next start migrates from scratch
    assert await differences(engine) == []


async def test_sqlite_migrations_can_rebuild_a_referenced_table(tmp_path: Path) -> None:
    """Batch mode copies, drops and renames a table: with the app's foreign_keys=ON that
    fails once rows reference it, so migrations run with foreign keys off, checked after."""
    import sqlalchemy as sa
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from bot.store.models import Approval

    db = create_engine(f"sqlite:///{tmp_path}/shipbot.db")
    await create_schema(db)
    async with session_factory(db)() as session:
        dep = Deployment(request_key="k", service="api", env="dev", version="v1",
                         requester="U1", state="succeeded", channel="#deploys-api",
                         created_at=NOW, updated_at=NOW)
        session.add(dep)
        await session.flush()
        session.add(Approval(deployment_id=dep.id, user="U2", decision="approve", at=NOW))
        await session.commit()

    def rebuild(conn: Connection) -> None:
        def work() -> None:
            op = Operations(MigrationContext.configure(conn, opts={"render_as_batch": True}))
            with op.batch_alter_table("deployment", recreate="always") as batch:
                batch.add_column(sa.Column("new_col", sa.Integer(), nullable=True))
        migrations._sqlite_atomically(conn, work)

    async with db.connect() as conn:
        await conn.run_sync(rebuild)
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        rows = (await conn.exec_driver_sql("SELECT count(*) FROM approval")).scalar()
    await db.dispose()
    assert (fks, rows) == (1, 1)  # foreign keys back on, the approval kept


async def test_outbox_facts_upgrade_and_downgrade(engine: AsyncEngine) -> None:
    """0008 adds the fact columns; going back drops them, and a fact not yet delivered
    (the older code cannot put it into words) with them, instead of posting it empty."""
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO outbox (kind, text, blocks, fact, payload, created_at, attempts) "
            "VALUES ('thread', '', '[]', 'build_started', '{\"version\": \"v1\"}', "
            ":at, 0), ('thread', 'old words', '[]', NULL, NULL, :at, 0)"), {"at": NOW})

    def to(target: str) -> Callable[[Connection], None]:
        return lambda conn: (command.downgrade if target == "0007" else command.upgrade)(
            migrations.alembic_config(conn), target)

    async with engine.begin() as conn:
        await conn.run_sync(to("0007"))
    assert await revision(engine) == "0007"
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in sa_inspect(c).get_columns("outbox")})
        rows = (await conn.execute(text(
            "SELECT text, delivered_at IS NOT NULL, last_error FROM outbox ORDER BY id"))).all()
    assert not {"fact", "payload"} & columns
    assert [tuple(r) for r in rows] == [("", True, "dropped by the downgrade: build_started"),
                                        ("old words", False, None)]
    async with engine.begin() as conn:
        await conn.run_sync(to("head"))
    assert await revision(engine) == head()
    assert await differences(engine) == []


async def test_mirror_claims_upgrade_and_downgrade(engine: AsyncEngine) -> None:
    """0009 adds the mirror rows' claim; going back drops it and keeps the rows queued."""
    await create_schema(engine)
    await add_rows(engine)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO mirrorevent (deployment_id, state, description, created_at, "
            "attempts, claimed_by, claim_until) VALUES (1, 'queued', 'Shipbot #1: queued', "
            ":at, 0, 'pod-a/1', :at)"), {"at": NOW})

    def to(target: str) -> Callable[[Connection], None]:
        return lambda conn: (command.downgrade if target == "0008" else command.upgrade)(
            migrations.alembic_config(conn), target)

    async with engine.begin() as conn:
        await conn.run_sync(to("0008"))
    assert await revision(engine) == "0008"
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in sa_inspect(c).get_columns("mirrorevent")})
        rows = (await conn.execute(text(
            "SELECT state, delivered_at FROM mirrorevent"))).all()
    assert not {"claimed_by", "claim_until"} & columns
    assert [tuple(r) for r in rows] == [("queued", None)]
    async with engine.begin() as conn:
        await conn.run_sync(to("head"))
        claims = (await conn.execute(text(
            "SELECT claimed_by, claim_until FROM mirrorevent"))).all()
    assert [tuple(r) for r in claims] == [(None, None)]  # unclaimed: any replica sends it
    assert await revision(engine) == head()
    assert await differences(engine) == []


async def test_outbox_claims_upgrade_and_downgrade(engine: AsyncEngine) -> None:
    """0010 adds the outbox rows' claim; going back drops it and keeps the rows queued."""
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO outbox (kind, text, blocks, created_at, attempts, claimed_by, "
            "claim_until) VALUES ('announce', 'hello', '[]', :at, 0, 'pod-a/1', :at)"),
            {"at": NOW})

    def to(target: str) -> Callable[[Connection], None]:
        return lambda conn: (command.downgrade if target == "0009" else command.upgrade)(
            migrations.alembic_config(conn), target)

    async with engine.begin() as conn:
        await conn.run_sync(to("0009"))
    assert await revision(engine) == "0009"
    async with engine.connect() as conn:
        columns = await conn.run_sync(
            lambda c: {col["name"] for col in sa_inspect(c).get_columns("outbox")})
        rows = (await conn.execute(text("SELECT text, delivered_at FROM outbox"))).all()
    assert not {"claimed_by", "claim_until"} & columns
    assert [tuple(r) for r in rows] == [("hello", None)]
    async with engine.begin() as conn:
        await conn.run_sync(to("head"))
        claims = (await conn.execute(text("SELECT claimed_by, claim_until FROM outbox"))).all()
    assert [tuple(r) for r in claims] == [(None, None)]  # unclaimed: any replica posts it
    assert await revision(engine) == head()
    assert await differences(engine) == []


async def migrate(engine: AsyncEngine, target: str, *, down: bool = False) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: (command.downgrade if down else command.upgrade)(
            migrations.alembic_config(c), target))


async def test_slot_versions_upgrade_backfills_and_downgrade(engine: AsyncEngine) -> None:
    """0011 adds each slot's current version, filled from the history as `/deploy status`
    computed it until then (the highest id in state succeeded); going back drops it."""
    await create_schema(engine)
    await migrate(engine, "0010", down=True)
    history = [("api", "dev", "succeeded"), ("api", "dev", "failed"),
               ("api", "dev", "succeeded"), ("api", "dev", "rolled_back"),
               ("api", "production", "failed"), ("web", "dev", "succeeded"),
               ("web", "dev", "deploying")]
    async with session_factory(engine)() as session:
        session.add_all(Deployment(request_key=f"k{i}", service=service, env=env,
                                   version=f"v{i}", requester="U1", state=state, channel="#d",
                                   created_at=NOW, updated_at=NOW)
                        for i, (service, env, state) in enumerate(history))
        await session.commit()

    await migrate(engine, "head")

    async with engine.connect() as conn:
        rows = (await conn.execute(text(
            "SELECT service, env, deployment_id, version, requester FROM slotversion "
            "ORDER BY service, env"))).all()
    assert [tuple(r) for r in rows] == [("api", "dev", 3, "v2", "U1"),
                                        ("web", "dev", 6, "v5", "U1")]
    assert await revision(engine) == head()
    assert await differences(engine) == []
    await migrate(engine, "0010", down=True)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    assert "slotversion" not in tables and await count(engine, "deployment") == len(history)


async def test_replicas_starting_together_on_an_empty_postgres_migrate_once(
        postgres_url: str) -> None:
    """Each replica migrates on start; on PostgreSQL an advisory lock makes the second
    wait for the first and then find the schema at head."""
    engines = [create_engine(postgres_url) for _ in range(3)]
    try:
        # Without the lock they deadlock on each other's DDL: fail in seconds, not at the
        # hang guard's 150.
        await asyncio.wait_for(asyncio.gather(*(create_schema(e) for e in engines)), 30)
        assert await revision(engines[0]) == head()
        assert await differences(engines[0]) == []
    finally:
        await asyncio.gather(*(e.dispose() for e in engines))
