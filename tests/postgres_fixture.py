"""A real PostgreSQL for tests: one throwaway server per session, one database per test.

Several replicas share a PostgreSQL in production, and its DDL, types and triggers
differ from SQLite's, so the schema is checked on the real server. Use via
``pytest_plugins = ["tests.postgres_fixture"]`` and the ``postgres_url`` fixture (an
empty database) or ``migrated_postgres_url`` (one at the newest revision, for bots).
A missing server binary skips locally and fails on CI (as for Prometheus).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

READY_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    """A loopback port that was free a moment ago (the server binds it right away)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_pg_binary(name: str) -> str:
    """Debian keeps initdb and postgres off PATH, under /usr/lib/postgresql/N/bin."""
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if found:
        return found
    message = f"{name} not found; install it with: apt-get install -y postgresql"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def _run_as() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return {}
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run the server as")
    return {"user": entry.pw_uid, "group": entry.pw_gid}


def _wait_ready(server: PostgresServer) -> None:
    """Sync (the session fixture may be set up from inside a running event loop)."""
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while "ready to accept connections" not in server.log():
        if server.process.poll() is not None:
            pytest.fail(f"postgres exited with {server.process.returncode}:\n{server.log()}")
        if time.monotonic() > deadline:
            pytest.fail(f"postgres not ready in {READY_TIMEOUT_SECONDS}s:\n{server.log()}")
        time.sleep(0.05)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb + postgres on a free loopback port, fsync off (a test server loses nothing).
    Also used by bench/ack_pool.py."""
    initdb, postgres = find_pg_binary("initdb"), find_pg_binary("postgres")
    run_as = _run_as()
    home = Path(tempfile.mkdtemp(prefix="shipbot-pg-"))  # not under root's 0700 pytest dir
    data, log_path = home / "data", home / "postgres.log"
    if run_as:
        os.chown(home, run_as["user"], run_as["group"])
    subprocess.run([initdb, "-D", str(data), "-U", "shipbot", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, **run_as)
    port = free_port()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [postgres, "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-k", str(home), "-c", "fsync=off", "-c", "full_page_writes=off"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **run_as)
    server = PostgresServer("127.0.0.1", port, "shipbot", process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGINT)  # "fast" shutdown: don't wait for idle clients
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def create_database(server: PostgresServer) -> str:
    """A fresh, empty database on ``server``; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(server, f'CREATE DATABASE "{name}"')
    return server.url(name)


def _admin(server: PostgresServer, sql: str) -> None:
    """Run one statement on the maintenance database. In a thread with its own loop:
    sync, so that fixtures set up inside a running event loop can use it too."""

    async def run() -> None:
        conn = await asyncpg.connect(server.url())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _in_a_thread(run())


def _in_a_thread(work: Coroutine[Any, Any, None]) -> None:
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, work).result(timeout=30)


@pytest.fixture(scope="session")
def migrated_template(postgres_server: PostgresServer) -> str:
    """A database migrated to the newest revision, made once per test process: bots start
    on copies of it (``CREATE DATABASE ... TEMPLATE``, as ``make_bot`` copies a migrated
    SQLite file) instead of running every migration again. tests/test_migrations.py
    migrates empty databases for real."""
    from bot.store.db import create_engine, create_schema

    name = f"template_{uuid.uuid4().hex[:12]}"
    _admin(postgres_server, f'CREATE DATABASE "{name}"')

    async def migrate() -> None:
        engine = create_engine(postgres_server.url(name))
        await create_schema(engine)
        await engine.dispose()  # a template takes copies only while nobody is connected

    _in_a_thread(migrate())
    return name


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database on the session's server, dropped afterwards."""
    yield from _database(postgres_server)


@pytest.fixture
def migrated_postgres_url(postgres_server: PostgresServer, migrated_template: str
                          ) -> Iterator[str]:
    """URL of a fresh database at the newest revision, dropped afterwards."""
    yield from _database(postgres_server, f' TEMPLATE "{migrated_template}"')


def _database(server: PostgresServer, template: str = "") -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(server, f'CREATE DATABASE "{name}"{template}')
    yield server.url(name)
    _admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
