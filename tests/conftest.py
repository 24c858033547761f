"""Fixtures that run a whole Shipbot on loopback (errbot's testbot, bolt's scenario tests)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.config import ShipbotConfig, parse_config
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.store.db import create_engine, create_schema
from tests.processes import cancel_runs, leftovers

# alert-thread fixtures; hung tests fail with their stacks instead of stalling the suite
pytest_plugins = ["tests.alertmanager_fixture", "tests.alert_helpers", "tests.hang_guard"]
STEP = str(Path(__file__).parent / "scripts" / "step.py")
BOTS = pytest.StashKey[list[LocalBot]]()  # the bots make_bot started for a test


def pytest_configure(config: pytest.Config) -> None:
    """Cache compiled code outside the source trees where PYTHONDONTWRITEBYTECODE is set.

    With it, each of the suite's 4 workers compiled the bot and rewrote the asserts of
    every test module again, as did every ``shipbot serve`` a test starts: 4 workers that
    then ran nothing took 23 s on 2 cores, 11 s with the cache. PYTHONPYCACHEPREFIX puts
    the cache under the temp directory, so the trees stay free of ``__pycache__`` as that
    setting wants; the workers and the processes the tests start inherit it (the hook
    runs before xdist starts its workers). A prefix set already is kept."""
    if not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    default = str(Path(tempfile.gettempdir()) / "shipbot-pycache")
    sys.pycache_prefix = os.environ.setdefault("PYTHONPYCACHEPREFIX", default)
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    sys.dont_write_bytecode = False


@pytest.fixture(autouse=True)
def _subprocess_coverage(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python processes a test starts are measured only where the test says so (marked
    ``measure_subprocesses``: the CLI, the command provider's supervisor). Coverage set up
    in each of thousands of supervisors that every deployment starts cost a third of the
    suite's CPU, measuring the same lines again; the marked tests cover them."""
    if request.node.get_closest_marker("measure_subprocesses") is None:
        monkeypatch.delenv("COVERAGE_PROCESS_CONFIG", raising=False)


def step(log: Path, **env: Any) -> dict[str, Any]:
    """A command-provider config running tests/scripts/step.py."""
    timeout = env.pop("timeout", 30)
    return {
        "provider": "command",
        "argv": [sys.executable, STEP, "{service}", "{env}", "{version}"],
        "timeout_seconds": timeout,
        "env": {"STEP_LOG": str(log), **{k: str(v) for k, v in env.items()}},
    }


