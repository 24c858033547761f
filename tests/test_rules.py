"""Rules that deliberate bugs once slipped past: each test states one rule as a user sees it
(a verdict, a reply, a row) and fails when the rule is broken (see bench/mutate.py)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.config import ConfigError, load_config, parse_config
from bot.engine.analysis import MetricSeries, MetricSpec, Verdict, judge
from tests.alert_helpers import alert_config, alert_thread, am_alert, am_payload, deploy, post
from tests.alert_helpers import texts as message_text
from tests.conftest import FakeClock, eventually, make_config
from tests.test_approvals import staged
from tests.test_deploy_flow import deployments
from tests.test_guards import guarded_config, say

ROOT = Path(__file__).parent.parent


class StoppedClock:
    """Time that stands still, so a check can happen exactly on a boundary instant."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def plain(name: str, weight: float = 1.0) -> MetricSpec:
    return MetricSpec(name=name, unit="plain", judge="mann-whitney", weight=weight)


def same(name: str, seed: int) -> MetricSeries:
    rng = np.random.default_rng(seed)
    return MetricSeries(name=name, canary=tuple(rng.normal(5, 1, 30)),
                        baseline=tuple(rng.normal(5, 1, 30)))


def worse(name: str, seed: int) -> MetricSeries:
    rng = np.random.default_rng(seed)
    return MetricSeries(name=name, canary=tuple(rng.normal(9, 1, 30)),
                        baseline=tuple(rng.normal(5, 1, 30)))


# --- canary verdicts -------------------------------------------------------------------------

def test_a_score_exactly_at_the_marginal_threshold_pauses_for_a_human() -> None:
    """Kayenta bands: 75 is marginal (inconclusive, a human decides), not a failure."""
    specs = [plain("good", weight=3), plain("bad", weight=1)]
    j, _ = judge(specs, {"good": same("good", 1), "bad": worse("bad", 2)})
    assert j.score == 75
    assert j.verdict is Verdict.INCONCLUSIVE and j.marginal and not j.final
    assert "marginal score 75/100" in j.summary and "roll back" not in j.summary
    # and just below the band it does fail
    j, _ = judge([plain("good", weight=2.9), plain("bad", weight=1)],
                 {"good": same("good", 1), "bad": worse("bad", 2)})
    assert j.verdict is Verdict.FAIL and j.final and "below 75" in j.summary


def test_missing_data_never_passes_even_when_the_score_would() -> None:
    """A light metric without data leaves the score above the pass mark; still no pass."""
    specs = [plain("main", weight=1), plain("minor", weight=0.05)]
    j, _ = judge(specs, {"main": same("main", 3), "minor": None})
    assert j.score >= 95  # 1 / 1.05 of the weight passed
    assert j.verdict is Verdict.INCONCLUSIVE and not j.final
    assert "1 of 2 metrics undecided (minor)" in j.summary
    # once the metric reports and passes, the canary passes
    j, _ = judge(specs, {"main": same("main", 3), "minor": same("minor", 4)})
    assert j.verdict is Verdict.PASS


# --- freeze windows --------------------------------------------------------------------------

FRIDAY_18 = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)  # the freeze's first instant
MONDAY_08 = FRIDAY_18 + timedelta(hours=62)  # its end: the first instant without it
TICK = timedelta(microseconds=1)


