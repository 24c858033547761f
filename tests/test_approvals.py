"""Production approvals: buttons, four eyes, user groups, races, reject modal, expiry."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.slack.blocks import REJECT_CALLBACK
from bot.store.models import Approval, AuditEvent
from commands.actions import ActionId
from tests.conftest import FakeClock, eventually, make_config, requests_told
from tests.test_buttons_and_queries import buttons, ephemerals_to
from tests.test_deploy_flow import deployments, finished


async def staged(bot: LocalBot, version: str = "v1.4.2") -> None:
    """Promotion order: the version must succeed on staging before production."""
    await bot.driver.command(f"api staging {version}")
    await eventually(lambda: _done(bot, "staging"))


async def _done(bot: LocalBot, env: str) -> bool:
    return any(d.env == env and d.finished_at for d in await deployments(bot))


def prod_card(bot: LocalBot) -> dict:
    return next(r for r in bot.slack.messages("#deploys-api")
                if "production" in r["blocks"][0]["text"]["text"])


async def approval_message(bot: LocalBot) -> dict:
    """The approval request in the production deployment's thread."""
    async def check() -> dict | None:
        roots = [r for r in bot.slack.messages("#deploys-api")
                 if "production" in r["blocks"][0]["text"]["text"]]
        for reply in roots[0]["replies"] if roots else []:
            if reply["text"].startswith("Approval needed"):
                return reply
        return None

    return await eventually(check)


async def prod_request(make_bot, tmp_path: Path, **config: object) -> tuple[LocalBot, dict]:
    bot = await make_bot(make_config(tmp_path, **config)) if config else await make_bot()
    await staged(bot)
    resp = await bot.driver.command('api production v1.4.2 --reason "fix login"',
                                    user="U0ALICE")
    assert re.search(r"It needs (1 approval|\d+ approvals) first", resp.json()["text"])
    return bot, await approval_message(bot)


async def test_production_waits_for_an_approver_and_then_deploys(make_bot, tmp_path) -> None:
    bot, message = await prod_request(make_bot, tmp_path)
    text = json.dumps(message, ensure_ascii=False)
    assert "<@U0ALICE> wants to deploy *api* `v1.4.2` → `v1.4.2` to *production*" not in text
    assert "wants to deploy *api* `v1.4.2` (its first deploy there) to *production*" in text
    assert "fix login" in text and "0 of 1" in text and "<@U0CAROL>, @sre-leads" in text
    approve, reject = buttons(message)
    assert (approve["text"]["text"], reject["text"]["text"]) == ("Approve", "Reject")

    async def card_waiting() -> bool:
        return "Awaiting approval (0 of 1)" in json.dumps(prod_card(bot))

    await eventually(card_waiting)

    # The requester cannot approve their own deployment; a non-approver cannot either.
    await bot.driver.click(ActionId.APPROVE, approve["value"], user="U0ALICE")
    await bot.driver.click(ActionId.APPROVE, approve["value"], user="U0DAVE")
    [own] = await ephemerals_to(bot, "U0ALICE")
    [dave] = await ephemerals_to(bot, "U0DAVE")
    assert "You requested deployment #2, so you cannot approve it (four eyes;" in own
    assert "You lack the *approve* role for production. Who has it: <@U0CAROL>, @sre-leads" \
        in dave
    assert (await deployments(bot))[1].state == "awaiting_approval"

    await bot.driver.click(ActionId.APPROVE, approve["value"], user="U0CAROL")
    [carol] = await ephemerals_to(bot, "U0CAROL")
    assert carol == "Approved: deployment #2 of api to production proceeds."
    deps = await finished(bot, 2)
    assert deps[1].state == "succeeded"

    async def resolved() -> dict | None:
        msg = await approval_message(bot)
        return msg if not buttons(msg) else None

    msg = await eventually(resolved)
    assert "Approved by <@U0CAROL> at" in json.dumps(msg)


