"""Policy answers, called directly: why a slot is busy, why a deployment cannot be
cancelled, who may acknowledge an alert that maps to no environment, and (on a SQLite
database) roles with their defaults and user groups, locks, freezes, promotion order, the
hotfix path and who may approve."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.config import parse_config
from bot.engine import policy
from bot.engine.directory import UnknownGroup
from bot.engine.guards import GuardService
from bot.engine.policy import INACTIVE, Decision, Policy
from bot.engine.requests import Unfreeze
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import Deployment, Freeze, Lock
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


# --- Roles, locks, freezes and promotion order, called directly on a SQLite database ---


class Workspace:
    """A fake Directory: who is active, and the members of the user groups Slack knows
    (a handle not listed here is a group the workspace does not know)."""

    def __init__(self, active: set[str], groups: dict[str, set[str]] | None = None) -> None:
        self.active, self.groups = active, groups or {}

    async def members(self, handle: str) -> frozenset[str]:
        if handle not in self.groups:
            raise UnknownGroup(handle)
        return frozenset(self.groups[handle])

    async def is_active_user(self, user_id: str) -> bool:
        return user_id in self.active


PEOPLE = {"U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0ERIN"}


def rules_for(tmp_path: Path, groups: dict[str, set[str]] | None = None,
              active: set[str] = PEOPLE, **environments: dict) -> Policy:
    """dev, staging and production as in make_config, each updated with ``environments``."""
    data = make_config(tmp_path).model_dump(mode="json")
    for name, extra in environments.items():
        data["environments"].setdefault(name, {}).update(extra)
    return Policy(parse_config(data), Workspace(active, groups))


def lacks(role: str, env: str, who: str) -> Decision:
    return Decision(False, f":no_entry: You lack the *{role}* role for {env}. "
                           f"Who has it: {who}. Nothing was changed.")


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite:///{tmp_path}/policy.db")
    await create_schema(engine)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def db(sessions: Sessions) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


def deployment(state: str, *, service: str = "api", env: str = "staging",
               version: str | None = "v1.4.2", requester: str = "U0ALICE") -> Deployment:
    return Deployment(request_key=f"{service}-{env}-{version}-{state}-{requester}",
                      service=service, env=env, version=version, requester=requester,
                      state=state, channel="#deploys-api", created_at=NOW - timedelta(hours=1),
                      updated_at=NOW)


def test_unset_roles_take_the_documented_defaults(tmp_path: Path) -> None:
    # staging: no approval rules; production: approvers U0CAROL and @sre-leads.
    rules = rules_for(tmp_path, qa={"roles": {"deploy": ["U0DAVE"]}},
                      production={"roles": {"deploy": ["U0DAVE"], "lock": []}})
    defaults = {role: rules.principals("staging", role)
                for role in ("deploy", "approve", "lock", "rollback", "hotfix")}
    assert defaults == {"deploy": ["*"], "approve": [], "lock": ["*"], "rollback": ["*"],
                        "hotfix": ["*"]}
    # Without approvers, hotfix and rollback follow whoever may deploy.
    assert rules.principals("qa", "hotfix") == ["U0DAVE"]
    assert rules.principals("qa", "rollback") == ["U0DAVE"]
    assert rules.principals("qa", "lock") == ["*"]
    # With approvers, approve and hotfix default to them; rollback still follows deploy;
    # a role set to an empty list means nobody, not the default.
    prod = {role: rules.principals("production", role)
            for role in ("deploy", "approve", "lock", "rollback", "hotfix")}
    assert prod == {"deploy": ["U0DAVE"], "approve": ["U0CAROL", "@sre-leads"], "lock": [],
                    "rollback": ["U0DAVE"], "hotfix": ["U0CAROL", "@sre-leads"]}
    assert rules_for(tmp_path).principals("production", "lock") == ["U0CAROL", "@sre-leads"]


async def test_a_role_is_held_by_name_by_user_group_or_by_everyone(tmp_path: Path) -> None:
    rules = rules_for(tmp_path, {"@sre-leads": {"U0BOB"}, "@deployers": {"U0ERIN"}},
                      staging={"roles": {"deploy": ["@gone", "U0DAVE", "@deployers"]}})
    assert await rules.may("U0CAROL", "approve", "production") == Decision(True)  # by name
    assert await rules.may("U0BOB", "approve", "production") == Decision(True)  # @sre-leads
    assert await rules.may("U0ALICE", "approve", "production") == lacks(
        "approve", "production", "<@U0CAROL>, @sre-leads")
    # A group the workspace does not know (@gone) holds nobody, and does not stop the
    # principals after it from counting.
    assert await rules.may("U0DAVE", "deploy", "staging") == Decision(True)
    assert await rules.may("U0ERIN", "deploy", "staging") == Decision(True)
    assert await rules.may("U0ALICE", "deploy", "staging") == lacks(
        "deploy", "staging", "@gone, <@U0DAVE>, @deployers")
    assert await rules.may("U0ALICE", "deploy", "dev") == Decision(True)  # everyone


async def test_an_inactive_user_holds_no_role_even_one_given_to_everyone(tmp_path: Path) -> None:
    rules = rules_for(tmp_path, {"@sre-leads": {"U0GONE"}}, active=PEOPLE)
    assert await rules.may("U0GONE", "deploy", "dev") == INACTIVE
    assert await rules.may("U0GONE", "approve", "production") == INACTIVE
    assert INACTIVE.reason == ("Your Slack user is not an active member of this workspace, "
                               "so Shipbot ignores the request. Nothing was changed.")
    request = await rules.may_approve(deployment("awaiting_approval", env="production"),
                                      "U0GONE")
    assert request == INACTIVE


async def test_a_request_needs_the_deploy_role_or_for_a_hotfix_the_hotfix_role(
        tmp_path: Path, db: AsyncSession) -> None:
    rules = rules_for(tmp_path, staging={"roles": {"deploy": ["U0ALICE", "U0BOB"],
                                                   "hotfix": ["U0BOB"]}})

    async def ask(user: str, hotfix: bool) -> Decision:
        return await rules.may_request(db, service="api", env="staging", version="v2",
                                       user=user, hotfix=hotfix, now=NOW)

    assert await ask("U0ALICE", False) == Decision(True)
    assert await ask("U0CAROL", False) == lacks("deploy", "staging",
                                                "<@U0ALICE>, <@U0BOB>")
    assert await ask("U0ALICE", True) == lacks("hotfix", "staging", "<@U0BOB>")
    assert await ask("U0BOB", True) == Decision(True)
    assert await ask("U0GONE", False) == INACTIVE


async def test_a_request_is_refused_while_the_same_slot_is_busy(tmp_path: Path,
                                                                db: AsyncSession) -> None:
    rules = rules_for(tmp_path)
    db.add(deployment("deploying", requester="U0BOB"))
    # Neither another service, another environment nor an ended deployment makes it busy.
    db.add(deployment("verifying", service="web"))
    db.add(deployment("building", env="dev"))
    db.add(deployment("succeeded", service="worker"))
    db.add(deployment("failed", service="worker", version="v1"))
    await db.commit()
    busy = await policy.in_flight(db, "api", "staging")
    assert busy is not None and (busy.requester, busy.state) == ("U0BOB", "deploying")
    assert await policy.in_flight(db, "worker", "staging") is None
    for hotfix in (False, True):  # a hotfix skips guards, not the one-at-a-time rule
        refused = await rules.may_request(db, service="api", env="staging", version="v2",
                                          user="U0ALICE", hotfix=hotfix, now=NOW)
        assert refused == Decision(False, policy.busy_reason(busy, NOW))
    for service in ("worker", "web"):
        decision = await rules.may_request(db, service=service, env="production", version=None,
                                           user="U0ALICE", hotfix=False, now=NOW)
        assert decision == Decision(True)


def lock(env: str = "staging", service: str | None = None, *, expires_at: datetime | None = None,
         released_at: datetime | None = None, reason: str = "DB <migration> & backfill") -> Lock:
    return Lock(env=env, service=service, reason=reason, created_by="U0BOB",
                created_at=datetime(2026, 11, 25, 9, 15, tzinfo=UTC), expires_at=expires_at,
                released_at=released_at)


async def test_a_lock_refuses_with_who_why_until_when_and_how_to_unlock(
        tmp_path: Path, db: AsyncSession) -> None:
    rules = rules_for(tmp_path)
    db.add(lock(service="api", expires_at=NOW + timedelta(hours=2, minutes=30)))
    await db.commit()
    assert await rules.gates(db, deployment("queued"), NOW) == Decision(False, (
        ":lock: api on staging is locked by <@U0BOB> since 2026-11-25 09:15 UTC until 12:30 "
        "UTC: DB &lt;migration&gt; &amp; backfill. Nothing was started. Ask them, or someone "
        "with the lock role, to `/deploy unlock staging api`; in an emergency use --hotfix."))
    assert await rules.gates(db, deployment("queued", service="web"), NOW) == Decision(True)

    db.add(lock(reason="release day"))
    await db.commit()
    assert await rules.gates(db, deployment("queued", service="web"), NOW) == Decision(False, (
        ":lock: staging is locked by <@U0BOB> since 2026-11-25 09:15 UTC: release day. "
        "Nothing was started. Ask them, or someone with the lock role, to "
        "`/deploy unlock staging`; in an emergency use --hotfix."))
    assert await rules.gates(db, deployment("queued", env="dev"), NOW) == Decision(True)


async def test_released_and_expired_locks_no_longer_hold(tmp_path: Path,
                                                         db: AsyncSession) -> None:
    rules = rules_for(tmp_path)
    db.add(lock(released_at=NOW - timedelta(minutes=1)))
    db.add(lock(expires_at=NOW))  # expires at this very instant: over
    await db.commit()
    assert await rules.gates(db, deployment("queued"), NOW) == Decision(True)
    refused = await rules.gates(db, deployment("queued"), NOW - timedelta(seconds=1))
    assert refused.reason.startswith(":lock: staging is locked by <@U0BOB> since "
                                     "2026-11-25 09:15 UTC until 10:00 UTC: ")


def freeze(env: str = "staging", *, starts: timedelta = timedelta(hours=-1),
           ends: timedelta = timedelta(hours=2), lifted: timedelta | None = None,
           reason: str = "Black <Friday>") -> Freeze:
    return Freeze(env=env, reason=reason, created_by="U0CAROL", starts_at=NOW + starts,
                  ends_at=NOW + ends, lifted_at=None if lifted is None else NOW + lifted)


async def test_a_freeze_refuses_with_the_window_that_ends_last(tmp_path: Path,
                                                               db: AsyncSession) -> None:
    rules = rules_for(tmp_path)
    db.add(freeze(ends=timedelta(hours=2)))  # Freeze #1
    db.add(freeze(ends=timedelta(hours=5), reason="Sale"))  # Freeze #2: ends last
    db.add(freeze(ends=timedelta(hours=1)))  # Freeze #3
    db.add(freeze(env="dev", ends=timedelta(days=3)))
    await db.commit()
    assert await rules.gates(db, deployment("queued"), NOW) == Decision(False, (
        ":snowflake: staging is frozen — Freeze #2 by <@U0CAROL>: Sale (until 2026-11-25 "
        "15:00 UTC). Nothing was started. Deploy after 2026-11-25 15:00 UTC, or use --hotfix "
        "for an emergency."))
    assert await rules.gates(db, deployment("queued", env="production"), NOW) == Decision(True)


async def test_lifted_ended_and_future_freezes_do_not_hold(tmp_path: Path,
                                                           db: AsyncSession) -> None:
    rules = rules_for(tmp_path)
    db.add(freeze(lifted=timedelta(minutes=-5)))
    db.add(freeze(starts=timedelta(hours=-3), ends=timedelta(0)))  # ends at this instant
    db.add(freeze(starts=timedelta(minutes=1)))
    await db.commit()
    assert await rules.gates(db, deployment("queued"), NOW) == Decision(True)
    frozen = await rules.gates(db, deployment("queued"), NOW + timedelta(minutes=1))
    assert frozen.reason.startswith(":snowflake: staging is frozen — Freeze #3 by <@U0CAROL>")


async def test_unfreeze_lifts_only_the_freezes_still_in_force(tmp_path: Path,
                                                              sessions: Sessions) -> None:
    async with sessions() as session:
        session.add(freeze(lifted=timedelta(minutes=-5)))  # Freeze #1: lifted already
        session.add(freeze(starts=timedelta(hours=-3), ends=timedelta(0)))  # #2: ends now
        session.add(freeze())  # Freeze #3: in force
        await session.commit()
    guards = GuardService(sessions, rules_for(tmp_path), lambda: NOW)
    assert await guards.unfreeze(Unfreeze(env="staging"), "U0DAVE") == (
        "Lifted 1 freeze on staging.")
    async with sessions() as session:
        rows = (await session.exec(select(Freeze).order_by(col(Freeze.id)))).all()
    assert [(r.id, r.lifted_by) for r in rows] == [(1, None), (2, None), (3, "U0DAVE")]
    assert await guards.unfreeze(Unfreeze(env="staging"), "U0DAVE") == (
        "staging has no one-off freeze to lift. Recurring windows come from shipbot.yml; use "
        "--hotfix for an emergency inside one.")


async def test_a_recurring_freeze_window_from_the_config_holds(tmp_path: Path,
                                                               db: AsyncSession) -> None:
    data = make_config(tmp_path).model_dump(mode="json")
    data["freeze_windows"] = [{"name": "standup", "environments": ["staging"],
                               "cron": "30 9 * * wed", "duration": "1h",
                               "reason": "Team demo"}]  # NOW is Wednesday 10:00 UTC
    rules = Policy(parse_config(data), Workspace(PEOPLE))
    assert await rules.gates(db, deployment("queued"), NOW) == Decision(False, (
        ":snowflake: staging is frozen — standup: Team demo (until 2026-11-25 10:30 UTC). "
        "Nothing was started. Deploy after 2026-11-25 10:30 UTC, or use --hotfix for an "
        "emergency."))
    assert await rules.gates(db, deployment("queued", env="dev"), NOW) == Decision(True)


PROMOTED = {"staging": {"requires": "dev"}, "production": {"requires": "staging"}}


async def test_a_version_must_succeed_on_the_required_environment_first(
        tmp_path: Path, db: AsyncSession) -> None:
    rules = rules_for(tmp_path, **PROMOTED)
    for row in (deployment("succeeded", env="dev", version="v2"),
                deployment("failed", env="staging", version="v2"),
                deployment("succeeded", env="staging", version="v1"),
                deployment("succeeded", service="web", env="staging", version="v2")):
        db.add(row)
    await db.commit()
    assert await rules.gates(db, deployment("queued", env="production", version="v2"),
                             NOW) == Decision(False, (
        ":construction: api `v2` must succeed on staging before production, but it "
        "succeeded on dev only. Run `/deploy api staging v2` first."))
    assert await rules.gates(db, deployment("queued", env="staging", version="v2"),
                             NOW) == Decision(True)
    assert await rules.gates(db, deployment("queued", env="production", version="v1"),
                             NOW) == Decision(True)
    assert await rules.gates(db, deployment("queued", env="staging", version="v3"),
                             NOW) == Decision(False, (
        ":construction: api `v3` must succeed on dev before staging, but it has not been "
        "deployed anywhere yet. Run `/deploy api dev v3` first."))
    # Without an order, or for the latest build (no version to compare), nothing to check.
    assert await rules.gates(db, deployment("queued", env="dev", version="v9"),
                             NOW) == Decision(True)
    assert await rules.gates(db, deployment("queued", env="production", version=None),
                             NOW) == Decision(True)


async def test_where_a_version_succeeded_is_listed_in_order(tmp_path: Path,
                                                            db: AsyncSession) -> None:
    rules = rules_for(tmp_path, qa={"requires": "staging"})  # qa is listed after production
    db.add(deployment("succeeded", env="production", version="v2"))
    db.add(deployment("succeeded", env="dev", version="v2"))
    await db.commit()
    assert (await rules.gates(db, deployment("queued", env="qa", version="v2"), NOW)).reason \
        == (":construction: api `v2` must succeed on staging before qa, but it succeeded on "
            "dev, production only. Run `/deploy api staging v2` first.")


async def test_the_gates_are_checked_lock_then_freeze_then_order_and_a_hotfix_skips_them(
        tmp_path: Path, db: AsyncSession) -> None:
    rules = rules_for(tmp_path, **PROMOTED)

    async def request(hotfix: bool = False) -> str:
        decision = await rules.may_request(db, service="api", env="staging", version="v7",
                                           user="U0ALICE", hotfix=hotfix, now=NOW)
        return decision.reason

    assert (await request()).startswith(":construction: api `v7` must succeed on dev")
    db.add(freeze())
    await db.commit()
    assert (await request()).startswith(":snowflake: staging is frozen")
    db.add(lock())
    await db.commit()
    assert (await request()).startswith(":lock: staging is locked by <@U0BOB>")
    assert await rules.may_request(db, service="api", env="staging", version="v7",
                                   user="U0ALICE", hotfix=True, now=NOW) == Decision(True)


def test_approvals_needed_and_where_they_are_asked(tmp_path: Path) -> None:
    rules = rules_for(tmp_path, production={"approval": {
        "approvers": ["U0CAROL"], "required_approvals": 2, "hotfix_approvals": 0,
        "channel": "#approvals"}})
    assert (rules.approvals_needed("production", False),
            rules.approvals_needed("production", True)) == (2, 0)
    assert (rules.approvals_needed("staging", False),
            rules.approvals_needed("staging", True)) == (0, 0)
    default = rules_for(tmp_path)
    assert (default.approvals_needed("production", False),
            default.approvals_needed("production", True)) == (1, 1)
    assert (rules.approvals_channel("production"), default.approvals_channel("production"),
            rules.approvals_channel("staging")) == ("#approvals", None, None)


async def test_approve_and_reject_need_the_approve_role_and_a_waiting_deployment(
        tmp_path: Path) -> None:
    rules = rules_for(tmp_path, {"@sre-leads": {"U0BOB"}})
    waiting = deployment("awaiting_approval", env="production")
    waiting.id = 7
    for verb in ("approve", "reject"):
        assert await rules.may_approve(waiting, "U0CAROL", verb) == Decision(True)
        assert await rules.may_approve(waiting, "U0BOB", verb) == Decision(True)
        assert await rules.may_approve(waiting, "U0DAVE", verb) == lacks(
            "approve", "production", "<@U0CAROL>, @sre-leads")
    assert await rules.may_approve(waiting, "U0ALICE") == Decision(False, (
        "You requested deployment #7, so you cannot approve it (four eyes; withdraw it with "
        "`/deploy cancel api production`). Approvers: <@U0CAROL>, @sre-leads."))
    for state, label in (("rejected", "rejected"), ("expired", "expired"),
                         ("cancelled", "cancelled"), ("deploying", "deploying"),
                         ("requested", "requested")):
        ended = deployment(state, env="production")
        ended.id = 7
        for verb in ("approve", "reject"):
            assert await rules.may_approve(ended, "U0CAROL", verb) == Decision(False, (
                f"Deployment #7 is not waiting for approval any more ({label}). "
                "Nothing changed."))
