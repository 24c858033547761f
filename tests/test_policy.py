"""Policy answers that are pure sentences: why a slot is busy, why a deployment cannot be
cancelled, and who may acknowledge an alert that maps to no environment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import parse_config
from bot.engine import policy
from bot.engine.policy import INACTIVE, Decision, Policy
from bot.store.models import Deployment
from tests.conftest import make_config

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def dep(state: str, version: str | None = "v1.4.2") -> Deployment:
    return Deployment(id=7, request_key="k", service="api", env="staging", version=version,
                      requester="U0ALICE", state=state, channel="#deploys-api",
                      created_at=NOW - timedelta(minutes=3, seconds=5), updated_at=NOW)


@pytest.mark.parametrize(("state", "version", "sentence"), [
    ("building", "v1.4.2", ":no_entry: api staging is busy: <@U0ALICE> is deploying `v1.4.2` "
     "(#7, building) since 09:56 UTC (3m 05s ago). Nothing was started. Wait for it to "
     "finish, or cancel it with `/deploy cancel api staging`."),
    ("deploying", None, ":no_entry: api staging is busy: <@U0ALICE> is deploying the latest "
     "build (#7, deploying) since 09:56 UTC (3m 05s ago). Nothing was started. Wait for it "
     "to finish, or it can no longer be cancelled."),
])
def test_a_busy_slot_says_who_what_since_when_and_what_to_do(state: str, version: str | None,
                                                             sentence: str) -> None:
    assert policy.busy_reason(dep(state, version), NOW) == sentence


@pytest.mark.parametrize(("state", "decision"), [
    ("requested", Decision(True)),
    ("awaiting_approval", Decision(True)),
    ("queued", Decision(True)),
    ("building", Decision(True)),
    ("deploying", Decision(False, "Deployment #7 is deploying: staging is already being "
                                  "changed, so it cannot be cancelled safely. Wait for the "
                                  "result.")),
    ("rolling_back", Decision(False, "Deployment #7 is rolling back: staging is already being "
                                     "changed, so it cannot be cancelled safely. Wait for the "
                                     "result.")),
    ("succeeded", Decision(False, "Deployment #7 already ended: Succeeded.")),
    ("rollback_failed", Decision(False, "Deployment #7 already ended: Rollback failed.")),
])
def test_only_a_deployment_that_has_not_touched_the_target_can_be_cancelled(
        state: str, decision: Decision) -> None:
    assert policy.may_cancel(dep(state)) == decision


class Members:
    def __init__(self, active: set[str]) -> None:
        self.active = active

    async def members(self, handle: str) -> frozenset[str]:
        return frozenset()

    async def is_active_user(self, user_id: str) -> bool:
        return user_id in self.active


async def test_an_alert_without_a_known_environment_may_be_handled_by_any_member(
        tmp_path: Path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["environments"]["production"]["roles"] = {"rollback": ["U0CAROL"]}
    rules = Policy(parse_config(data), Members({"U0ANY", "U0CAROL"}))
    for env in (None, "qa"):
        assert await rules.may_decide_alert("U0ANY", env) == Decision(True)
        assert await rules.may_decide_alert("U0GONE", env) == INACTIVE
    assert await rules.may_decide_alert("U0ANY", "staging") == Decision(True)  # everyone
    refused = await rules.may_decide_alert("U0ANY", "production")
    assert refused == Decision(False, ":no_entry: You lack the *rollback* role for production. "
                                      "Who has it: <@U0CAROL>. Nothing was changed.")
    assert await rules.may_decide_alert("U0CAROL", "production") == Decision(True)


async def test_a_requester_approves_their_own_deployment_only_where_allowed(
        tmp_path: Path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["environments"]["staging"]["approval"] = {"approvers": ["U0ALICE", "U0CAROL"],
                                                   "allow_self_approval": True}
    rules = Policy(parse_config(data), Members({"U0ALICE", "U0CAROL"}))
    waiting = dep("awaiting_approval")
    assert await rules.may_approve(waiting, "U0ALICE") == Decision(True)
    waiting.env = "production"  # approvers U0CAROL and @sre-leads, four eyes
    assert await rules.may_approve(waiting, "U0ALICE", verb="reject") == Decision(False, (
        "You requested deployment #7, so you cannot reject it (four eyes; withdraw it with "
        "`/deploy cancel api production`). Approvers: <@U0CAROL>, @sre-leads."))
    assert await rules.may_approve(dep("queued"), "U0CAROL") == Decision(False, (
        "Deployment #7 is not waiting for approval any more (queued). Nothing changed."))


async def test_who_approves_is_said_even_when_nobody_or_everyone_does(tmp_path: Path) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["environments"]["production"]["approval"] = {"approvers": ["U0CAROL"],
                                                      "channel": "#approvals"}
    data["environments"]["staging"]["roles"] = {"lock": ["U0CAROL", "*"]}
    rules = Policy(parse_config(data), Members({"U0ALICE"}))
    assert rules.approvers_text("staging") == "nobody (configure it in shipbot.yml)"
    assert rules.approvers_text("production") == "<@U0CAROL>"
    assert (rules.approvals_channel("production"), rules.approvals_channel("staging")) == (
        "#approvals", None)
    assert rules.principals("staging", "lock") == ["U0CAROL", "*"]
    assert policy._mentions(rules.principals("staging", "lock")) == "<@U0CAROL>, everyone"
