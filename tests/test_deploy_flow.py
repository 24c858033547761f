"""`/deploy api staging` end to end: signed HTTP in, Slack Web API calls and DB rows out."""

from __future__ import annotations

import json
from pathlib import Path

from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.store.models import AuditEvent, Deployment
from tests.conftest import eventually, make_config, step


async def deployments(bot: LocalBot) -> list[Deployment]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(Deployment).order_by(Deployment.id))).all())


async def finished(bot: LocalBot, count: int = 1) -> list[Deployment]:
    async def check() -> list[Deployment] | None:
        deps = await deployments(bot)
        done = [d for d in deps if d.finished_at is not None]
        return deps if len(done) >= count else None

    return await eventually(check)


async def delivered(bot: LocalBot, channel: str, replies: int) -> dict:
    """Wait until the card in ``channel`` has ``replies`` thread replies; return it."""
    async def check() -> dict | None:
        roots = bot.slack.messages(channel)
        return roots[0] if roots and len(roots[0]["replies"]) >= replies else None

    return await eventually(check)


def card_text(card: dict) -> str:
    return json.dumps(card["blocks"], ensure_ascii=False)


async def test_deploy_reaches_staging_and_reports_every_step(make_bot, tmp_path: Path) -> None:
    bot = await make_bot()
    resp = await bot.driver.command('api staging v1.4.2 --reason "fix login timeout"')

    assert resp.status_code == 200
    ack = resp.json()
    assert ack["response_type"] == "ephemeral"
    assert "Deployment #1 of api `v1.4.2` to staging is on its way" in ack["text"]

    [dep] = await finished(bot)
    assert dep.state == "succeeded"
    assert dep.version == "v1.4.2"
    assert dep.requester == "U0ALICE"
    assert dep.active_slot is None

    # The provider ran the argv from the config, once each.
    ci_runs = [json.loads(line) for line in (tmp_path / "ci.log").read_text().splitlines()]
    deploy_runs = [json.loads(x) for x in (tmp_path / "deploy.log").read_text().splitlines()]
    assert ci_runs == [["api", "staging", "v1.4.2"]]
    assert deploy_runs == [["api", "staging", "v1.4.2"]]

    # One status card, kept current, with the story in its thread.
    card = await delivered(bot, "#deploys-api", replies=4)
    await eventually(lambda: _card_says(bot, "Succeeded"))
    [card] = bot.slack.messages("#deploys-api")
    text = card_text(card)
    assert "api → staging" in text and "v1.4.2" in text and "<@U0ALICE>" in text
    assert "fix login timeout" in text and "took" in text
    thread = [r["text"] for r in card["replies"]]
    assert thread[0].startswith(":hammer_and_wrench: Build started for `v1.4.2`")
    assert thread[1].startswith(":white_check_mark: Build passed (exited with code 0)")
    assert thread[2].startswith(":rocket: Deploying `v1.4.2` to staging")
    assert "api v1.4.2 is live on staging" in thread[3]
    # The build's output tail is shown in the thread.
    assert "done with code 0" in json.dumps(card["replies"][1]["blocks"])
    assert len(bot.slack.calls_to("chat.postMessage")) == 5  # card + 4 replies

    async with bot.bot.sessions() as session:
        events = (await session.exec(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert [(e.from_state, e.to_state) for e in events] == [
        (None, "requested"), ("requested", "queued"), ("queued", "building"),
        ("building", "deploying"), ("deploying", "succeeded"),
    ]
    assert events[0].actor == "U0ALICE"


async def _card_says(bot: LocalBot, words: str) -> bool:
    roots = bot.slack.messages("#deploys-api")
    return bool(roots) and words in card_text(roots[0])


async def test_failed_build_stops_before_deploy_and_says_why(make_bot, tmp_path: Path) -> None:
    config = make_config(tmp_path, ci=step(tmp_path / "ci.log", STEP_EXIT=3))
    bot = await make_bot(config)
    await bot.driver.command("api staging v2.0.0")

    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert "Build failed: exited with code 3" in dep.detail
    assert not (tmp_path / "deploy.log").exists()
    card = await delivered(bot, "#deploys-api", replies=2)
    last = card["replies"][-1]
    assert "Build failed: exited with code 3" in last["text"]
    assert "staging was not touched" in last["text"]
    assert "done with code 3" in json.dumps(last["blocks"])


async def test_hanging_deploy_times_out_and_fails_with_reason(make_bot, tmp_path: Path) -> None:
    config = make_config(
        tmp_path, deploy=step(tmp_path / "deploy.log", STEP_SLEEP=60, timeout=1))
    bot = await make_bot(config)
    await bot.driver.command("api staging v2.0.1")

    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert "timed out" in dep.detail
    card = await delivered(bot, "#deploys-api", replies=4)
    assert "timed out" in card["replies"][-1]["text"]


async def test_no_version_uses_latest_build_from_ci(make_bot, tmp_path: Path) -> None:
    ci = step(tmp_path / "ci.log")
    ci["latest_version_argv"] = ["python3", "-c", "print('v9.9.9')"]
    bot = await make_bot(make_config(tmp_path, ci=ci))
    resp = await bot.driver.command("api staging")
    assert "the latest build" in resp.json()["text"]
    [dep] = await finished(bot)
    assert (dep.state, dep.version) == ("succeeded", "v9.9.9")
    card = await delivered(bot, "#deploys-api", replies=5)
    assert "the latest build is `v9.9.9`" in card["replies"][0]["text"]


async def test_no_version_and_no_ci_lookup_asks_for_one(make_bot, tmp_path: Path) -> None:
    bot = await make_bot()
    await bot.driver.command("api staging")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    assert "Name one: `/deploy api staging v1.2.3`" in dep.detail
    await eventually(lambda: _card_says(bot, "Name one"))


async def test_the_card_is_edited_and_threaded_by_channel_id(make_bot) -> None:
    """Posted by name, the card is then addressed by the ID Slack answers with: chat.update
    and the replies take that ID (a name there is channel_not_found on real Slack)."""
    bot = await make_bot()
    await bot.driver.command("api staging v1.4.2")
    await finished(bot)
    await eventually(lambda: _card_says(bot, "Succeeded"))
    api = bot.slack.channel_id("#deploys-api")
    [dep] = await deployments(bot)
    assert dep.card_channel == api
    updates = bot.slack.calls_to("chat.update")
    replies = [c for c in bot.slack.calls_to("chat.postMessage") if c.params.get("thread_ts")]
    assert updates and {c.params["channel"] for c in updates + replies} == {api}
    assert {c.response["error"] for c in bot.slack.calls if c.failed} <= {"ratelimited"}


async def test_a_service_configured_by_channel_id(make_bot, tmp_path: Path) -> None:
    """A config may give the channel's ID: the ack links it as <#ID> (a bare ID reads as
    gibberish in Slack) and everything is posted there."""
    services = {"api": {"channel": "C0123ABCD", "deploy": step(tmp_path / "deploy.log")}}
    bot = await make_bot(make_config(tmp_path, services=services))
    resp = await bot.driver.command("api staging v1.4.2")
    assert "Progress is posted in <#C0123ABCD>;" in resp.json()["text"]
    [dep] = await finished(bot)
    assert dep.state == "succeeded"
    card = await delivered(bot, "C0123ABCD", replies=2)
    assert "v1.4.2" in card_text(card)
    assert [d.card_channel for d in await deployments(bot)] == ["C0123ABCD"]
    assert {c.params["channel"] for c in bot.slack.calls_to("chat.update")} == {"C0123ABCD"}


async def test_the_card_ends_current_when_chat_update_is_rate_limited(
        make_bot, fake_slacks) -> None:
    """chat.update is Tier 3; made small here (a burst of 1, then one call every 2 s) so a
    single deployment meets it: Slack answers 429 with Retry-After, the bot copes (its
    client waits Retry-After out; the outbox retries what still fails), and the card still
    ends showing the outcome."""
    slack = await fake_slacks(tiers={3: (30.0, 1)})
    bot = await make_bot(fake_slack=slack)
    await bot.driver.command("api staging v1.4.3")
    [dep] = await finished(bot)
    assert dep.state == "succeeded"

    async def current() -> bool:
        return await _card_says(bot, "Succeeded")

    await eventually(current, timeout=30)
    updates = slack.calls_to("chat.update")
    assert any(c.status == 429 for c in updates)  # the limit was met...
    assert updates[-1].status == 200  # ...and the last refresh went through