async def test_user_group_members_may_approve(make_bot, fake_slacks, tmp_path) -> None:
    slack = await fake_slacks()
    slack.add_usergroup("S0SRE", "sre-leads", ["U0BOB"])
    bot = await make_bot(fake_slack=slack)
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    message = await approval_message(bot)
    await bot.driver.click(ActionId.APPROVE, buttons(message)[0]["value"], user="U0BOB")
    [reply] = await ephemerals_to(bot, "U0BOB")
    assert reply.startswith("Approved")
    assert (await finished(bot, 2))[1].state == "succeeded"


async def test_two_required_approvals_with_racing_and_double_clicks(make_bot, tmp_path) -> None:
    config = make_config(tmp_path)
    data = config.model_dump(mode="json")
    data["environments"]["production"]["approval"]["required_approvals"] = 2
    data["environments"]["production"]["approval"]["approvers"] = ["U0BOB", "U0CAROL", "U0DAN"]
    from bot.config import parse_config

    bot = await make_bot(parse_config(data))
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    value = buttons(await approval_message(bot))[0]["value"]
    # Bob double-clicks while Carol and Dan click at the same moment.
    await asyncio.gather(*(bot.driver.click(ActionId.APPROVE, value, user=u)
                           for u in ("U0BOB", "U0BOB", "U0CAROL", "U0DAN")))
    deps = await finished(bot, 2)
    assert deps[1].state == "succeeded"
    async with bot.bot.sessions() as session:
        approvals = (await session.exec(select(Approval))).all()
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.deployment_id == 2))).all()
    assert len(approvals) == 2 and len({a.user for a in approvals}) == 2
    assert [e.action for e in events].count("approved") == 1  # exactly one decision
    assert [e.action for e in events].count("approve") == 2  # each approval is audited
    texts = [t for u in ("U0BOB", "U0CAROL", "U0DAN")
             for t in await ephemerals_to(bot, u, count=2 if u == "U0BOB" else 1)]
    assert sum(t.startswith("Approved: deployment #2") for t in texts) == 1