async def test_a_freeze_holds_from_its_first_instant_until_exactly_its_end(
        make_bot, tmp_path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["freeze_windows"] = [{
        "name": "weekend", "environments": ["staging"], "cron": "0 18 * * fri",
        "duration": "62h", "timezone": "UTC", "reason": "Weekend change freeze"}]
    clock = StoppedClock(FRIDAY_18 - TICK)
    bot = await make_bot(parse_config(data), clock=clock)
    assert "is on its way" in await say(bot, "web staging v1")
    clock.at = FRIDAY_18
    assert "staging is frozen — weekend" in await say(bot, "api staging v1")
    clock.at = MONDAY_08 - TICK
    assert "staging is frozen — weekend" in await say(bot, "api staging v1")
    clock.at = MONDAY_08
    assert "is on its way" in await say(bot, "api staging v1")
    assert [(d.service, d.version) for d in await deployments(bot)] == [
        ("web", "v1"), ("api", "v1")]


async def test_a_one_off_freeze_ends_exactly_at_its_end(make_bot, tmp_path) -> None:
    start = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    clock = StoppedClock(start)
    bot = await make_bot(guarded_config(tmp_path), clock=clock)
    ok = await say(bot, 'freeze staging --until "2026-11-25 18:00" --reason "rc"')
    assert ok.startswith(":snowflake: staging is frozen until 2026-11-25 18:00 UTC")
    assert "staging is frozen" in await say(bot, "api staging v1")
    clock.at = datetime(2026, 11, 25, 18, 0, tzinfo=UTC) - TICK
    assert "staging is frozen" in await say(bot, "api staging v1")
    clock.at = datetime(2026, 11, 25, 18, 0, tzinfo=UTC)
    assert "is on its way" in await say(bot, "api staging v1")


# --- suspects and rollback targets -----------------------------------------------------------

def breakable(tmp_path: Path) -> object:
    """web's deploy fails for versions containing 'broken' and succeeds otherwise."""
    argv = [sys.executable, "-c", "import sys; sys.exit('broken' in sys.argv[3])",
            "{service}", "{env}", "{version}"]
    return alert_config(tmp_path, services={"web": {"deploy": {
        "provider": "command", "timeout_seconds": 30, "argv": argv}}})


async def suspect_reply(bot, name: str, fingerprint: str) -> str:
    labels = {"alertname": name, "service": "web", "env": "staging", "severity": "critical"}
    resp = await post(bot, "alertmanager", am_payload(am_alert(labels, fingerprint=fingerprint),
                                                      group_key=name))
    assert resp.status_code == 200, resp.text
    root = await alert_thread(bot, "#deploys-web", name=name)
    return message_text(root["replies"][0])


async def test_rollback_target_is_a_different_version_than_what_runs(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    third = await deploy(bot, "web staging v2")  # a redeploy of the same version
    assert third.state == "succeeded"
    reply = await suspect_reply(bot, "HighErrorRate", "f1")
    assert f"#{third.id} `v2`" in reply and "Roll back to v1" in reply
    resp = await bot.driver.command("web staging", command="/rollback")
    assert resp.json()["text"].startswith(
        ":rewind: Rollback #4 of web staging from `v2` to `v1`")


async def test_only_succeeded_deployments_are_suspects_or_rollback_targets(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(breakable(tmp_path), fake_slack=quiet)
    first = await deploy(bot, "web staging v1")
    failed = await deploy(bot, "web staging v2-broken")
    assert (first.state, failed.state) == ("succeeded", "failed")
    # v1 is what runs: it is the suspect, and there is nothing older to go back to
    reply = await suspect_reply(bot, "HighErrorRate", "f1")
    assert f"#{first.id} `v1`" in reply and "Roll back to" not in reply
    assert "v2-broken" not in reply
    await deploy(bot, "web staging v3")
    reply = await suspect_reply(bot, "HighLatency", "f2")
    assert "`v3` (was `v1`)" in reply and "Roll back to v1" in reply
    assert "v2-broken" not in reply
    never = await bot.driver.command("web staging v2-broken", command="/rollback")
    assert "`v2-broken` never succeeded on staging" in never.json()["text"]
    resp = await bot.driver.command("web staging", command="/rollback")
    assert resp.json()["text"].startswith(
        ":rewind: Rollback #4 of web staging from `v3` to `v1`")


# --- who may cancel --------------------------------------------------------------------------

async def test_cancelling_someone_elses_deployment_needs_the_deploy_role(
        make_bot, tmp_path) -> None:
    bot = await make_bot(guarded_config(tmp_path), clock=FakeClock())  # a Wednesday
    await staged(bot)
    asked = await say(bot, "api production v1.4.2")  # roles.deploy: U0ALICE, U0ONCALL
    assert "It needs 1 approval first" in asked

    async def waiting() -> bool:  # the runner asks for the approval after the ack
        return (await deployments(bot))[1].state == "awaiting_approval"

    await eventually(waiting)
    refused = await say(bot, "cancel api production", user="U0MALLORY")
    assert "You lack the *deploy* role for production" in refused
    assert (await deployments(bot))[1].state == "awaiting_approval"
    ok = await say(bot, "cancel api production", user="U0ONCALL")  # has the deploy role
    assert ok == "Cancelled deployment #2 of api to production."
    assert (await deployments(bot))[1].state == "cancelled"


# --- config ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["production", "prod"])
def test_production_without_approvers_is_refused(tmp_path: Path, name: str) -> None:
    data = yaml.safe_load((ROOT / "shipbot.yml").read_text())
    env = data["environments"].setdefault(name, {})
    env.pop("approval", None)
    path = tmp_path / "shipbot.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"environments.{name}.approval: {name} needs approvers" in str(err.value)
    env["approval"] = False  # an explicit opt-out is accepted
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert load_config(path).environments[name].approval_rules is None
