"""Rollbacks that cannot start say why and change nothing: no earlier version, a stale or
unknown alert, an alert with no suspect, nothing to undo."""

from __future__ import annotations

from sqlmodel import select

from bot.store.models import AlertThread
from tests.alert_helpers import alert_config, am_alert, am_payload, deploy, post
from tests.test_deploy_flow import deployments
from tests.test_rollback import WEB, alerted


async def test_rollback_with_no_earlier_version_asks_for_one(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1.0.0")
    resp = await bot.driver.command("web staging", user="U0CAROL", command="/rollback")
    assert resp.json()["text"] == (
        "No earlier version of web succeeded on staging before `v1.0.0`. Name one: "
        "`/rollback web staging v1.2.3`.")
    assert len(await deployments(bot)) == 1


async def test_alert_buttons_that_cannot_roll_back_change_nothing(
        make_bot, tmp_path, quiet) -> None:
    """Stale or forged button values reach the engine; it answers, starts nothing."""
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1.0.0")  # one version only: no suspect to roll back from
    await alerted(bot, {**WEB, "alertname": "DiskFull"}, fingerprint="d1")
    rollbacks = bot.bot.rollbacks
    assert await rollbacks.from_alert(424242, "U0CAROL") == (
        "That alert is not known any more; nothing was started.")
    async with bot.bot.sessions() as session:
        [thread] = (await session.exec(select(AlertThread))).all()
    assert await rollbacks.from_alert(thread.id, "U0CAROL") == (
        "This alert offers no rollback (no suspect deployment with an earlier version). "
        "Use `/rollback <service> <env> <version>` if you need one.")
    assert await rollbacks.redeploy(thread.id, "U0CAROL") == (
        "There is no rollback to undo for this alert; nothing was started.")
    assert await rollbacks.redeploy(424242, "U0CAROL") == (
        "There is no rollback to undo for this alert; nothing was started.")
    assert len(await deployments(bot)) == 1


async def test_a_delivery_that_fails_half_way_still_rolls_back_what_it_recorded(
        make_bot, tmp_path, quiet) -> None:
    """An alert storm fails after its first chunk: the sender gets a 503 and retries the
    whole delivery, but the rollback the recorded alert asks for starts now, once."""
    rule = {"auto_rollback": {"alerts": ["HighErrorRate"], "severity": "critical"}}
    bot = await make_bot(alert_config(tmp_path, services={"web": rule}), fake_slack=quiet)
    await deploy(bot, "web staging v1.4.1")
    await deploy(bot, "web staging v1.4.2")
    service = bot.bot.alerts
    service.chunk = 1
    real, calls = service._receive, []

    async def second_chunk_fails(chunk):  # the database goes away mid-delivery
        calls.append(chunk)
        if len(calls) == 2:
            raise OSError("connection reset")
        return await real(chunk)

    service._receive = second_chunk_fails
    payload = am_payload(am_alert(WEB, fingerprint="c1"),
                         am_alert({**WEB, "instance": "b"}, fingerprint="c2"))
    resp = await post(bot, "alertmanager", payload)
    assert (resp.status_code, resp.json()) == (
        503, {"ok": False, "error": "could not record the alerts now; retry later"})
    deps = await deployments(bot)
    assert [(d.kind, d.version) for d in deps[2:]] == [("rollback", "v1.4.1")]

    service._receive = real  # the sender's retry: the first alert is a repeat now
    assert (await post(bot, "alertmanager", payload)).status_code == 200
    assert len(await deployments(bot)) == 3
