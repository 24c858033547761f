"""Rollbacks: exactly one per alert whatever the clicking, permissions, auto-rollback and
its Redeploy, `/rollback` and `/deploy rollback`, native undo, approval when asked for."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.slack.blocks_alerts import ALERT_REDEPLOY_ACTION, ALERT_ROLLBACK_ACTION
from bot.store.models import AuditEvent, Deployment
from commands.actions import ActionId
from tests.alert_helpers import (
    alert_config,
    alert_roots,
    alert_thread,
    am_alert,
    am_payload,
    deploy,
    post,
    texts,
    threads,
)
from tests.conftest import eventually, step
from tests.test_buttons_and_queries import buttons, ephemerals_to
from tests.test_deploy_flow import deployments

WEB = {"alertname": "HighErrorRate", "service": "web", "env": "staging",
       "severity": "critical"}


def log_lines(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


async def alerted(bot: LocalBot, labels: dict[str, str] = WEB, **kw: str) -> dict:
    """Fire an alert; return the suspect reply once it is posted."""
    resp = await post(bot, "alertmanager", am_payload(am_alert(labels, **kw)))
    assert resp.status_code == 200, resp.text
    root = await alert_thread(bot, f"#deploys-{labels['service']}", name=labels["alertname"])
    return root["replies"][0]


async def finished_count(bot: LocalBot, count: int) -> list[Deployment]:
    async def check() -> list[Deployment] | None:
        deps = await deployments(bot)
        return deps if len(deps) >= count and all(d.finished_at for d in deps) else None

    return await eventually(check, timeout=20)


async def test_concurrent_clicks_and_retries_give_exactly_one_rollback(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    reply = await alerted(bot)
    value = buttons(reply)[0]["value"]
    # Bob double-clicks, Carol and Dan click at the same moment, Slack retries one.
    clickers = ["U0BOB", "U0BOB", "U0CAROL", "U0DAN", "U0DAN"]
    await asyncio.gather(*(bot.driver.click(ALERT_ROLLBACK_ACTION, value, user=u)
                           for u in clickers))
    deps = await finished_count(bot, 3)
    assert len(deps) == 3 and deps[2].kind == "rollback" and deps[2].state == "succeeded"
    assert [r[2] for r in log_lines(tmp_path / "web.log")] == ["v1", "v2", "v1"]
    answers = [t for u in ("U0BOB", "U0CAROL", "U0DAN")
               for t in await ephemerals_to(bot, u, count=clickers.count(u))]
    assert sum(t.startswith(":rewind: Rollback #3") for t in answers) == 1
    assert all(t.startswith("Already handled: Rollback #3 to `v1`") for t in answers
               if not t.startswith(":rewind:"))
    async with bot.bot.sessions() as session:
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "rollback_requested"))).all()
    assert len(events) == 1
    # Later clicks (a stale message) say what happened instead of rolling back again.
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0ERIN")
    [late] = await ephemerals_to(bot, "U0ERIN")
    assert late.startswith("Already handled: Rollback #3 to `v1` by <@U0")
    assert "(succeeded)" in late
    assert len(await deployments(bot)) == 3


async def test_clicker_without_the_rollback_role_is_refused(make_bot, tmp_path, quiet):
    config = alert_config(tmp_path, environments={
        "dev": {}, "staging": {"roles": {"rollback": ["U0CAROL"]}},
        "production": {"approval": {"approvers": ["U0CAROL"]}}})
    bot = await make_bot(config, fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    value = buttons(await alerted(bot))[0]["value"]
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0DAVE")
    [refused] = await ephemerals_to(bot, "U0DAVE")
    assert "You lack the *rollback* role for staging. Who has it: <@U0CAROL>" in refused
    assert len(await deployments(bot)) == 2
    resp = await bot.driver.command("web staging", user="U0DAVE", command="/rollback")
    assert "You lack the *rollback* role for staging" in resp.json()["text"]
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0CAROL")
    assert (await finished_count(bot, 3))[2].requester == "U0CAROL"


async def test_auto_rollback_announces_and_offers_redeploy(make_bot, tmp_path, quiet) -> None:
    rule = {"auto_rollback": {"alerts": ["HighErrorRate"], "severity": "critical",
                              "within": "30m"}}
    bot = await make_bot(alert_config(tmp_path, services={"web": rule}), fake_slack=quiet)
    await deploy(bot, "web staging v1.4.1")
    await deploy(bot, "web staging v1.4.2")
    # Not in the list, or not severe enough: a button, no automatic action.
    await alerted(bot, {**WEB, "alertname": "DiskFull"}, fingerprint="d1")
    resp = await post(bot, "alertmanager", am_payload(
        am_alert({**WEB, "severity": "warning"}, fingerprint="w1"), group_key="warn"))
    assert resp.status_code == 200  # auto-rollbacks are decided before the answer
    await bot.next_tick()  # and anything recorded meanwhile has had its turn
    assert len(await deployments(bot)) == 2

    await post(bot, "alertmanager", am_payload(am_alert(WEB, fingerprint="c1"), group_key="c"))
    deps = await finished_count(bot, 3)
    rollback = deps[2]
    assert (rollback.kind, rollback.version, rollback.requester) == ("rollback", "v1.4.1",
                                                                     "shipbot")
    assert rollback.state == "succeeded" and rollback.recovery_seconds is not None

    async def redeploy_offered() -> dict | None:
        for root in alert_roots(bot, "#deploys-web", "HighErrorRate"):
            labels = [b["text"]["text"] for r in root["replies"][:1] for b in buttons(r)]
            if "Redeploy v1.4.2" in labels:
                return root
        return None

    root = await eventually(redeploy_offered)
    story = "\n".join(r["text"] for r in root["replies"])
    assert ":robot_face: *Auto-rollback*: HighErrorRate fired" in story
    assert "as `auto_rollback` for web asks. Rolling back to `v1.4.1`" in story
    assert "Roll back to" not in texts(root["replies"][0])
    redeploy = next(b for b in buttons(root["replies"][0])
                    if b["action_id"] == ALERT_REDEPLOY_ACTION)
    await asyncio.gather(*(bot.driver.click(ALERT_REDEPLOY_ACTION, redeploy["value"],
                                            user="U0BOB") for _ in range(3)))
    deps = await finished_count(bot, 4)
    assert len(deps) == 4
    assert (deps[3].kind, deps[3].version, deps[3].state) == ("redeploy", "v1.4.2", "succeeded")
    assert [r[2] for r in log_lines(tmp_path / "web.log")] == [
        "v1.4.1", "v1.4.2", "v1.4.1", "v1.4.2"]

    async def told() -> bool:
        root = alert_roots(bot, "#deploys-web", "HighErrorRate")
        replies = [r["text"] for x in root for r in x["replies"]]
        return any("Redeploy #4 done" in t for t in replies)

    await eventually(told)


async def test_rollback_and_deploy_rollback_commands(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    resp = await bot.driver.command("api staging", command="/rollback")
    assert resp.json()["text"] == "Nothing to roll back: Shipbot has no successful " \
                                  "deployment of api on staging."
    await deploy(bot, "api staging v1.4.0")
    await deploy(bot, "api staging v1.4.1")
    await deploy(bot, "api staging v1.4.2")
    usage = await bot.driver.command("", command="/rollback")
    assert usage.json()["text"].startswith("Usage: `/rollback <service> <env> [version]")
    never = await bot.driver.command("rollback api staging v9.9.9")
    assert "`v9.9.9` never succeeded on staging" in never.json()["text"]
    same = await bot.driver.command("api staging v1.4.2", command="/rollback")
    assert same.json()["text"] == "api staging already runs `v1.4.2`; nothing to roll back."

    # Default: the last version that succeeded before the current one; Slack retries once.
    body = dict(command="/rollback", trigger_id="1234.5.retry", user="U0BOB")
    first, retry = await asyncio.gather(bot.driver.command("api staging", **body),
                                        bot.driver.command("api staging", **body))
    assert first.json()["text"].startswith(
        ":rewind: Rollback #4 of api staging from `v1.4.2` to `v1.4.1`")
    assert retry.json()["text"] == first.json()["text"]  # the retry gets the first reply
    deps = await finished_count(bot, 4)
    assert (deps[3].kind, deps[3].version, deps[3].previous_version) == (
        "rollback", "v1.4.1", "v1.4.2")
    assert len(log_lines(tmp_path / "ci.log")) == 3  # no build for the rollback

    # `/deploy rollback` with an explicit earlier version.
    resp = await bot.driver.command('rollback api staging v1.4.0 --reason "still broken"')
    assert "Rollback #5 of api staging from `v1.4.1` to `v1.4.0`" in resp.json()["text"]
    deps = await finished_count(bot, 5)
    assert (deps[4].version, deps[4].reason) == ("v1.4.0", "still broken")

    async def posted() -> dict[str, Any] | None:  # the thread is posted after the database
        card = next(m for m in bot.slack.messages("#deploys-api") if "Deployment #5" in texts(m))
        said = [r["text"] for r in card["replies"]]
        return card if ":rewind: Rolling staging back to `v1.4.0`." in said else None

    card = await eventually(posted)
    assert card["blocks"][0]["text"]["text"] == "⏪ ROLLBACK api → staging"


async def test_rollback_while_another_deployment_runs_says_so(make_bot, tmp_path, quiet):
    slow = {"provider": "command", "timeout_seconds": 60, "argv": [
        sys.executable, "-c", "import sys, time; time.sleep(30 if 'slow' in sys.argv[3] else 0)",
        "{service}", "{env}", "{version}"]}
    bot = await make_bot(alert_config(tmp_path, services={"web": {"deploy": slow}}),
                         fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    value = buttons(await alerted(bot))[0]["value"]
    await bot.driver.command("web staging slow-v3", user="U0ERIN")

    async def deploying() -> bool:
        return (await deployments(bot))[-1].state == "deploying"

    await eventually(deploying)
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0BOB")
    [busy] = await ephemerals_to(bot, "U0BOB")
    assert busy.startswith(":no_entry: web staging is busy: <@U0ERIN> is deploying `slow-v3`")
    assert "Nothing was started" in busy and busy.endswith("Then roll back again if still needed.")
    resp = await bot.driver.command("web staging", command="/rollback")
    assert "web staging is busy" in resp.json()["text"]
    assert len(await deployments(bot)) == 3


async def test_rollback_after_the_service_moved_on_is_refused(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    value = buttons(await alerted(bot))[0]["value"]
    await deploy(bot, "web staging v3")
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0BOB")
    [text] = await ephemerals_to(bot, "U0BOB")
    assert text.startswith("web staging changed since this alert: it now runs `v3` (#3).")
    assert len(await deployments(bot)) == 3


async def test_keyboard_rollback_reports_in_the_open_alert_thread(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    await alerted(bot)
    resp = await bot.driver.command("web staging", command="/rollback", user="U0BOB")
    assert resp.json()["text"].startswith(":rewind: Rollback #3")
    await finished_count(bot, 3)

    async def reported() -> bool:
        [root] = alert_roots(bot, "#deploys-web")
        story = "\n".join(r["text"] for r in root["replies"])
        return "<@U0BOB> started rollback #3" in story and "Rollback #3 done" in story

    await eventually(reported)
    [thread] = await threads(bot)
    assert thread.rollback_deployment_id == 3
    assert (await deployments(bot))[2].recovery_seconds is not None


async def test_native_undo_is_used_when_the_target_has_one(make_bot, tmp_path, quiet) -> None:
    target = step(tmp_path / "web.log")
    target["rollback_argv"] = [sys.executable, target["argv"][1], "undo", "{env}", "{version}"]
    bot = await make_bot(alert_config(tmp_path, services={"web": {"deploy": target}}),
                         fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    await bot.driver.command("web staging", command="/rollback")
    await finished_count(bot, 3)
    assert log_lines(tmp_path / "web.log") == [
        ["web", "staging", "v1"], ["web", "staging", "v2"], ["undo", "staging", "v1"]]


async def test_rollback_waits_for_approval_when_the_environment_asks(
        make_bot, tmp_path, quiet) -> None:
    config = alert_config(tmp_path, environments={
        "dev": {}, "staging": {"approval": {"approvers": ["U0CAROL"], "rollbacks": True,
                                           "allow_self_approval": True}},
        "production": {"approval": {"approvers": ["U0CAROL"]}}})
    bot = await make_bot(config, fake_slack=quiet)
    for n, version in enumerate(("v1", "v2")):
        await bot.driver.command(f"web staging {version}")

        async def waiting(n: int = n) -> bool:
            deps = await deployments(bot)
            return len(deps) > n and deps[n].state == "awaiting_approval"

        await eventually(waiting)
        await bot.driver.click(ActionId.APPROVE, str(n + 1), user="U0CAROL")
        await finished_count(bot, n + 1)
    value = buttons(await alerted(bot))[0]["value"]
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0BOB")

    async def awaiting() -> bool:
        deps = await deployments(bot)
        return len(deps) == 3 and deps[2].state == "awaiting_approval"

    await eventually(awaiting)
    await bot.driver.click(ActionId.APPROVE, "3", user="U0CAROL")
    deps = await finished_count(bot, 3)
    assert (deps[2].kind, deps[2].state, deps[2].version) == ("rollback", "succeeded", "v1")

    async def asked() -> bool:
        [root] = alert_roots(bot, "#deploys-web")
        return any("Rollback #3 needs approval first" in r["text"] for r in root["replies"])

    await eventually(asked)