def make_config(tmp_path: Path, ci: dict[str, Any] | None = None,
                deploy: dict[str, Any] | None = None, **extra: Any) -> ShipbotConfig:
    ci = ci if ci is not None else step(tmp_path / "ci.log")
    deploy = deploy or step(tmp_path / "deploy.log")
    service = {"channel": "#deploys-api", "ci": ci, "deploy": deploy}
    data = {
        "poll_interval_seconds": 0.1,
        "environments": {
            "dev": {}, "staging": {},
            "production": {"approval": {"approvers": ["U0CAROL", "@sre-leads"]}},
        },
        "services": {
            "api": service,
            "web": {"channel": "#deploys-web", "deploy": step(tmp_path / "web.log")},
            "worker": {"channel": "#deploys-worker", "deploy": step(tmp_path / "worker.log"),
                       "environments": ["staging", "production"]},
        },
        **extra,
    }
    return parse_config(data)


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., ShipbotConfig]:
    return lambda **kw: make_config(tmp_path, **kw)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to the newest revision, made once per test process:
    ``make_bot`` starts from a copy (the bot still checks its revision at start-up)
    instead of running every migration again. tests/test_migrations.py migrates for real."""
    path = tmp_path_factory.mktemp("schema") / "shipbot.db"

    async def migrate() -> None:
        engine = create_engine(f"sqlite:///{path}")
        await create_schema(engine)
        await engine.dispose()

    asyncio.run(migrate())
    return path


@pytest.fixture
async def make_bot(request: pytest.FixtureRequest, tmp_path: Path, migrated_sqlite: Path
                   ) -> AsyncIterator[Callable[..., Awaitable[LocalBot]]]:
    bots = request.node.stash.setdefault(BOTS, [])

    async def factory(config: ShipbotConfig | None = None, **kwargs: Any) -> LocalBot:
        database_url = kwargs.pop("database_url", None)
        if database_url is None and not (tmp_path / "shipbot.db").exists():
            shutil.copyfile(migrated_sqlite, tmp_path / "shipbot.db")
        bot = LocalBot(
            config or make_config(tmp_path),
            database_url=database_url or f"sqlite:///{tmp_path}/shipbot.db",
            state_dir=tmp_path / "state", **kwargs,
        )
        await bot.start()
        bots.append(bot)
        return bot

    yield factory
    await stop_bots(request.node)
    # Runs outlive the bot by design; the test's must not outlive the test.
    await asyncio.to_thread(cancel_runs, tmp_path / "state")
    leaked = await asyncio.to_thread(leftovers, f"{tmp_path}{os.sep}")
    assert not leaked, f"processes still running after the test (now killed): {leaked}"


async def stop_bots(node: pytest.Item) -> None:
    """Stop the bots ``make_bot`` started for the test at ``node``, oldest first."""
    bots = node.stash.get(BOTS, [])
    while bots:
        await bots.pop(0).stop()


@pytest.fixture
async def fake_slacks(request: pytest.FixtureRequest
                      ) -> AsyncIterator[Callable[..., Awaitable[FakeSlack]]]:
    """Start a fake Slack (``FakeSlack``'s arguments) to give ``make_bot(fake_slack=...)``.

    Each is stopped only after the test's bots, whatever the order the test asked for the
    fixtures in: a bot whose Slack went first spends ~2 s of its shutdown retrying the
    posts it had under way against a closed port."""
    slacks: list[FakeSlack] = []

    async def start(**kwargs: Any) -> FakeSlack:
        slack = FakeSlack(**kwargs)
        await slack.start()
        slacks.append(slack)
        return slack

    yield start
    await stop_bots(request.node)
    for slack in slacks:
        await slack.stop()


class FakeClock:
    """An injectable clock that tests jump forward instead of sleeping. It still runs at
    real speed between jumps, so the engine's short polling delays keep working."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 11, 25, 10, 0, tzinfo=UTC)  # a Wednesday
        self.offset = start - datetime.now(UTC)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy (background work has no callback)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(0.05)


async def requests_told(bot: LocalBot) -> None:
    """Wait until every request the bot recorded (commands, clicks, submissions: rows
    written before the ack) has been processed and its outcome told: the signal that a
    request which should change nothing has had its chance to."""
    from sqlmodel import col, select

    from bot.store.models import InboundRequest

    async def settled() -> bool:
        async with bot.bot.sessions() as session:
            rows = (await session.exec(select(InboundRequest)
                                       .where(col(InboundRequest.told_at).is_(None)))).all()
        return not rows

    await eventually(settled)


async def outbox_delivered(bot: LocalBot) -> None:
    """Wait until the notifier has handled every queued message (posted it, or decided
    not to): the signal before asserting that something was not posted."""
    from sqlmodel import col, select

    from bot.store.models import Outbox

    async def settled() -> bool:
        bot.bot.notifier.kick()
        async with bot.bot.sessions() as session:
            rows = (await session.exec(select(Outbox.id)
                                       .where(col(Outbox.delivered_at).is_(None)))).all()
        return not rows

    await eventually(settled)


@pytest.fixture
def launch(make_bot, quiet) -> Callable[..., Awaitable[LocalBot]]:
    """make_bot on a fake Slack without rate limits (``quiet`` says why): rollout threads
    are long, and pacing them at one post a second outlasts these tests' waits. Also for
    the provider flows and what a deployment ships, whose subject is not Slack's pacing:
    each 429 costs the client Retry-After plus up to 1 s of jitter, and the Argo, Helm,
    webhook and GitHub flows, build-once and changelog tests spent ~70 s in them. The
    deploy, approval and restart tests keep the limits on."""
    return lambda config, **kwargs: make_bot(config, fake_slack=quiet, **kwargs)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """An aiohttp app on a free loopback port (a target's health endpoint, say): its port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