async def test_two_approvers_at_once_give_exactly_one_decision(make_bot, tmp_path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["environments"]["production"]["approval"]["approvers"] = ["U0BOB", "U0CAROL"]
    from bot.config import parse_config

    bot = await make_bot(parse_config(data))
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    value = buttons(await approval_message(bot))[0]["value"]
    await asyncio.gather(*(bot.driver.click(ActionId.APPROVE, value, user=u)
                           for u in ("U0BOB", "U0CAROL", "U0CAROL")))
    texts = await ephemerals_to(bot, "U0BOB") + await ephemerals_to(bot, "U0CAROL", count=2)
    assert sum(t.startswith("Approved: deployment #2") for t in texts) == 1
    assert all("not waiting for approval" in t or "already approved" in t
               for t in texts if not t.startswith("Approved"))
    async with bot.bot.sessions() as session:
        approvals = (await session.exec(select(Approval))).all()
        events = (await session.exec(select(AuditEvent).where(
            AuditEvent.deployment_id == 2, AuditEvent.action == "approved"))).all()
    assert len(approvals) == 1 and len(events) == 1
    assert (await finished(bot, 2))[1].state == "succeeded"


async def test_reject_asks_for_a_reason_in_a_modal(make_bot, tmp_path) -> None:
    bot, message = await prod_request(make_bot, tmp_path)
    value = buttons(message)[1]["value"]
    await bot.driver.click(ActionId.REJECT, value, user="U0CAROL")
    [opened] = await bot.slack.wait_for("views.open")
    view = opened.params["view"]
    assert view["callback_id"] == REJECT_CALLBACK and view["private_metadata"] == value
    assert opened.params["trigger_id"]

    empty = await bot.driver.submit_view(REJECT_CALLBACK, value,
                                         {"reason": {"reason": {"type": "plain_text_input",
                                                                "value": "  "}}}, user="U0CAROL")
    assert empty.json()["response_action"] == "errors"
    assert (await deployments(bot))[1].state == "awaiting_approval"

    resp = await bot.driver.submit_view(
        REJECT_CALLBACK, value,
        {"reason": {"reason": {"type": "plain_text_input", "value": "Change freeze for <!here>"}}},
        user="U0CAROL")
    assert resp.status_code == 200
    deps = await finished(bot, 2)
    assert deps[1].state == "rejected"
    assert deps[1].detail == "Rejected by <@U0CAROL>: Change freeze for &lt;!here&gt;"

    async def shown() -> bool:
        card = prod_card(bot)
        reply = [r["text"] for r in card["replies"] if "rejected this deployment" in r["text"]]
        return "Rejected" in json.dumps(card) and bool(reply)

    await eventually(shown)
    card_json = json.dumps(prod_card(bot))
    assert "&lt;!here&gt;" in card_json and "<!here>" not in card_json  # no mass ping


async def test_reject_when_slack_is_too_slow_for_the_trigger_says_click_again(
        make_bot, tmp_path) -> None:
    """A trigger_id works for 3 s. When checking the approver takes longer (users.info
    rate limited, the client waits out Retry-After), Slack refuses views.open with
    expired_trigger_id: the approver is told to click again instead of seeing nothing."""
    bot, message = await prod_request(make_bot, tmp_path)
    value = buttons(message)[1]["value"]
    bot.slack.fail_next("users.info", error="ratelimited", retry_after=4)
    await bot.driver.click(ActionId.REJECT, value, user="U0CAROL")
    [opened] = await bot.slack.wait_for("views.open", timeout=15)
    assert opened.response["error"] == "expired_trigger_id"
    [told] = await ephemerals_to(bot, "U0CAROL")
    assert "Please click Reject again" in told
    assert bot.slack.views == {}
    assert (await deployments(bot))[1].state == "awaiting_approval"
    await bot.driver.click(ActionId.REJECT, value, user="U0CAROL")  # a fresh trigger works
    await bot.slack.wait_for(lambda c: c.method == "views.open" and not c.failed)


async def test_a_rejection_from_a_non_approver_changes_nothing(make_bot, tmp_path) -> None:
    bot, message = await prod_request(make_bot, tmp_path)
    value = buttons(message)[1]["value"]
    await bot.driver.click(ActionId.REJECT, value, user="U0DAVE")
    [text] = await ephemerals_to(bot, "U0DAVE")
    assert "You lack the *approve* role" in text
    assert bot.slack.calls_to("views.open") == []
    # A forged submission without the modal is refused too.
    await bot.driver.submit_view(REJECT_CALLBACK, value, {"reason": {"reason": {
        "type": "plain_text_input", "value": "no"}}}, user="U0DAVE")
    await requests_told(bot)  # the submission was processed (and refused)
    await bot.next_tick()  # and anything it could have set going has had its turn
    assert (await deployments(bot))[1].state == "awaiting_approval"


async def test_unanswered_request_expires_and_tells_the_requester(make_bot, tmp_path) -> None:
    clock = FakeClock()
    bot = await make_bot(clock=clock)
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    message = await approval_message(bot)
    clock.advance(minutes=31)
    deps = await finished(bot, 2)
    assert deps[1].state == "expired"

    async def told() -> bool:
        replies = prod_card(bot)["replies"]
        return any("<@U0ALICE> your request expired" in r["text"] for r in replies)

    await eventually(told)
    await bot.driver.click(ActionId.APPROVE, buttons(message)[0]["value"], user="U0CAROL")
    [late] = await ephemerals_to(bot, "U0CAROL")
    assert "not waiting for approval any more (expired)" in late


async def test_expiry_fires_after_a_restart(tmp_path: Path) -> None:
    clock = FakeClock()
    config = make_config(tmp_path)
    kwargs = {"database_url": f"sqlite:///{tmp_path}/shipbot.db", "state_dir": tmp_path / "s",
              "clock": clock}
    async with LocalBot(config, **kwargs) as bot:
        await staged(bot)
        await bot.driver.command("api production v1.4.2", user="U0ALICE")
        await approval_message(bot)
    clock.advance(hours=1)
    async with LocalBot(config, **kwargs) as bot:
        deps = await finished(bot, 2)
        assert deps[1].state == "expired"


async def test_clicks_from_strangers_and_tampered_values_change_nothing(
        make_bot, fake_slacks, tmp_path) -> None:
    slack = await fake_slacks(strict_users=True)
    for user in ("U0ALICE", "U0CAROL"):
        slack.add_user(user, user.lower())
    bot = await make_bot(fake_slack=slack)
    await staged(bot)
    await bot.driver.command("api production v1.4.2", user="U0ALICE")
    value = buttons(await approval_message(bot))[0]["value"]
    await bot.driver.click(ActionId.APPROVE, value, user="U0STRANGER")
    await bot.driver.click(ActionId.APPROVE, "2; drop table deployment", user="U0CAROL")
    await bot.driver.click(ActionId.APPROVE, "424242", user="U0CAROL")
    # Slack refuses anything to a user its directory does not know (strict_users): the
    # bot tries to answer in the channel, then by DM, and records nothing else.
    [stranger] = await ephemerals_to(bot, "U0STRANGER", delivered=False)
    assert "not an active member of this workspace" in stranger
    assert [c.response["error"] for c in slack.calls if c.method.startswith("chat.")
            and "U0STRANGER" in (c.params.get("user"), c.params.get("channel"))][:2] == \
        ["user_not_in_channel", "channel_not_found"]
    tampered, missing = await ephemerals_to(bot, "U0CAROL", count=2)
    assert "That button is not valid any more" in tampered
    assert missing == "Deployment #424242 does not exist; nothing was changed."
    assert (await deployments(bot))[1].state == "awaiting_approval"
    # Approving something already finished changes nothing either.
    await bot.driver.click(ActionId.APPROVE, "1", user="U0CAROL")
    texts = await ephemerals_to(bot, "U0CAROL", count=3)
    assert "Deployment #1 is not waiting for approval any more (succeeded)" in texts[2]


async def test_the_approvals_channel_copy_is_updated_by_its_id(make_bot, tmp_path) -> None:
    """The copy is posted to ``#approvals`` by name and edited by the ID Slack answered
    with; a click on it is answered privately in that channel (the payload's ID)."""
    envs = {"dev": {}, "staging": {},
            "production": {"approval": {"approvers": ["U0CAROL"], "channel": "#approvals"}}}
    bot, _ = await prod_request(make_bot, tmp_path, environments=envs)
    approvals = bot.slack.channel_id("#approvals")

    async def the_copy() -> dict | None:
        return next(iter(bot.slack.messages("#approvals")), None)

    copy = await eventually(the_copy)

    async def recorded() -> str | None:  # the notifier saves it just after posting
        return (await deployments(bot))[1].approval_copy

    assert await eventually(recorded) == f"{approvals} {copy['ts']}"
    await bot.driver.click(ActionId.APPROVE, buttons(copy)[0]["value"], user="U0CAROL",
                           channel="#approvals", message_ts=copy["ts"])
    [told] = await ephemerals_to(bot, "U0CAROL")
    assert told.startswith("Approved")
    assert [e["channel"] for e in bot.slack.ephemerals] == [approvals]

    async def decided() -> dict | None:
        msg = await the_copy()
        return msg if msg and not buttons(msg) and "Approved by" in json.dumps(msg) else None

    await eventually(decided)
    copy_edits = [c for c in bot.slack.calls_to("chat.update") if c.params["ts"] == copy["ts"]]
    assert copy_edits and {c.params["channel"] for c in copy_edits} == {approvals}
    assert {c.response["error"] for c in bot.slack.calls if c.failed} <= {"ratelimited"}
