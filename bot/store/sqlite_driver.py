"""aiosqlite, one thread hop per statement.

SQLAlchemy's aiosqlite adapter makes four round trips to aiosqlite's thread for each
statement (open a cursor, execute, fetch, close), each one a wake-up of the event loop
and a turn behind every task ready on it. Here the whole statement runs in one call on
that thread and hands back its rows and cursor attributes: a slash command's ack makes
~12 round trips instead of ~35, and so does every step of the engine. Everything else
(connections, transactions, errors, the pool) is SQLAlchemy's and aiosqlite's own.
"""

from __future__ import annotations

import collections
import sqlite3
from dataclasses import dataclass
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)


@dataclass
class Ran:
    """What a statement's ``sqlite3.Cursor`` says once it ran (read on its thread)."""

    description: Any = None
    rowcount: int = -1
    lastrowid: int | None = None
    arraysize: int = 1


def _run(conn: sqlite3.Connection, many: bool, sql: str,
         parameters: Any) -> tuple[Ran, list[Any] | None]:
    """On aiosqlite's thread: execute, fetch everything, close."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, parameters)
        elif parameters is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, parameters)
        rows = cursor.fetchall() if cursor.description else None
        return Ran(cursor.description, cursor.rowcount, cursor.lastrowid), rows
    finally:
        cursor.close()


class OneHopCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        return Ran()  # nothing to open: each statement gets its own sqlite3 cursor

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_hop(False, operation, parameters)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_hop(True, operation, seq_of_parameters)

    async def _one_hop(self, many: bool, operation: Any, parameters: Any) -> None:
        driver = self._connection
        async with self._adapt_connection._execute_mutex:
            ran, rows = await driver._execute(_run, driver._conn, many, operation,
                                              parameters)
        ran.arraysize = self._cursor.arraysize
        self._cursor = ran
        if rows is not None:
            self._rows = collections.deque(rows)

    async def _async_soft_close(self) -> None:
        """Nothing is open on the thread: the statement's cursor closed there."""

    def close(self) -> None:
        self._rows.clear()


class OneHopConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneHopCursor


class OneHopDBAPI(AsyncAdapt_aiosqlite_dbapi):
    """The DBAPI module SQLAlchemy's aiosqlite dialect is given (``module=``)."""

    def connect(self, *arg: Any, **kw: Any) -> OneHopConnection:
        adapted = super().connect(*arg, **kw)
        return OneHopConnection(self, adapted._connection)


def one_hop_dbapi() -> OneHopDBAPI:
    return OneHopDBAPI(aiosqlite, sqlite3)
