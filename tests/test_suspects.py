"""Which deployment an alert suspects and which version a rollback restores, on histories
too long, too crowded or too close to the alert for the simple cases to show."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.devtools.local import LocalBot
from bot.store.models import Deployment
from tests.alert_helpers import alert_config, alert_thread, am_alert, am_payload, deploy, iso, post
from tests.alert_helpers import texts as message_text
from tests.test_rules import breakable


def succeeded(n: int, version: str, finished: datetime, created: datetime | None = None,
              service: str = "web") -> Deployment:
    created = created or finished - timedelta(seconds=30)
    return Deployment(request_key=f"seed-{n}", service=service, env="staging", version=version,
                      requester="U0ALICE", state="succeeded", channel=f"#deploys-{service}",
                      created_at=created, updated_at=finished, finished_at=finished)


async def seed(bot: LocalBot, *rows: Deployment) -> None:
    async with bot.bot.sessions() as session:
        session.add_all(rows)
        await session.commit()


async def suspect_reply(bot: LocalBot, started: datetime) -> str:
    labels = {"alertname": "HighErrorRate", "service": "web", "env": "staging",
              "severity": "critical"}
    resp = await post(bot, "alertmanager", am_payload(am_alert(labels, starts_at=iso(started))))
    assert resp.status_code == 200, resp.text
    root = await alert_thread(bot, "#deploys-web", name="HighErrorRate")
    return message_text(root["replies"][0])


async def test_a_long_streak_of_redeploys_still_rolls_back_to_the_version_before(
        make_bot, tmp_path, quiet) -> None:
    """26 redeploys of v2 after v1 (more than one page of history), and a v3 that went out
    after the alert started: the suspect is the last v2 and the rollback target v1."""
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    alert = datetime.now(UTC).replace(microsecond=0)
    start = alert - timedelta(minutes=30)
    rows = [succeeded(1, "v1", start)]
    rows += [succeeded(n, "v2", start + timedelta(minutes=n)) for n in range(2, 28)]
    rows.append(succeeded(28, "v3", alert + timedelta(minutes=2), alert + timedelta(minutes=1)))
    await seed(bot, *rows)
    reply = await suspect_reply(bot, alert)
    assert "#27 `v2`" in reply and "Roll back to v1" in reply


async def test_a_deployment_that_finished_as_the_alert_started_is_the_suspect(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    alert = datetime.now(UTC).replace(microsecond=0)
    await seed(bot, succeeded(1, "v1", alert - timedelta(minutes=20)),
               succeeded(2, "v2", alert, created=alert))
    reply = await suspect_reply(bot, alert)
    assert "#2 `v2`" in reply and "Roll back to v1" in reply


async def test_rollback_looks_only_at_what_runs_on_that_service_and_environment(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(breakable(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    await deploy(bot, "web staging v3-broken")
    await deploy(bot, "web staging v4-broken")
    await deploy(bot, "api staging v9")  # another service on the environment
    await deploy(bot, "web dev v7")  # the service on another environment
    reply = await suspect_reply(bot, datetime.now(UTC))
    assert "#2 `v2`" in reply and "Roll back to v1" in reply
    never = await bot.driver.command("web staging v9", command="/rollback")
    assert "`v9` never succeeded on staging" in never.json()["text"]
    resp = await bot.driver.command("web staging", command="/rollback")
    assert resp.json()["text"].startswith(
        ":rewind: Rollback #7 of web staging from `v2` to `v1`")


async def test_nothing_earlier_to_roll_back_to_is_said_plainly(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v1")  # a redeploy is not an earlier version
    resp = await bot.driver.command("web staging", command="/rollback")
    assert resp.json()["text"] == ("No earlier version of web succeeded on staging before "
                                   "`v1`. Name one: `/rollback web staging v1.2.3`.")


async def test_a_deployment_that_finished_exactly_the_window_before_is_still_suspected(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path, alerts={"suspect_window": "30m"}),
                         fake_slack=quiet)
    alert = datetime.now(UTC).replace(microsecond=0)
    await seed(bot, succeeded(1, "v1", alert - timedelta(hours=2)),
               succeeded(2, "v2", alert - timedelta(minutes=30)))
    reply = await suspect_reply(bot, alert)
    assert "#2 `v2`" in reply and "Roll back to v1" in reply
