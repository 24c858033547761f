"""A deploy target that waits for a person inside its deploy run (an Argo ``pause: {}``):
the deployment pauses with the target's reason and offers Promote and Roll back; Promote
asks the target to go on, Abort moves traffic back through the target's abort. End to end
with the in-memory target (tests/fakes_providers.py) behind LocalBot and the fake Slack."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from bot.devtools.local import LocalBot
from bot.engine import lifecycle
from bot.engine.lifecycle import Blocked, Event
from bot.engine.machine import State
from bot.store.models import Deployment
from integrations.base import JobSpec
from tests.conftest import eventually, make_config
from tests.fakes_providers import FakeTarget, FakeWorld
from tests.test_buttons_and_queries import buttons
from tests.test_deploy_flow import card_text, deployments, finished
from tests.test_engine_fakes import use_fakes
from tests.test_strategies import card_says, said

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


async def waiting_bot(make_bot, tmp_path: Path) -> tuple[LocalBot, FakeWorld]:
    bot = await make_bot(make_config(tmp_path))
    target = FakeWorld(polls=0)
    use_fakes(bot, FakeWorld(polls=0), target)
    await bot.driver.command("api staging wait-2.0")
    return bot, target


async def paused(bot: LocalBot) -> Deployment:
    async def check() -> Deployment | None:
        deps = await deployments(bot)
        return deps[0] if deps and deps[0].state == "paused" else None

    return await eventually(check)


async def test_a_wait_pauses_with_the_targets_reason_and_promote_goes_on(
        make_bot, tmp_path: Path) -> None:
    bot, target = await waiting_bot(make_bot, tmp_path)
    dep = await paused(bot)
    assert dep.paused_reason == FakeTarget.WAITING
    card = await card_says(bot, "waits for a person at its step 2")
    assert [b["text"]["text"] for b in buttons(card)] == ["Promote", "Roll back"]
    thread = await said(bot, "Paused.")
    assert any("Analysis smoke-check: Successful" in t and "latency: 120 ms" in t
               for t in thread), thread

    promote = next(b for b in buttons(card) if b["text"]["text"] == "Promote")
    await bot.driver.click(promote["action_id"], promote["value"], user="U0BOB")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    [go_on] = target.started("promote")
    assert go_on.job.key.startswith(f"deployment-{dep.id}-") and "-continue-" in go_on.job.key
    assert [r.action for r in target.started()] == ["start", "promote"]
    assert "Succeeded" in card_text(await card_says(bot, "Succeeded"))


async def test_resume_typed_at_a_wait_is_read_as_promote(make_bot, tmp_path: Path) -> None:
    bot, target = await waiting_bot(make_bot, tmp_path)
    await paused(bot)
    assert not target.started("promote")
    answer = (await bot.driver.command("resume api staging", user="U0BOB")).json()["text"]
    assert answer == "Promoted deployment #1: the deploy goes on past the wait."
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert [r.action for r in target.started()] == ["start", "promote"]


async def test_abort_at_a_wait_moves_traffic_back_through_the_targets_abort(
        make_bot, tmp_path: Path) -> None:
    bot, target = await waiting_bot(make_bot, tmp_path)
    await paused(bot)
    answer = (await bot.driver.command("abort api staging", user="U0BOB")).json()["text"]
    assert answer == "Rolling back deployment #1."
    [dep] = await finished(bot)
    assert dep.state == "rolled_back", dep.detail
    assert [r.action for r in target.started()] == ["start", "abort"]
    assert not target.started("promote")


def test_at_a_targets_wait_promote_and_abort_apply_resume_is_promote() -> None:
    waiting = Deployment(id=7, request_key="k", service="api", env="staging", version="v2",
                         requester="U1", channel="C", state=State.PAUSED,
                         created_at=NOW, updated_at=NOW,
                         deploy_run_id="argo:deploy:2:0123456789ab")
    assert lifecycle.waits_in_deploy(waiting)
    assert lifecycle.enabled_events(waiting) == [Event.PROMOTE, Event.ABORT]
    assert lifecycle.refusal(waiting, Event.RESUME) is Blocked.NOT_NOW
    assert lifecycle.normalise(Event.RESUME, None, waiting) is Event.PROMOTE
    in_rollout = waiting.model_copy(update={"stage_started_at": NOW})
    assert not lifecycle.waits_in_deploy(in_rollout)  # a pause of the rollout's stages
    assert lifecycle.refusal(in_rollout, Event.PROMOTE) is Blocked.NOT_WAITING


async def test_promoted_past_a_wait_then_unhealthy_rolls_back_the_image_not_abort(
        make_bot, tmp_path: Path, monkeypatch) -> None:
    """Promote at the wait, the deploy run finishes, the health check fails: the new
    version is out in full, so abort (a no-op there) is not the way back: the earlier
    image is deployed again."""
    bot = await make_bot(make_config(tmp_path))
    target = FakeWorld(polls=0)
    use_fakes(bot, FakeWorld(polls=0), target)
    await bot.driver.command("api staging v1.0")
    [first] = await finished(bot)
    assert first.state == "succeeded", first.detail
    providers = bot.bot.providers["api"]
    bot.bot.providers["api"] = replace(providers, health=providers.target)

    async def degraded(self: FakeTarget, job: JobSpec) -> str:
        return await self._start(job.model_copy(update={"version": "fail-degraded"}),
                                 "health")

    monkeypatch.setattr(FakeTarget, "health", degraded)
    await bot.driver.command("api staging wait-2.0")

    async def waits() -> bool:
        return any(d.state == "paused" for d in await deployments(bot))

    await eventually(waits)
    answer = (await bot.driver.command("promote api staging", user="U0BOB")).json()["text"]
    assert answer == "Promoted deployment #2: the deploy goes on past the wait."
    _, dep = await finished(bot, 2)
    assert dep.state == "rolled_back", dep.detail
    assert dep.detail == "staging is back on `v1.0`."
    assert not target.started("abort")
    [undo] = target.started("rollback")
    assert undo.job.version == "v1.0"
    assert dep.paused_reason is None
