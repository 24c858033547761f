"""The deployment lifecycle as the database records it: which changes are allowed, what
a finished deployment releases, and the audit trail and card refresh of every change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from bot.engine import machine
from bot.engine.machine import InvalidTransition, State, StepInProgress
from bot.redact import Redactor
from bot.slack.notes import words_of
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import AlertThread, AuditEvent, Deployment, Outbox

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LATER = NOW + timedelta(minutes=5)
TOKEN = "s3cr3t-deploy-token"  # a secret the bot knows (its redactor redacts it)


@pytest.fixture
async def sessions(tmp_path: Path) -> AsyncIterator[Sessions]:
    engine = create_engine(f"sqlite:///{tmp_path}/machine.db")
    await create_schema(engine)
    yield session_factory(engine, Redactor([TOKEN]))
    await engine.dispose()


def request(service: str = "api", key: str = "k1") -> Deployment:
    return Deployment(request_key=key, service=service, env="staging", version="v1",
                      requester="U0ALICE", state="", channel="#deploys-api",
                      created_at=NOW, updated_at=NOW)


async def created(sessions: Sessions, **kw: str) -> int:
    async with sessions() as session:
        dep = await machine.create(session, request(**kw), actor="U0ALICE", now=NOW,
                                   detail="asked")
        await session.commit()
        assert dep.id is not None
        return dep.id


async def trail(sessions: Sessions) -> list[AuditEvent]:
    async with sessions() as session:
        return list((await session.exec(select(AuditEvent).order_by(AuditEvent.id))).all())


async def cards(sessions: Sessions) -> list[Outbox]:
    async with sessions() as session:
        return list((await session.exec(select(Outbox).where(Outbox.kind == "card"))).all())


async def move(sessions: Sessions, dep_id: int, to: State, detail: str = "",
               now: datetime = LATER) -> Deployment:
    async with sessions() as session:
        dep = await session.get(Deployment, dep_id)
        assert dep is not None
        machine.transition(session, dep, to, actor="U0BOB", now=now, detail=detail,
                           action="test")
        await session.commit()
        return dep


async def test_a_request_holds_its_slot_is_due_now_and_is_audited(sessions) -> None:
    dep_id = await created(sessions)
    async with sessions() as session:
        dep = await session.get(Deployment, dep_id)
    assert dep is not None
    assert (dep.state, dep.active_slot) == ("requested", "api/staging")
    assert dep.created_at == dep.updated_at == dep.next_action_at == NOW
    [event] = await trail(sessions)
    assert (event.deployment_id, event.actor, event.action, event.from_state,
            event.to_state, event.detail, event.at) == (
        dep_id, "U0ALICE", "requested", None, "requested", "asked", NOW)
    assert (event.service, event.env) == ("api", "staging")
    assert [c.deployment_id for c in await cards(sessions)] == [dep_id]  # a card is posted


async def test_a_second_deployment_of_the_same_slot_is_refused_by_the_database(sessions):
    await created(sessions)
    await created(sessions, service="web", key="k2")  # another slot is fine
    with pytest.raises(IntegrityError):
        await created(sessions, key="k3")


async def test_finishing_releases_the_slot_and_stops_scheduling(sessions) -> None:
    dep_id = await created(sessions)
    async with sessions() as session:
        dep = await session.get(Deployment, dep_id)
        assert dep is not None
        dep.step_attempts, dep.step_deadline_at = 3, LATER
        session.add(dep)
        await session.commit()
    dep = await move(sessions, dep_id, State.QUEUED, detail="approved")
    assert (dep.active_slot, dep.finished_at, dep.step_attempts) == ("api/staging", None, 0)
    assert dep.next_action_at == NOW and dep.step_deadline_at == LATER  # still scheduled
    dep = await move(sessions, dep_id, State.CANCELLED, now=LATER + timedelta(minutes=1))
    assert dep.state == "cancelled" and dep.active_slot is None
    assert dep.finished_at == dep.updated_at == LATER + timedelta(minutes=1)
    assert dep.next_action_at is None and dep.step_deadline_at is None
    assert dep.detail == "approved"  # a change without a detail keeps the last one
    await created(sessions, key="k2")  # the slot is free again


async def test_every_change_is_audited_and_refreshes_the_card(sessions) -> None:
    dep_id = await created(sessions)
    await move(sessions, dep_id, State.QUEUED, detail=f"token {TOKEN} " + "build output " * 300)
    events = await trail(sessions)
    assert [(e.action, e.from_state, e.to_state, e.actor) for e in events] == [
        ("requested", None, "requested", "U0ALICE"), ("test", "requested", "queued", "U0BOB")]
    assert events[1].detail.startswith("token [redacted] build output")
    assert TOKEN not in events[1].detail
    assert len(events[1].detail) == 2000 and events[1].at == LATER
    assert len(await cards(sessions)) == 2


async def test_a_change_the_lifecycle_does_not_allow_is_refused(sessions) -> None:
    dep_id = await created(sessions)
    with pytest.raises(InvalidTransition, match="requested -> succeeded is not allowed"):
        await move(sessions, dep_id, State.SUCCEEDED)
    await move(sessions, dep_id, State.CANCELLED)
    with pytest.raises(InvalidTransition):
        await move(sessions, dep_id, State.QUEUED)  # finished is final
    assert len(await trail(sessions)) == 2


async def test_defaults_audit_a_plain_request_and_transition(sessions) -> None:
    async with sessions() as session:
        dep = await machine.create(session, request(), actor="U0ALICE", now=NOW)
        machine.transition(session, dep, State.QUEUED, actor="U0BOB", now=LATER)
        await session.commit()
    assert dep.detail == ""
    assert [(e.action, e.detail) for e in await trail(sessions)] == [
        ("requested", ""), ("transition", "")]


async def test_decisions_that_change_no_state_are_audited_redacted(sessions) -> None:
    dep_id = await created(sessions)
    async with sessions() as session:
        machine.record(session, service="api", env="staging", actor="U0CAROL",
                       action="approve", now=LATER, detail=f"1 of 1 {TOKEN}",
                       deployment_id=dep_id)
        machine.record(session, service="*", env="production", actor="U0BOB", action="lock",
                       now=LATER)
        await session.commit()
    approve, lock = (await trail(sessions))[1:]
    assert (approve.deployment_id, approve.service, approve.env, approve.actor,
            approve.action, approve.from_state, approve.to_state, approve.detail,
            approve.at) == (dep_id, "api", "staging", "U0CAROL", "approve", None, None,
                            "1 of 1 [redacted]", LATER)
    assert (lock.deployment_id, lock.service, lock.env, lock.action, lock.detail) == (
        None, "*", "production", "lock", "")


async def test_a_rollback_reports_its_progress_in_the_alert_thread(sessions) -> None:
    async with sessions() as session:
        thread = AlertThread(source="alertmanager", fingerprint="f1", service="api",
                             env="staging", status="firing", name="HighErrorRate",
                             started_at=NOW, created_at=NOW, updated_at=NOW)
        session.add(thread)
        await session.flush()
        dep = request()
        dep.kind, dep.alert_thread_id = "rollback", thread.id
        await machine.create(session, dep, actor="U0BOB", now=NOW)
        await session.commit()
        assert dep.id is not None and thread.id is not None
        dep_id, thread_id = dep.id, thread.id
    await move(sessions, dep_id, State.QUEUED)
    await move(sessions, dep_id, State.DEPLOYING)
    async with sessions() as session:
        replies = (await session.exec(select(Outbox).where(
            Outbox.alert_thread_id == thread_id, Outbox.kind == "alert_reply"))).all()
    assert [words_of(r)[0] for r in replies] == [
        f":rewind: Rollback #{dep_id}: putting `v1` on staging now."]


def test_a_step_is_in_progress_while_its_lease_lasts() -> None:
    dep = request()
    assert not machine.step_in_progress(dep, NOW)
    dep.lease_owner, dep.lease_until = "replica-1", NOW + timedelta(seconds=1)
    assert machine.step_in_progress(dep, NOW)
    assert not machine.step_in_progress(dep, NOW + timedelta(seconds=1))  # expired
    dep.lease_owner = None
    assert not machine.step_in_progress(dep, NOW)
    dep.lease_owner, dep.lease_until = "replica-1", None
    assert not machine.step_in_progress(dep, NOW)


async def test_a_decision_is_tried_again_after_a_conflict_then_given_up() -> None:
    tries: list[int] = []

    async def conflicted_twice() -> str:
        tries.append(1)
        if len(tries) <= 2:
            raise StepInProgress
        return "done"

    assert await machine.retry_on_conflict(conflicted_twice, give_up="gave up") == "done"
    assert len(tries) == 3
    tries.clear()

    async def always() -> str:
        tries.append(1)
        raise StepInProgress

    assert await machine.retry_on_conflict(always, give_up="gave up", tries=3) == "gave up"
    assert len(tries) == 3
    tries.clear()
    assert await machine.retry_on_conflict(always, give_up="gave up") == "gave up"
    assert len(tries) == 5  # five tries by default

    async def broken() -> str:
        raise ValueError("a bug is not a conflict")

    with pytest.raises(ValueError):
        await machine.retry_on_conflict(broken, give_up="gave up")
