"""The SQLite driver's one thread hop per statement (bot/store/sqlite_driver.py): each
statement is one call on aiosqlite's thread, and everything SQLAlchemy reads back from
a cursor (rows, RETURNING, lastrowid, rowcount, errors) is what sqlite3 said."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import Deployment, Lock

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite:///{tmp_path}/driver.db")
    await create_schema(engine)
    yield session_factory(engine)
    await engine.dispose()


def deployment(key: str, slot: str | None = None) -> Deployment:
    return Deployment(request_key=key, service="api", env="dev", version="v1",
                      requester="U1", state="requested", channel="#c", created_at=NOW,
                      updated_at=NOW, active_slot=slot)


async def test_a_statement_is_one_call_on_the_thread(sessions: Sessions,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(fn)
        return await real(self, fn, *args, **kwargs)

    async with sessions() as session:
        await session.exec(select(Deployment.id))  # the connection is open and warm
        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        rows = (await session.exec(select(Deployment.id).where(Deployment.id > 0))).all()
    assert rows == []
    # Then the rollbacks that end the session and return the connection: one call each.
    assert [getattr(fn, "__name__", "") for fn in calls if fn.__name__ != "rollback"] == ["_run"]


async def test_rows_returning_rowcount_and_many_rows_come_back(sessions: Sessions) -> None:
    async with sessions() as session:
        first, second = deployment("k1", "api/dev"), deployment("k2")
        session.add_all([first, second])
        await session.flush()  # INSERT ... RETURNING id, for both
        assert (first.id, second.id) == (1, 2)
        connection = await session.connection()
        await connection.execute(insert(Lock.__table__), [  # type: ignore[attr-defined]
            {"env": "dev", "reason": f"r{i}", "created_by": "U1", "created_at": NOW}
            for i in range(3)])  # executemany
        changed = await session.exec(update(Deployment).where(  # type: ignore[call-overload]
            col(Deployment.id) <= 2).values(version="v2"))
        assert changed.rowcount == 2
        await session.commit()
    async with sessions() as session:
        versions = (await session.exec(select(Deployment.version))).all()
        reasons = (await session.exec(select(Lock.reason).order_by(col(Lock.id)))).all()
    assert (versions, reasons) == (["v2", "v2"], ["r0", "r1", "r2"])


async def test_a_constraint_violation_is_sqlalchemys_error_and_rolls_back(
        sessions: Sessions) -> None:
    async with sessions() as session:
        session.add(deployment("k1", "api/dev"))
        await session.commit()
    async with sessions() as session:
        session.add(deployment("k2", "api/dev"))  # the slot is taken
        with pytest.raises(IntegrityError, match="UNIQUE"):
            await session.commit()
        await session.rollback()
        session.add(deployment("k3", "api/staging"))
        await session.commit()
    async with sessions() as session:
        keys = (await session.exec(select(Deployment.request_key))).all()
    assert sorted(keys) == ["k1", "k3"]
