"""Reject without the Slack round trip: who may open the reason modal, and what a rejection
without a reason records."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from bot.clock import as_utc
from bot.config import parse_config
from bot.engine import machine
from bot.engine.approvals import ApprovalService
from bot.engine.machine import State
from bot.engine.policy import Policy
from bot.slack.notes import words_of
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import Approval, AuditEvent, Deployment, Outbox
from tests.conftest import make_config
from tests.test_policy import Members, Workspace

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Sessions, ApprovalService, int]]:
    engine = create_engine(f"sqlite:///{tmp_path}/approvals.db")
    await create_schema(engine)
    sessions = session_factory(engine)
    data = make_config(tmp_path).model_dump(mode="json")
    data["environments"]["production"]["approval"] = {"approvers": ["U0CAROL"]}
    rules = Policy(parse_config(data), Members({"U0ALICE", "U0CAROL"}))
    async with sessions() as session:
        dep = await machine.create(session, Deployment(
            request_key="k", service="api", env="production", version="v2",
            requester="U0ALICE", state="", channel="#deploys-api", created_at=NOW,
            updated_at=NOW), actor="U0ALICE", now=NOW)
        machine.transition(session, dep, State.AWAITING_APPROVAL, actor="U0ALICE", now=NOW)
        await session.commit()
        assert dep.id is not None
    yield sessions, ApprovalService(sessions, rules, lambda: NOW), dep.id
    await engine.dispose()


async def test_only_an_approver_other_than_the_requester_may_open_reject(world) -> None:
    _, approvals, dep_id = world
    assert await approvals.may_reject(dep_id, "U0ALICE") == (
        f"You requested deployment #{dep_id}, so you cannot reject it (four eyes; withdraw it "
        "with `/deploy cancel api production`). Approvers: <@U0CAROL>.")
    assert await approvals.may_reject(dep_id, "U0CAROL") is None
    assert await approvals.may_reject(99, "U0CAROL") == (
        "Deployment #99 does not exist; nothing was changed.")


async def test_a_rejection_without_a_reason_says_so(world) -> None:
    sessions, approvals, dep_id = world
    assert await approvals.reject(dep_id, "U0CAROL", "  ") == (
        f"You rejected deployment #{dep_id}.")
    async with sessions() as session:
        dep = await session.get(Deployment, dep_id)
        events = (await session.exec(select(AuditEvent).order_by(AuditEvent.id))).all()
    assert dep is not None and dep.state == "rejected"
    assert dep.detail == "Rejected by <@U0CAROL>: no reason given"
    assert (events[-1].action, events[-1].actor, events[-1].to_state) == (
        "reject", "U0CAROL", "rejected")


# --- Approve and reject called directly: what the approver is told, and what is recorded ---

LATER = NOW + timedelta(minutes=4)


class Clicks:
    """The approval service of one deployment awaiting approval in production (requested by
    U0ALICE, approvers U0BOB, U0CAROL and @sre-leads = {U0ERIN}), on a clock at LATER."""

    def __init__(self, engine: AsyncEngine, service: ApprovalService) -> None:
        self.engine, self.service, self.sessions = engine, service, service.sessions
        self.dep_id = 0
        self.woken = 0

    async def requested(self, service: str = "api") -> int:
        """A deployment of ``service`` to production, awaiting approval since NOW."""
        async with self.sessions() as session:
            dep = await machine.create(session, Deployment(
                request_key=service, service=service, env="production", version="v2",
                requester="U0ALICE", state="", channel="#deploys-api", created_at=NOW,
                updated_at=NOW,
                approvals_required=self.service.policy.approvals_needed("production", False)),
                actor="U0ALICE", now=NOW)
            machine.transition(session, dep, State.AWAITING_APPROVAL, actor="U0ALICE", now=NOW)
            dep.next_action_at = None
            await session.commit()
            assert dep.id is not None
            return dep.id

    def wake(self) -> None:
        self.woken += 1

    async def rows(self) -> tuple[Deployment, list[Approval], list[AuditEvent], list[Outbox]]:
        async with self.sessions() as session:
            dep = await session.get(Deployment, self.dep_id)
            assert dep is not None
            approvals = list((await session.exec(select(Approval).order_by(
                col(Approval.id)))).all())
            events = list((await session.exec(select(AuditEvent).order_by(
                col(AuditEvent.id)))).all())
            outbox = list((await session.exec(select(Outbox).order_by(col(Outbox.id)))).all())
        return dep, approvals, events, outbox


@pytest.fixture
async def clicks_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Clicks]]]:
    engines: list[AsyncEngine] = []

    async def factory(**approval: object) -> Clicks:
        engine = create_engine(f"sqlite:///{tmp_path}/clicks{len(engines)}.db")
        engines.append(engine)
        await create_schema(engine)
        sessions = session_factory(engine)
        data = make_config(tmp_path).model_dump(mode="json")
        data["environments"]["production"]["approval"] = {
            "approvers": ["U0BOB", "U0CAROL", "@sre-leads"], **approval}
        rules = Policy(parse_config(data), Workspace(
            {"U0ALICE", "U0BOB", "U0CAROL", "U0DAVE", "U0ERIN"}, {"@sre-leads": {"U0ERIN"}}))
        clicks = Clicks(engine, ApprovalService(sessions, rules, lambda: LATER))
        clicks.service.on_change = clicks.wake
        clicks.dep_id = await clicks.requested("api")
        return clicks

    yield factory
    for engine in engines:
        await engine.dispose()


def thread(outbox: list[Outbox]) -> list[str | None]:
    """The thread messages queued, in the words the notifier posts."""
    return [words_of(row)[0] for row in outbox if row.kind == "thread"]


async def test_one_approval_from_an_approver_lets_the_deployment_proceed(
        clicks_factory) -> None:
    clicks = await clicks_factory()
    before = await clicks.rows()
    reply = await clicks.service.approve(clicks.dep_id, "U0CAROL")
    assert reply == f"Approved: deployment #{clicks.dep_id} of api to production proceeds."
    dep, approvals, events, outbox = await clicks.rows()
    assert (dep.state, dep.approvals_received, dep.detail) == ("queued", 1, "Approved (1 of 1)")
    assert as_utc(dep.updated_at) == LATER
    assert dep.next_action_at is not None and as_utc(dep.next_action_at) == LATER  # at once
    assert [(a.user, a.decision, a.reason, as_utc(a.at)) for a in approvals] == [
        ("U0CAROL", "approve", "", LATER)]
    new = events[len(before[2]):]
    assert [(e.deployment_id, e.actor, e.action, e.from_state, e.to_state, e.detail,
             as_utc(e.at)) for e in new] == [
        (clicks.dep_id, "U0CAROL", "approve", None, None, "1 of 1", LATER),
        (clicks.dep_id, "U0CAROL", "approved", "awaiting_approval", "queued",
         "Approved (1 of 1)", LATER)]
    added = outbox[len(before[3]):]
    assert thread(added) == [
        ":white_check_mark: <@U0CAROL> approved (1 of 1). Deploying `v2` to production now."]
    assert [(r.kind, r.deployment_id) for r in added if r.kind == "approval"] == [
        ("approval", clicks.dep_id)]  # the request is re-rendered: approved, no buttons
    assert clicks.woken == 1


async def test_two_required_approvals_come_from_two_different_people(clicks_factory) -> None:
    clicks = await clicks_factory(required_approvals=2)
    first = await clicks.service.approve(clicks.dep_id, "U0ERIN")  # via @sre-leads
    assert first == f"Approved (1 of 2); deployment #{clicks.dep_id} needs more approvals."
    dep, approvals, events, outbox = await clicks.rows()
    assert (dep.state, dep.approvals_received, dep.next_action_at) == (
        "awaiting_approval", 1, None)
    assert as_utc(dep.updated_at) == LATER
    assert (events[-1].actor, events[-1].action, events[-1].detail) == (
        "U0ERIN", "approve", "1 of 2")
    assert thread(outbox)[-1] == ":+1: <@U0ERIN> approved (1 of 2). Waiting for more approvals."
    assert outbox[-1].kind == "approval"
    # The same person again counts once, and is told why.
    again = await clicks.service.approve(clicks.dep_id, "U0ERIN")
    assert again == (f"You already approved deployment #{clicks.dep_id}; it needs someone "
                     "else too.")
    assert await clicks.rows() == (dep, approvals, events, outbox)
    assert clicks.woken == 1

    second = await clicks.service.approve(clicks.dep_id, "U0BOB")
    assert second == f"Approved: deployment #{clicks.dep_id} of api to production proceeds."
    dep, approvals, events, outbox = await clicks.rows()
    assert (dep.state, dep.approvals_received, dep.detail) == ("queued", 2, "Approved (2 of 2)")
    assert [a.user for a in approvals] == ["U0ERIN", "U0BOB"]
    assert [(e.actor, e.action, e.detail) for e in events[-2:]] == [
        ("U0BOB", "approve", "2 of 2"), ("U0BOB", "approved", "Approved (2 of 2)")]
    assert thread(outbox)[-1] == (
        ":white_check_mark: <@U0BOB> approved (2 of 2). Deploying `v2` to production now.")
    assert clicks.woken == 2
    # Once decided, even a first approver clicking again is told it is no longer waiting.
    late = await clicks.service.approve(clicks.dep_id, "U0ERIN")
    assert late == (f"Deployment #{clicks.dep_id} is not waiting for approval any more "
                    "(queued). Nothing changed.")
    assert await clicks.rows() == (dep, approvals, events, outbox)


async def test_an_approval_counts_for_its_own_deployment_only(clicks_factory) -> None:
    clicks = await clicks_factory(required_approvals=2)
    web = await clicks.requested("web")
    assert await clicks.service.approve(clicks.dep_id, "U0BOB") == (
        f"Approved (1 of 2); deployment #{clicks.dep_id} needs more approvals.")
    assert await clicks.service.approve(web, "U0BOB") == (
        f"Approved (1 of 2); deployment #{web} needs more approvals.")
    _, approvals, events, _ = await clicks.rows()
    assert [(a.deployment_id, a.user) for a in approvals] == [
        (clicks.dep_id, "U0BOB"), (web, "U0BOB")]
    assert [(e.deployment_id, e.service, e.actor, e.detail) for e in events
            if e.action == "approve"] == [(clicks.dep_id, "api", "U0BOB", "1 of 2"),
                                         (web, "web", "U0BOB", "1 of 2")]


async def test_a_refused_approval_records_nothing(clicks_factory) -> None:
    clicks = await clicks_factory()
    before = await clicks.rows()
    dep_id = clicks.dep_id
    assert await clicks.service.approve(dep_id, "U0ALICE") == (
        f"You requested deployment #{dep_id}, so you cannot approve it (four eyes; withdraw "
        "it with `/deploy cancel api production`). Approvers: <@U0BOB>, <@U0CAROL>, "
        "@sre-leads.")
    assert await clicks.service.reject(dep_id, "U0DAVE", "no") == (
        ":no_entry: You lack the *approve* role for production. Who has it: <@U0BOB>, "
        "<@U0CAROL>, @sre-leads. Nothing was changed.")
    assert await clicks.service.approve(dep_id + 1, "U0BOB") == (
        f"Deployment #{dep_id + 1} does not exist; nothing was changed.")
    assert await clicks.rows() == before
    assert clicks.woken == 0


async def test_a_rejection_records_the_reason_and_tells_the_requester(clicks_factory) -> None:
    clicks = await clicks_factory(required_approvals=2)
    assert await clicks.service.approve(clicks.dep_id, "U0BOB") == (
        f"Approved (1 of 2); deployment #{clicks.dep_id} needs more approvals.")
    reply = await clicks.service.reject(clicks.dep_id, "U0CAROL", "  <!here> breaks login  ")
    assert reply == f"You rejected deployment #{clicks.dep_id}."
    dep, approvals, events, outbox = await clicks.rows()
    assert dep.state == "rejected" and dep.active_slot is None
    assert dep.detail == "Rejected by <@U0CAROL>: &lt;!here&gt; breaks login"
    assert [(a.user, a.decision, a.reason) for a in approvals] == [
        ("U0BOB", "approve", ""), ("U0CAROL", "reject", "<!here> breaks login")]
    assert (events[-1].actor, events[-1].action, events[-1].from_state,
            events[-1].to_state) == ("U0CAROL", "reject", "awaiting_approval", "rejected")
    assert thread(outbox)[-1] == (
        ":no_entry: <@U0CAROL> rejected this deployment: &lt;!here&gt; breaks login. Nothing "
        "was deployed. <@U0ALICE> can address it and ask again.")
    assert outbox[-1].kind == "approval"
    assert clicks.woken == 2
    # Rejected is final: neither the other approver nor the first can still decide.
    for user in ("U0ERIN", "U0BOB"):
        assert await clicks.service.approve(clicks.dep_id, user) == (
            f"Deployment #{clicks.dep_id} is not waiting for approval any more (rejected). "
            "Nothing changed.")
    assert await clicks.service.may_reject(clicks.dep_id, "U0ERIN") == (
        f"Deployment #{clicks.dep_id} is not waiting for approval any more (rejected). "
        "Nothing changed.")


async def test_a_decision_that_loses_every_race_says_to_look_at_the_thread(
        clicks_factory) -> None:
    clicks = await clicks_factory()
    before = await clicks.rows()

    class Racing(AsyncSession):
        """Just before each commit, someone else's decision changes the deployment row."""

        async def commit(self) -> None:
            async with clicks.sessions() as rival:
                dep = await rival.get(Deployment, clicks.dep_id)
                assert dep is not None
                dep.updated_at = as_utc(dep.updated_at) + timedelta(seconds=1)
                rival.add(dep)
                await rival.commit()
            await super().commit()

    racing = async_sessionmaker(clicks.engine, class_=Racing, expire_on_commit=False)
    service = ApprovalService(racing, clicks.service.policy, lambda: LATER)
    assert await service.approve(clicks.dep_id, "U0CAROL") == (
        "Several people decided at once; look at the thread for the outcome.")
    dep, approvals, events, outbox = await clicks.rows()
    assert (dep.state, dep.approvals_received, approvals) == ("awaiting_approval", 0, [])
    assert (events, outbox) == before[2:]
