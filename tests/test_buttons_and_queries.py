"""Cancel (button and command), status and history, and Slack outages."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update
from sqlmodel import col

from bot.devtools.local import LocalBot
from bot.store.models import Deployment
from commands.actions import ActionId
from tests.conftest import eventually, make_config, step
from tests.processes import cancel_runs, leftovers, processes_mentioning
from tests.test_deploy_flow import deployments, finished


async def card(bot: LocalBot, channel: str = "#deploys-api") -> dict:
    async def check() -> dict | None:
        roots = bot.slack.messages(channel)
        return roots[0] if roots else None

    return await eventually(check)


async def ephemerals_to(bot: LocalBot, user: str, count: int = 1,
                        delivered: bool = True) -> list[str]:
    """What the bot said privately to ``user`` in a channel; only what Slack accepted, unless
    ``delivered=False`` (attempts the fake refused, e.g. to a user it does not know)."""
    async def check() -> list[str] | None:
        texts = [c.params["text"] for c in bot.slack.calls_to("chat.postEphemeral")
                 if c.params.get("user") == user and (not delivered or not c.failed)]
        return texts if len(texts) >= count else None

    return await eventually(check)


def buttons(message: dict) -> list[dict]:
    return [e for b in message.get("blocks", []) if b["type"] == "actions" for e in b["elements"]]


async def slow_build_bot(make_bot, tmp_path: Path) -> LocalBot:
    config = make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_SLEEP=30,
                                           STEP_MARK=tmp_path / "ci-started"))
    return await make_bot(config)


async def test_cancel_button_stops_the_build_and_updates_the_card(make_bot, tmp_path) -> None:
    bot = await slow_build_bot(make_bot, tmp_path)
    await bot.driver.command("api staging v5.0.0")
    await eventually(lambda: _async((tmp_path / "ci-started").exists()))
    root = await card(bot)
    [cancel] = buttons(root)
    assert cancel["action_id"] == ActionId.CANCEL and cancel["text"]["text"] == "Cancel"

    resp = await bot.driver.click(ActionId.CANCEL, cancel["value"], user="U0BOB",
                                  channel="#deploys-api", message_ts=root["ts"])
    assert resp.status_code == 200
    [text] = await ephemerals_to(bot, "U0BOB")
    assert text == "Cancelled deployment #1 of api to staging."
    [dep] = await finished(bot)
    assert dep.state == "cancelled"

    async def card_without_buttons() -> dict | None:
        root = await card(bot)
        told = any("Cancelled by <@U0BOB>" in r["text"] for r in root["replies"])
        return root if "Cancelled" in json.dumps(root) and not buttons(root) and told else None

    await card_without_buttons_wait(card_without_buttons)
    assert not (tmp_path / "deploy.log").exists()

    # A second click (double click, or a stale card) changes nothing and says why.
    await bot.driver.click(ActionId.CANCEL, cancel["value"], user="U0BOB", channel="#deploys-api")
    texts = await ephemerals_to(bot, "U0BOB", count=2)
    assert texts[1] == "Deployment #1 already ended: Cancelled."


async def card_without_buttons_wait(check) -> dict:
    return await eventually(check)


async def _async(value: bool) -> bool:
    return value


async def test_tampered_or_unknown_button_values_change_nothing(make_bot, tmp_path) -> None:
    bot = await slow_build_bot(make_bot, tmp_path)
    await bot.driver.command("api staging v5.0.0")
    await bot.driver.click(ActionId.CANCEL, "1 OR 1=1", user="U0EVE")
    await bot.driver.click(ActionId.CANCEL, "999", user="U0EVE")
    texts = await ephemerals_to(bot, "U0EVE", count=2)
    assert "That button is not valid any more" in texts[0]
    assert texts[1] == "Deployment #999 does not exist; nothing was changed."
    [dep] = await deployments(bot)
    assert dep.state in ("requested", "queued", "building")


async def test_cancel_command_and_cancel_refused_once_deploying(make_bot, tmp_path) -> None:
    config = make_config(tmp_path, deploy=step(tmp_path / "deploy.log", STEP_SLEEP=30,
                                               STEP_MARK=tmp_path / "deploying"))
    bot = await make_bot(config)
    nothing = await bot.driver.command("cancel api staging")
    assert "Nothing to cancel" in nothing.json()["text"]
    await bot.driver.command("api staging v6.0.0")
    await eventually(lambda: _async((tmp_path / "deploying").exists()))
    refused = await bot.driver.command("cancel api staging")
    assert "already being changed, so it cannot be cancelled safely" in refused.json()["text"]
    [dep] = await deployments(bot)
    assert dep.state == "deploying"


async def test_status_and_history(make_bot, tmp_path) -> None:
    bot = await make_bot()
    empty = await bot.driver.command("history api")
    assert "No deployments of api yet" in empty.json()["text"]
    await bot.driver.command("api staging v1.0.0", user="U0ALICE")
    await finished(bot, 1)
    await bot.driver.command("api staging v1.1.0", user="U0BOB")
    await finished(bot, 2)

    status = (await bot.driver.command("status api")).json()["text"]
    assert "• *api* staging: `v1.1.0` since" in status and "by <@U0BOB>" in status
    assert "• *api* production: nothing deployed by Shipbot yet" in status
    assert "web" not in status

    history = (await bot.driver.command("history api staging")).json()["text"]
    lines = history.splitlines()
    assert lines[0] == "*Last 2 deployments of api staging*"
    assert "#2" in lines[1] and "v1.1.0" in lines[1] and "Succeeded" in lines[1]
    assert "#1" in lines[2] and "v1.0.0" in lines[2] and "took" in lines[2]


async def test_status_shows_deployment_in_progress(make_bot, tmp_path) -> None:
    bot = await slow_build_bot(make_bot, tmp_path)
    await bot.driver.command("api staging v7.0.0", user="U0CAROL")
    building = "↳ :hammer_and_wrench: Building: `v7.0.0` by <@U0CAROL>, #1"

    async def status_when_building() -> str | None:
        text = (await bot.driver.command("status")).json()["text"]
        return text if building in text else None

    status = await eventually(status_when_building)
    assert "• *worker* staging" in status and "• *worker* dev" not in status


async def test_slack_outage_delays_messages_but_not_the_deployment(make_bot, tmp_path) -> None:
    bot = await make_bot()
    bot.slack.fail_next("chat.postMessage", error="internal_error", times=1)
    bot.slack.fail_next("chat.update", status=503, error="service_unavailable", times=3)
    await bot.driver.command("api staging v8.0.0")
    [dep] = await finished(bot)
    assert dep.state == "succeeded"  # Slack's trouble did not touch the deployment

    async def all_delivered() -> dict | None:
        roots = bot.slack.messages("#deploys-api")
        ok = roots and len(roots[0]["replies"]) == 4 and "Succeeded" in json.dumps(roots[0])
        return roots[0] if ok else None

    root = await eventually(all_delivered, timeout=30)
    assert len(bot.slack.messages("#deploys-api")) == 1  # the retry did not post a 2nd card
    assert "is live on staging" in root["replies"][-1]["text"]
    failed = {c.method for c in bot.slack.calls if c.failed}
    # The card's post failed and was retried; whether a card update was due while
    # chat.update still failed depends on how far the deployment got meanwhile.
    assert "chat.postMessage" in failed and failed <= {"chat.postMessage", "chat.update"}
    metrics = (await bot.driver.http.get(bot.url + "/metrics")).text
    assert 'shipbot_slack_api_errors_total{error="internal_error",method="chat.postMessage"}' \
        in metrics


async def test_cancel_waits_out_a_step_that_may_be_starting_the_deploy(make_bot, tmp_path):
    """While the runner holds the lease it may be launching the deploy: a cancel then must
    not claim "nothing was changed"; it looks again briefly and, if still busy, says so."""
    bot = await slow_build_bot(make_bot, tmp_path)
    await bot.driver.command("api staging v8.0.0")
    await eventually(lambda: _async((tmp_path / "ci-started").exists()))

    async def building() -> bool:  # our runner's step that started the build has committed
        return [d.state for d in await deployments(bot)] == ["building"]

    await eventually(building)  # (until then a step of ours may still record the launch)
    async with bot.bot.sessions() as session:  # a runner elsewhere is mid-step, for a minute
        await session.exec(update(Deployment).values(
            lease_owner="shipbot-other", lease_until=bot.bot.clock() + timedelta(minutes=1),
            # as a real claim does: a step of ours in flight now must not overwrite it
            row_version=col(Deployment.row_version) + 1))
        await session.commit()
    text = (await bot.driver.command("cancel api staging")).json()["text"]
    assert text.startswith("The deployment is in the middle of a step; nothing was cancelled.")
    [dep] = await deployments(bot)
    assert dep.state == "building" and dep.finished_at is None


def test_a_process_left_by_a_test_is_found_and_killed(tmp_path: Path) -> None:
    """What make_bot's teardown relies on to fail a test that leaks a step's process."""
    marker = f"{tmp_path}{os.sep}"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            env={**os.environ, "STEP_MARK": f"{marker}ci-started"})
    try:
        [(pid, cmdline)] = leftovers(marker, timeout=0.2)
        assert pid == proc.pid and "time.sleep(30)" in cmdline
        assert proc.wait(5) == -signal.SIGKILL
        assert leftovers(marker, timeout=0) == []
    finally:
        proc.kill()
        proc.wait()


async def test_a_build_left_running_is_cancelled_when_its_test_ends(tmp_path: Path) -> None:
    """slow_build_bot's 30 s build, left running by the test, is stopped by the teardown's
    cancel (not merely killed by the leak check), and its run records the cancel."""
    config = make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_SLEEP=30,
                                           STEP_MARK=tmp_path / "ci-started"))
    async with LocalBot(config, database_url=f"sqlite:///{tmp_path}/shipbot.db",
                        state_dir=tmp_path / "state") as bot:
        await bot.driver.command("api staging v9.0.0")
        await eventually(lambda: _async((tmp_path / "ci-started").exists()))
    marker = f"{tmp_path}{os.sep}"
    assert processes_mentioning(marker), "the build outlives the bot, by design"
    assert await asyncio.to_thread(cancel_runs, tmp_path / "state") == 1
    assert await asyncio.to_thread(leftovers, marker) == []
    [result] = (tmp_path / "state").glob("**/result.json")
    assert json.loads(result.read_text())["error"] == "cancelled"
