"""The engine against the in-memory providers: behaviour that needs a provider to answer
something a program cannot (a rate limit with its wait), without processes or sleeps."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.clock import as_utc
from bot.devtools.local import LocalBot
from bot.engine.providers import ServiceProviders
from bot.store.models import Deployment
from integrations.base import RateLimited
from tests.conftest import FakeClock, eventually, make_config
from tests.fakes_providers import FakeCI, FakeTarget, FakeWorld
from tests.test_deploy_flow import deployments, finished


def use_fakes(bot: LocalBot, ci: FakeWorld, target: FakeWorld) -> None:
    """Swap the api service's providers for fakes (the engine's services share the dict)."""
    fake = FakeTarget(target)
    bot.bot.providers["api"] = ServiceProviders(
        ci=FakeCI(ci), target=fake, traffic=fake, rollback=fake,
        ci_timeout=600, deploy_timeout=600)


async def thread_texts(bot: LocalBot) -> list[str]:
    roots = bot.slack.messages("#deploys-api")
    return [r["text"] for r in roots[0]["replies"]] if roots else []


async def test_a_rate_limit_waits_as_asked_says_so_and_costs_no_attempt(
        make_bot, tmp_path: Path) -> None:
    clock = FakeClock()
    bot = await make_bot(make_config(tmp_path), clock=clock)
    ci, target = FakeWorld(polls=0), FakeWorld(polls=0)
    use_fakes(bot, ci, target)
    await bot.driver.command("api staging v1.4.2")

    async def building() -> Deployment | None:
        deps = await deployments(bot)
        return deps[0] if deps and deps[0].state == "building" else None

    await eventually(building)
    ci.fail_next(RateLimited("GitHub's rate limit was reached; trying again after 10:05:00 "
                             "UTC (300 s)", 300))

    async def waiting() -> Deployment | None:
        dep = (await deployments(bot))[0]
        due = dep.next_action_at and as_utc(dep.next_action_at) - clock()
        return dep if due and due > timedelta(seconds=250) else None

    dep = await eventually(waiting)
    assert dep.state == "building" and dep.step_attempts == 0
    texts = await eventually(lambda: _said(bot, "rate limit was reached"))
    assert any(t.startswith(":hourglass_flowing_sand: GitHub's rate limit was reached; "
                            "trying again after 10:05:00 UTC (300 s)") for t in texts)
    polls_before = [c for c in ci.calls if c[0] == "poll"]

    clock.advance(seconds=301)
    bot.bot.wake()
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert len([c for c in ci.calls if c[0] == "poll"]) > len(polls_before)
    assert [r.action for r in target.started()] == ["start"]


async def test_a_rollback_uses_the_bundles_native_undo(make_bot, tmp_path: Path) -> None:
    """The typed bundle decides: with ``rollback`` set, a rollback calls it instead of
    deploying the old version with ``start``."""
    bot = await make_bot(make_config(tmp_path))
    ci, target = FakeWorld(polls=0), FakeWorld(polls=0)
    use_fakes(bot, ci, target)
    await bot.driver.command("api staging v1")
    await finished(bot, 1)
    await bot.driver.command("api staging v2")
    await finished(bot, 2)
    await bot.driver.command("rollback api staging")
    deps = await finished(bot, 3)
    assert deps[-1].kind == "rollback" and deps[-1].state == "succeeded", deps[-1].detail
    assert [(r.action, r.job.version) for r in target.started()] == [
        ("start", "v1"), ("start", "v2"), ("rollback", "v1")]


async def _said(bot: LocalBot, words: str) -> list[str] | None:
    texts = await thread_texts(bot)
    return texts if any(words in t for t in texts) else None
