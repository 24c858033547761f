"""Nothing waits forever, failed rollbacks call for a human, impossible strategies are refused.

End to end through signed Slack requests and the real command target, like
tests/test_strategies.py, whose helpers these tests share.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bot.config import ShipbotConfig, parse_config
from bot.slack.blocks_alerts import ALERT_ROLLBACK_ACTION
from commands.actions import ActionId
from integrations.base import IntegrationError, JobSpec
from tests.alert_helpers import alert_thread, card_of, deploy, texts
from tests.conftest import FakeClock, eventually
from tests.test_buttons_and_queries import buttons, ephemerals_to
from tests.test_deploy_flow import deployments, finished
from tests.test_rollback import alerted
from tests.test_strategies import Health, actions_run, card_says, check, config, health, said

__all__ = ["health"]  # the HTTP check fixture, shared with tests/test_strategies.py


def gated_canary(tmp_path: Path, abort_argv: list[str] | None = None,
                 **strategy: Any) -> ShipbotConfig:
    """50 %, then a manual gate, then 100 %; no analysis, so each step only bakes."""
    cfg = config(tmp_path, {"kind": "canary", "steps": [50, "pause", 100], "interval": 0.3,
                            "pause_timeout": "30m", **strategy}, traffic=True)
    if abort_argv is None:
        return cfg
    data = cfg.model_dump(mode="json")
    data["services"]["api"]["deploy"]["abort_argv"] = abort_argv
    return parse_config(data)


async def test_a_pause_nobody_answers_is_rolled_back_at_its_deadline(launch, tmp_path):
    clock = FakeClock()
    bot = await launch(gated_canary(tmp_path), clock=clock)
    await bot.driver.command("api dev v2.0.0")
    thread = await said(bot, "Manual gate: press Promote to continue.")
    gate = next(t for t in thread if "Manual gate" in t)
    assert "With no decision by 10:30 UTC, Shipbot rolls back to keep dev on a known" in gate
    assert "or type `/deploy promote api dev` or `/deploy abort api dev`" in gate
    clock.advance(minutes=20)  # before the deadline nothing happens
    await said(bot, "Manual gate")
    [dep] = await deployments(bot)
    assert dep.state == "paused"

    clock.advance(minutes=11)
    [dep] = await finished(bot, 1)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path)[-1] == ["abort", "api"]
    assert ["set_weight", "api", "100"] not in actions_run(tmp_path)
    thread = await said(bot, "Rolled back in")
    assert any("Rolling back api on dev: paused for 30m 00s with no decision" in t
               for t in thread)


async def test_a_rollback_the_target_cannot_run_ends_in_rollback_failed(launch, tmp_path):
    failing_abort = [sys.executable, "-c", "import sys; print('no route'); sys.exit(3)"]
    bot = await launch(gated_canary(tmp_path, failing_abort, pause_timeout="1h"))
    await bot.driver.command("api dev v2.0.1")
    await said(bot, "Manual gate")
    await bot.driver.command("abort api dev", user="U0BOB")
    [dep] = await finished(bot, 1)
    assert dep.state == "rollback_failed"
    thread = await said(bot, "Rollback failed")
    alarm = next(t for t in thread if "Rollback failed" in t)
    assert "dev may be serving `v2.0.1` partly. Act now" in alarm
    card = await card_says(bot, "Rollback failed")
    assert card["ts"]


async def test_a_rollback_step_that_keeps_erroring_stops_and_says_so(launch, tmp_path):
    """The target's API is down: the step is retried with backoff, then a human is called
    (the deployment must not retry forever, nor claim a plain failure)."""
    bot = await launch(gated_canary(tmp_path, pause_timeout="1h"))
    target = bot.bot.providers["api"].target
    calls: list[JobSpec] = []

    async def unreachable(job: JobSpec) -> str:
        calls.append(job)
        raise IntegrationError("deploy API unreachable: connection refused")

    target.abort = unreachable  # type: ignore[method-assign]
    await bot.driver.command("api dev v2.0.2")
    await said(bot, "Manual gate")
    await bot.driver.command("abort api dev", user="U0BOB")

    async def ended() -> list | None:
        deps = await deployments(bot)
        return deps if deps[0].state == "rollback_failed" else None

    await eventually(ended, timeout=30)
    assert len(calls) == 5
    thread = await said(bot, "Rollback failed")
    assert any("*Rollback failed* (deploy API unreachable: connection refused)" in t
               for t in thread)


async def test_a_strategy_the_target_cannot_do_is_refused(launch, tmp_path) -> None:
    bot = await launch(config(tmp_path, {"kind": "rolling"}))  # a target without traffic
    text = (await bot.driver.command("api dev v3.0.0 --strategy canary")).json()["text"]
    assert text.startswith("api's deploy target cannot shift traffic, so `--strategy canary` "
                           "is not possible; nothing was started.")
    assert await deployments(bot) == []
    assert actions_run(tmp_path) == []


async def test_rollout_controls_check_roles_like_the_buttons(launch, tmp_path) -> None:
    """Abort needs the rollback role, Promote/Pause/Resume the deploy role; a refusal
    names the role and who has it, and the rollout carries on untouched."""
    cfg = gated_canary(tmp_path).model_dump(mode="json")
    cfg["environments"]["dev"]["roles"] = {"deploy": ["U0ALICE", "U0BOB"], "rollback": ["U0BOB"]}
    bot = await launch(parse_config(cfg))
    await bot.driver.command("api dev v4.0.0", user="U0ALICE")
    await said(bot, "Manual gate")
    card = await card_says(bot, "Paused")
    abort = next(b for b in buttons(card) if b["action_id"] == ActionId.ABORT)

    await bot.driver.click(abort["action_id"], abort["value"], user="U0ALICE")
    [refusal] = await ephemerals_to(bot, "U0ALICE")
    assert refusal == (":no_entry: You lack the *rollback* role for dev. Who has it: <@U0BOB>. "
                       "Nothing was changed.")
    typed = (await bot.driver.command("promote api dev", user="U0CAROL")).json()["text"]
    assert typed.startswith(":no_entry: You lack the *deploy* role for dev.")
    [dep] = await deployments(bot)
    assert dep.state == "paused"
    assert ["abort", "api"] not in actions_run(tmp_path)

    await bot.driver.command("promote api dev", user="U0ALICE")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    assert actions_run(tmp_path)[-2:] == [["set_weight", "api", "100"], ["promote", "api"]]


HEALTH_PROBE = ("import sys; v = sys.argv[1]; print('probe', v); "
                "sys.exit(1 if v.endswith('-bad') else 0)")


async def test_the_target_must_report_healthy_before_the_deploy_counts(launch, tmp_path):
    """A target with health_argv: the rollout waits for it; unhealthy rolls back by
    deploying the previous version again (rolling replaced it)."""
    cfg = config(tmp_path, {"kind": "rolling"}).model_dump(mode="json")
    cfg["services"]["api"]["deploy"]["health_argv"] = [sys.executable, "-c", HEALTH_PROBE,
                                                       "{version}"]
    bot = await launch(parse_config(cfg))
    await bot.driver.command("api dev v5.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "succeeded", dep.detail
    thread = await said(bot, "is live on dev")
    waiting = next(i for i, t in enumerate(thread) if "waiting for dev to report it healthy" in t)
    healthy = next(i for i, t in enumerate(thread) if "dev reports `v5.0.0` healthy" in t)
    assert waiting < healthy

    await bot.driver.command("api dev v5.1.0-bad")
    _, dep = await finished(bot, 2)
    assert dep.state == "rolled_back", dep.detail
    assert actions_run(tmp_path)[-1] == ["api", "dev", "v5.0.0"]  # the previous one again
    thread = await said(bot, "Rolled back in", index=-1)
    assert any("Rolling back api on dev: `v5.1.0-bad` is unhealthy (exited with code 1)" in t
               for t in thread), thread


async def test_a_rollback_failing_its_checks_is_never_undone(launch, tmp_path, health: Health):
    """An alert blames v1.1.0; its rollback to v1.0.0 fails the same checks (the cause lies
    elsewhere). Undoing that rollback would put v1.1.0 back: instead a human is called."""
    cfg = config(tmp_path, {"kind": "rolling", "checks": [check(health, retries=0)]})
    data = cfg.model_dump(mode="json")
    data["alerts"] = {"default_channel": "#alerts"}
    bot = await launch(parse_config(data))
    await deploy(bot, "api staging v1.0.0")
    blamed = await deploy(bot, "api staging v1.1.0")
    assert blamed.state == "succeeded", blamed.detail
    health.status = 503
    reply = await alerted(bot, {"alertname": "HighErrorRate", "service": "api",
                                "env": "staging", "severity": "critical"})
    [roll] = [b for b in buttons(reply) if b["action_id"] == ALERT_ROLLBACK_ACTION]
    await bot.driver.click(ALERT_ROLLBACK_ACTION, roll["value"], user="U0BOB")

    *_, dep = await finished(bot, 3)
    assert (dep.kind, dep.version, dep.state) == ("rollback", "v1.0.0", "rollback_failed")
    assert dep.active_slot is None  # the slot is free for the fix
    ran = [a[2] for a in actions_run(tmp_path)]
    assert ran == ["v1.0.0", "v1.1.0", "v1.0.0"]  # v1.1.0 was not deployed again

    async def thread() -> list[str] | None:
        card = card_of(bot, "#deploys-api", dep.id)
        replies = [r["text"] for r in card["replies"]]
        return replies if any("did not pass its checks" in t for t in replies) else None

    said_there = await eventually(thread)
    alarm = next(t for t in said_there if "did not pass its checks" in t)
    assert alarm.startswith(":rotating_light: *The rollback to `v1.0.0` did not pass its "
                            "checks* (post-deploy checks failed).")
    assert "→ 503 (expected 200)" in alarm  # the check results
    assert "staging now runs `v1.0.0`, not known to be healthy" in alarm
    assert "that would put back `v1.1.0`, the version it replaced" in alarm
    assert "fix forward with `/deploy api staging <fixed version> --hotfix`" in alarm
    assert not any("Rolling back" in t or "Rolled back" in t for t in said_there)

    async def card_updated() -> bool:
        return "The rollback failed: staging needs a human now." in texts(
            card_of(bot, "#deploys-api", dep.id))

    await eventually(card_updated)

    async def reported() -> str | None:
        root = await alert_thread(bot, "#deploys-api", name="HighErrorRate")
        found = [texts(r) for r in root["replies"] if "did not complete" in texts(r)]
        return found[0] if found else None

    outcome = await eventually(reported)
    assert f"Rollback #{dep.id} did not complete (rollback failed)" in outcome
    assert "Shipbot does not undo a rollback (that would put back `v1.1.0`)" in outcome
