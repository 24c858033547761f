"""What a deployment ships: the changelog in the approval request and on the card, and
the environment's max_commits, overridable only out loud (announced, audited)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.engine.providers import ServiceProviders
from bot.store.models import AuditEvent
from integrations.base import IntegrationError
from tests.conftest import eventually, make_config, outbox_delivered
from tests.fakes_providers import FakeChanges, FakeCI, FakeTarget, FakeWorld
from tests.test_deploy_flow import deployments, finished

ENVS: dict[str, Any] = {
    "dev": {"max_commits": 10},
    "staging": {"approval": {"approvers": ["U0CAROL"]}},
    "production": {"approval": {"approvers": ["U0CAROL"]}},
}


def use_fakes(bot: LocalBot, total: int) -> FakeWorld:
    world = FakeWorld(polls=0)
    target = FakeTarget(world)
    bot.bot.providers["api"] = ServiceProviders(
        ci=FakeCI(world), target=target, traffic=target, rollback=target,
        changes=FakeChanges(world, total), ci_timeout=600, deploy_timeout=600)
    return world


async def with_fakes(launch: Any, tmp_path: Path, total: int) -> tuple[LocalBot, FakeWorld]:
    bot = await launch(make_config(tmp_path, environments=ENVS,
                                     announce_channel="#deploy-announce"))
    return bot, use_fakes(bot, total)


def thread(bot: LocalBot, index: int) -> list[str]:
    return [r["text"] for r in bot.slack.messages("#deploys-api")[index].get("replies", [])]


async def test_the_approval_request_lists_what_ships(launch, tmp_path: Path) -> None:
    bot, world = await with_fakes(launch, tmp_path, total=25)
    await bot.driver.command("api staging v1.0.0", user="U0ALICE")
    first = await eventually(lambda: _approval(bot, "v1.0.0"))
    assert "*Changes*" not in first  # nothing ran there before: nothing to compare with
    await _approve(bot, 1)
    await finished(bot, 1)
    await bot.driver.command("api staging v1.1.0", user="U0ALICE")
    text = await eventually(lambda: _approval(bot, "v1.1.0"))
    assert ("*Changes* — 25 commits (<https://git.example/compare/v1.0.0...v1.1.0|compare>)"
            in text)
    assert "• `0000001` Change 1 &lt;of&gt; v1.1.0 (#101) — dev1" in text
    assert "• `0000002` Change 2 &lt;of&gt; v1.1.0 — dev2" in text  # no PR: none shown
    assert "• `0000014` Change 20" in text and "Change 21" not in text
    assert text.endswith("and 5 more") or "\nand 5 more" in text
    assert ("compare", "v1.0.0...v1.1.0") in world.calls
    async def card() -> str | None:  # the card too, once re-rendered as awaiting approval
        blocks = json.dumps(bot.slack.messages("#deploys-api")[1]["blocks"])
        return blocks if "*Changes* \\u2014 25 commits" in blocks else None

    assert "and 5 more" in await eventually(card)


async def test_more_commits_than_the_environment_takes_are_refused(
        launch, tmp_path: Path) -> None:
    bot, world = await with_fakes(launch, tmp_path, total=25)
    await bot.driver.command("api dev v1.0.0")
    await finished(bot, 1)
    await bot.driver.command("api dev v2.0.0")
    deps = await finished(bot, 2)
    assert deps[-1].state == "cancelled"
    refusal = (":no_entry: api `v1.0.0` → `v2.0.0` ships 25 commits, more than dev takes at "
               "once (10). Nothing was deployed. Deploy a version in between, or run "
               "`/deploy api dev v2.0.0 --allow-many-commits` (announced and audited).")
    assert await eventually(lambda: _said(bot, 1, refusal))
    assert [r.job.version for r in world.started()] == ["v1.0.0", "v1.0.0"]  # build, deploy

    await bot.driver.command("api dev v2.0.0 --allow-many-commits")
    deps = await finished(bot, 3)
    assert deps[-1].state == "succeeded", deps[-1].detail
    said = (":warning: api `v1.0.0` → `v2.0.0` ships 25 commits, more than dev's max_commits "
            "(10): <@U0ALICE> overrode the limit.")
    assert await eventually(lambda: _said(bot, 2, said))
    assert await eventually(lambda: _announced(bot, said))
    async with bot.bot.sessions() as session:
        audit = (await session.exec(select(AuditEvent).where(
            AuditEvent.action == "override_max_commits"))).all()
    assert [(a.actor, a.deployment_id, a.detail) for a in audit] == [
        ("U0ALICE", deps[-1].id, "25 commits, limit 10")]


async def test_within_the_limit_nothing_is_said(launch, tmp_path: Path) -> None:
    bot, _ = await with_fakes(launch, tmp_path, total=10)
    await bot.driver.command("api dev v1.0.0")
    await finished(bot, 1)
    await bot.driver.command("api dev v1.0.1")
    deps = await finished(bot, 2)
    assert deps[-1].state == "succeeded"
    await outbox_delivered(bot)  # every message written by then has been posted
    assert thread(bot, 1) and not any("max_commits" in t or "ships" in t
                                      for t in thread(bot, 1))


async def test_a_compare_error_costs_the_changelog_only_where_there_is_no_limit(
        launch, tmp_path: Path) -> None:
    bot, world = await with_fakes(launch, tmp_path, total=3)
    await bot.driver.command("api staging v1.0.0", user="U0ALICE")
    await eventually(lambda: _approval(bot, "v1.0.0"))
    await _approve(bot, 1)
    await finished(bot, 1)
    world.fail_next(IntegrationError("the compare API is down"))
    await bot.driver.command("api staging v1.0.1", user="U0ALICE")
    text = await eventually(lambda: _approval(bot, "v1.0.1"))
    assert "*Changes*" not in text  # asked once, failed, went on without it
    [dep] = [d for d in await deployments(bot) if d.version == "v1.0.1"]
    assert dep.state == "awaiting_approval" and dep.changes is None

    world.fail_next(IntegrationError("the compare API is down"))  # dev has a limit
    await bot.driver.command("api dev v1.0.0")
    deps = await finished(bot, 2)
    dev = next(d for d in deps if d.env == "dev")
    assert dev.state == "succeeded"  # no earlier version on dev: nothing to compare


async def _approval(bot: LocalBot, version: str) -> str | None:
    for root in bot.slack.messages("#deploys-api"):
        for reply in root.get("replies", []):
            if "Approval needed" in reply.get("text", "") and version in reply["text"]:
                return "\n".join(b["text"]["text"] for b in reply["blocks"]
                                 if b["type"] == "section" and "text" in b)
    return None


async def _approve(bot: LocalBot, dep_id: int) -> None:
    await bot.driver.click("deploy_approve", str(dep_id), user="U0CAROL")


async def _said(bot: LocalBot, index: int, text: str) -> bool:
    roots = bot.slack.messages("#deploys-api")
    return len(roots) > index and text in thread(bot, index)


async def _announced(bot: LocalBot, text: str) -> bool:
    return any(m["text"] == text for m in bot.slack.messages("#deploy-announce"))
