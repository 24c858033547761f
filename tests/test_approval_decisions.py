"""Reject without the Slack round trip: who may open the reason modal, and what a rejection
without a reason records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select

from bot.config import parse_config
from bot.engine import machine
from bot.engine.approvals import ApprovalService
from bot.engine.machine import State
from bot.engine.policy import Policy
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import AuditEvent, Deployment
from tests.conftest import make_config
from tests.test_policy import Members

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
