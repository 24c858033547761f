"""A bot killed with SIGKILL mid-deploy resumes after restart and finishes exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text

from bot.config import parse_config
from bot.devtools.driver import SlackDriver
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import invite_bot
from tests.conftest import eventually, make_config, step

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_bot(tmp_path: Path, slack: FakeSlack, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": "xoxb-restart-test",
        "SLACK_SIGNING_SECRET": "restart-secret",
        "SLACK_API_URL": slack.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/shipbot.db",
        "SHIPBOT_CONFIG": str(tmp_path / "shipbot.yml"),
        "SHIPBOT_STATE_DIR": str(tmp_path / "state"),
        "SHIPBOT_TICK_SECONDS": "0.2",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "bot.log", "ab"),
    )


def db_rows(tmp_path: Path, sql: str) -> list[tuple]:
    engine = create_engine(f"sqlite:///{tmp_path}/shipbot.db")
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(text(sql))]
    engine.dispose()
    return rows


async def test_restart_mid_deploy_finishes_exactly_once(tmp_path: Path) -> None:
    mark = tmp_path / "deploy-started"
    config = make_config(tmp_path, deploy=step(tmp_path / "deploy.log", STEP_SLEEP=3,
                                                 STEP_MARK=mark))
    dumped = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    (tmp_path / "shipbot.yml").write_text(dumped)
    port = free_port()
    async with FakeSlack() as slack:
        invite_bot(slack, config)
        driver = SlackDriver(f"http://127.0.0.1:{port}", "restart-secret",
                             channels=slack.channels, triggers=slack.issue_trigger)
        first = start_bot(tmp_path, slack, port)
        try:
            await eventually(lambda: _up(driver))
            resp = await driver.command("api staging v3.1.0")
            assert "Deployment #1" in resp.json()["text"]
            await eventually(lambda: asyncio.sleep(0, mark.exists()))

            async def launch_recorded() -> bool:  # the step that started it has committed
                return db_rows(tmp_path, "select state from deployment") == [("deploying",)]

            await eventually(launch_recorded)
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            [(state,)] = db_rows(tmp_path, "select state from deployment")
            assert state == "deploying"

            second = start_bot(tmp_path, slack, port)
            try:
                async def done() -> list[tuple]:
                    return db_rows(tmp_path, "select state from deployment where "
                                   "finished_at is not null")

                assert await eventually(done, timeout=30) == [("succeeded",)]

                async def reported() -> dict | None:
                    roots = slack.messages("#deploys-api")
                    live = [r for r in roots[0]["replies"] if "is live" in r["text"]] if roots \
                        else []
                    return roots[0] if live and "Succeeded" in json.dumps(roots[0]) else None

                card = await eventually(reported)
            finally:
                second.terminate()
                second.wait(timeout=10)
        finally:
            if first.poll() is None:
                first.kill()
            await driver.aclose()

    runs = (tmp_path / "deploy.log").read_text().splitlines()
    assert runs == [json.dumps(["api", "staging", "v3.1.0"])]  # deployed once, not twice
    assert len(slack.messages("#deploys-api")) == 1  # one status card
    assert sum("is live" in r["text"] for r in card["replies"]) == 1
    transitions = db_rows(tmp_path, "select from_state, to_state from auditevent order by id")
    assert transitions[-1] == ("deploying", "succeeded")
    assert transitions.count(("building", "deploying")) == 1


TRAFFIC = ("import json, pathlib, sys, time; args = sys.argv[3:]; "
           "open(sys.argv[1], 'a').write(json.dumps(args) + '\\n'); "
           "args[-1] == '50' and (pathlib.Path(sys.argv[2]).touch(), time.sleep(3))")


async def test_restart_mid_canary_resumes_the_rollout_without_repeating_a_step(
        tmp_path: Path) -> None:
    """Killed while shifting traffic to 50 %: the next process finds the same run, waits
    for it, and carries on from that stage; no traffic action runs twice."""
    mark, log = tmp_path / "shifting", tmp_path / "traffic.log"
    data = make_config(tmp_path).model_dump(mode="json")
    api = data["services"]["api"]
    api["ci"], api["deploy"] = None, step(tmp_path / "deploy.log")
    for action in ("set_weight", "promote", "abort"):
        extra = ["{weight}"] if action == "set_weight" else []
        api["deploy"][f"{action}_argv"] = [sys.executable, "-c", TRAFFIC, str(log), str(mark),
                                           action, *extra]
    api["strategy"] = {"kind": "canary", "steps": [50, 100], "interval": "1s"}
    (tmp_path / "shipbot.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    port = free_port()
    async with FakeSlack() as slack:
        invite_bot(slack, parse_config(data))
        driver = SlackDriver(f"http://127.0.0.1:{port}", "restart-secret",
                             channels=slack.channels, triggers=slack.issue_trigger)
        first = start_bot(tmp_path, slack, port)
        second: subprocess.Popen[bytes] | None = None
        try:
            await eventually(lambda: _up(driver))
            await driver.command("api staging v4.0.0")
            await eventually(lambda: asyncio.sleep(0, mark.exists()))
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
            [(state, stage)] = db_rows(tmp_path, "select state, stage from deployment")
            assert (state, stage) == ("verifying", 0)  # shifting to 50 %, not yet confirmed

            second = start_bot(tmp_path, slack, port)

            async def done() -> list[tuple]:
                return db_rows(tmp_path, "select state from deployment where "
                               "finished_at is not null")

            assert await eventually(done, timeout=40) == [("succeeded",)]
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
            await driver.aclose()

    actions = [json.loads(line) for line in log.read_text().splitlines()]
    assert actions == [["set_weight", "50"], ["set_weight", "100"], ["promote"]]
    assert (tmp_path / "deploy.log").read_text().count("v4.0.0") == 1


async def _up(driver: SlackDriver) -> bool:
    try:
        return (await driver.http.get(driver.url.replace("/slack/events", "/healthz"))).is_success
    except Exception:
        return False
