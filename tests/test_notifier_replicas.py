"""Slack delivery on several replicas (pods on one database): each runs a ``Notifier``
over the same outbox, and Slack must still get each thread reply once and in order, one
status card, one approval request and one alert root per thread. A replica that dies
holding a claim is taken over once its lease has run out, without a second card or
root; a replica still waiting for Slack keeps its claim.

Two ``Notifier`` instances, each with its own engine, writer queue and Slack client (as
two processes have), on SQLite and on a real PostgreSQL, against the fake Slack; and two
running bots (LocalBot) on one PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient
from sqlmodel import col, select

from bot.devtools.fake_slack import FakeSlack
from bot.engine.replicas import release_dead_leases
from bot.metrics import Metrics
from bot.slack import notifier as notifier_module
from bot.slack.app import build_web_client
from bot.slack.notifier import Notifier
from bot.slack.retries import Backoffs
from bot.store.db import Sessions, create_engine, create_schema, session_factory
from bot.store.models import AlertThread, Deployment, Outbox
from bot.store.writers import WriterQueue
from tests.conftest import FakeClock, eventually, make_config
from tests.test_replicas import replica, short_leases  # noqa: F401  (fixtures)

pytest_plugins = ["tests.postgres_fixture"]

LEASE = timedelta(seconds=30)
DEPLOYS, ALERTS, APPROVALS = "#deploys-api", "#alerts", "#approvals"
REPLIES = 6  # per thread and batch


class Approvers:
    def approvers_text(self, env: str) -> str:
        return "<!subteam^S1|release-managers>"

    def approvals_channel(self, env: str) -> str | None:
        return APPROVALS


class Client(AsyncWebClient):
    """A pod's Slack client; ``hang_after`` makes it hang once Slack has answered a post
    whose text it names (the pod dies there), ``hold`` before sending any call."""

    hang_after: str | None = None
    hold: asyncio.Event | None = None
    answered_late: asyncio.Event | None = None  # Slack has the post; the answer lingers

    async def api_call(self, api_method: str, **kwargs: Any) -> Any:  # type: ignore[override]
        if self.hold is not None:
            await self.hold.wait()
        answer = await super().api_call(api_method, **kwargs)
        if self.answered_late is not None and api_method == "chat.postMessage":
            self.answered_late.set()
            await asyncio.sleep(0.2)
        sent = str((kwargs.get("json") or kwargs.get("params") or {}).get("text", ""))
        if self.hang_after and self.hang_after in sent and api_method == "chat.postMessage":
            await asyncio.Event().wait()  # hangs until the pod is killed
        return answer


@dataclass
class Pod:
    notifier: Notifier
    sessions: Sessions
    client: Client


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shipbot.db"
    return str(request.getfixturevalue("migrated_postgres_url"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    """Without rate limits: the replicas' race is the subject, not Slack's pacing."""
    fake = FakeSlack(rate_limits=False)
    await fake.start()
    for channel in (DEPLOYS, ALERTS, APPROVALS):
        fake.add_channel(channel)
    yield fake
    await fake.stop()


@pytest.fixture
async def pods(database_url: str, clock: FakeClock, slack: FakeSlack
               ) -> AsyncIterator[Callable[[str], Awaitable[Pod]]]:
    """Start replica ``name``: its own engine, writer queue and Slack client."""
    engines = []

    async def start(name: str) -> Pod:
        engine = create_engine(database_url)
        engines.append(engine)
        await create_schema(engine)
        sessions = session_factory(engine)
        client = Client(token="xoxb-test", base_url=slack.base_url)
        notifier = Notifier(sessions, client, clock, Metrics(), Approvers(),
                            writers=WriterQueue(database_url), owner=f"{name}/1", lease=LEASE)
        return Pod(notifier, sessions, client)

    yield start
    for engine in engines:
        await engine.dispose()


async def add_deployment(pod: Pod, clock: FakeClock, n: int) -> int:
    async with pod.sessions() as session:
        now = clock()
        dep = Deployment(request_key=f"k{n}", service="api", env="production",
                         version=f"v1.{n}", requester="U1", state="awaiting_approval",
                         channel=DEPLOYS, created_at=now, updated_at=now)
        session.add(dep)
        await session.commit()
        assert dep.id is not None
        return dep.id


async def add_alert(pod: Pod, clock: FakeClock) -> int:
    async with pod.sessions() as session:
        now = clock()
        thread = AlertThread(source="alertmanager", fingerprint="f1", service="api",
                             env="production", status="firing", name="HighErrorRate",
                             started_at=now, created_at=now, updated_at=now, channel=ALERTS)
        session.add(thread)
        await session.commit()
        assert thread.id is not None
        return thread.id


async def queue(pod: Pod, clock: FakeClock, deps: list[int], alert: int, batch: int) -> None:
    """A batch of each thread's rows, as the engine writes them: card refreshes, replies,
    approval refreshes, and the alert's root and replies."""
    async with pod.sessions() as session:
        for dep_id in deps:
            session.add(Outbox(deployment_id=dep_id, kind="card", created_at=clock()))
            for n in range(REPLIES):
                session.add(Outbox(deployment_id=dep_id, kind="thread", created_at=clock(),
                                   text=f"#{dep_id} reply {batch}.{n}"))
                if n == 2:
                    session.add(Outbox(deployment_id=dep_id, kind="approval",
                                       created_at=clock()))
            session.add(Outbox(deployment_id=dep_id, kind="card", created_at=clock()))
        session.add(Outbox(alert_thread_id=alert, kind="alert_root", created_at=clock()))
        for n in range(REPLIES):
            session.add(Outbox(alert_thread_id=alert, kind="alert_reply", created_at=clock(),
                               text=f"alert reply {batch}.{n}"))
        await session.commit()


async def outbox(pod: Pod) -> list[Outbox]:
    async with pod.sessions() as session:
        return list((await session.exec(select(Outbox).order_by(col(Outbox.id)))).all())


async def until_delivered(*pods: Pod, rounds: int = 50) -> None:
    """Every replica delivers at once, round after round, until nothing is left."""
    for _ in range(rounds):
        await asyncio.gather(*(p.notifier.deliver_pending() for p in pods))
        if all(r.delivered_at is not None for r in await outbox(pods[0])):
            return
    left = [r for r in await outbox(pods[0]) if not r.delivered_at]
    raise AssertionError(f"not delivered: {left}")


def texts(messages: list[dict[str, Any]]) -> list[str]:
    return [str(m["text"]) for m in messages]


def replies(slack: FakeSlack, channel: str, root_text: str) -> list[list[str]]:
    """The replies under each root of ``channel`` whose text has ``root_text``."""
    return [texts(m["replies"]) for m in slack.messages(channel) if root_text in m["text"]]


async def card_thread(pod: Pod, slack: FakeSlack, dep_id: int) -> list[str]:
    """The replies under the deployment's status card, as Slack has them."""
    async with pod.sessions() as session:
        dep = await session.get(Deployment, dep_id)
    assert dep is not None and dep.card_ts
    [card] = [c for c in slack.messages(DEPLOYS) if c["ts"] == dep.card_ts]
    return texts(card["replies"])


def approval_texts(thread: list[str]) -> list[str]:
    return [t for t in thread if "approv" in t.lower()]


async def test_two_replicas_post_every_message_exactly_once_in_order(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    a, b = await pods("pod-a"), await pods("pod-b")
    deps = [await add_deployment(a, clock, n) for n in range(3)]
    alert = await add_alert(a, clock)
    for batch in range(3):  # more rows arrive while the replicas deliver
        await queue(a, clock, deps, alert, batch)
        await asyncio.gather(a.notifier.deliver_pending(), b.notifier.deliver_pending())
    await until_delivered(a, b)

    cards = slack.messages(DEPLOYS)
    assert len(cards) == 3  # one status card per deployment
    for dep_id in deps:
        thread = await card_thread(a, slack, dep_id)
        assert [t for t in thread if "reply" in t] == [
            f"#{dep_id} reply {batch}.{n}" for batch in range(3) for n in range(REPLIES)]
        assert len(approval_texts(thread)) == 1  # one approval request, edited since
        assert thread.index(approval_texts(thread)[0]) == 3  # after reply 0.2, in order
    assert len(slack.messages(APPROVALS)) == 3  # and one copy each in the approvals channel
    [root] = slack.messages(ALERTS)  # one alert thread
    assert texts(root["replies"]) == [f"alert reply {batch}.{n}" for batch in range(3)
                                      for n in range(REPLIES)]
    rows = await outbox(a)
    assert all(r.last_error is None and r.attempts == 0 for r in rows)
    assert {r.claimed_by for r in rows} <= {"pod-a/1", "pod-b/1"}


async def posted(slack: FakeSlack, text: str) -> bool:
    return any(text in str(c.params.get("text", "")) for c in slack.calls_to("chat.postMessage"))


async def die_after(pod: Pod, slack: FakeSlack, text: str) -> None:
    """``pod`` delivers until Slack has accepted the post naming ``text``, then dies
    there: nothing after it recorded, its claim left in the rows."""
    pod.client.hang_after = text
    dying = asyncio.get_running_loop().create_task(pod.notifier.deliver_pending())
    await eventually(lambda: posted(slack, text))
    await asyncio.sleep(0.05)
    dying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dying


async def test_a_replica_that_dies_holding_a_claim_is_taken_over_after_the_lease(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    """It died once Slack had the card and a first reply: the other replica edits that
    card (no second one) and posts the rest; the reply in flight is posted again (at
    least once: nothing in Slack's answer was recorded)."""
    a, b = await pods("pod-a"), await pods("pod-b")
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    await die_after(a, slack, f"#{dep_id} reply 0.0")
    held = [r.text for r in await outbox(a)
            if r.claimed_by == "pod-a/1" and not r.delivered_at]
    assert f"#{dep_id} reply 0.0" in held

    await b.notifier.deliver_pending()
    assert not any(r.claimed_by == "pod-b/1" for r in await outbox(b) if r.deployment_id)
    clock.advance(seconds=LEASE.total_seconds() + 1)
    await until_delivered(b)

    [card] = slack.messages(DEPLOYS)  # one status card, edited by the other replica
    thread = [t for t in texts(card["replies"]) if "reply" in t]
    assert thread == [f"#{dep_id} reply 0.0", *(f"#{dep_id} reply 0.{n}"
                                               for n in range(REPLIES))]
    assert len(approval_texts(texts(card["replies"]))) == 1
    assert len(slack.messages(APPROVALS)) == 1
    assert len(slack.messages(ALERTS)) == 1


async def test_an_alert_root_posted_by_a_replica_that_died_is_not_posted_again(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    """Its ts is recorded as soon as Slack gives it, not with the thread's last reply.
    (Cancelled, the pass records the replies it had posted; the one Slack was answering
    is posted again: at least once.)"""
    a, b = await pods("pod-a"), await pods("pod-b")
    alert = await add_alert(a, clock)
    await queue(a, clock, [], alert, 0)
    await die_after(a, slack, "alert reply 0.1")

    clock.advance(seconds=LEASE.total_seconds() + 1)
    await until_delivered(b)

    [root] = slack.messages(ALERTS)
    assert [t for t in texts(root["replies"]) if t.startswith("alert reply")] == [
        "alert reply 0.0", "alert reply 0.1", *(f"alert reply 0.{n}" for n in range(1, REPLIES))]
    async with b.sessions() as session:
        thread = await session.get(AlertThread, alert)
    assert thread is not None and thread.root_ts == root["ts"]


async def test_a_slow_delivery_keeps_its_claim(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    """A replica still waiting for Slack (a rate limit, say) renews its lease over
    several lease periods: the other one leaves its threads alone."""
    a, b = await pods("pod-a"), await pods("pod-b")
    for pod in (a, b):  # long enough that a loaded machine's stalls never let it lapse
        pod.notifier.claims.lease = timedelta(seconds=1.2)
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    a.client.hold = asyncio.Event()
    slow = asyncio.get_running_loop().create_task(a.notifier.deliver_pending())
    await asyncio.sleep(3.0)  # more than two leases, renewed meanwhile

    await b.notifier.deliver_pending()
    assert slack.calls == []  # b posted nothing: a holds both threads
    a.client.hold.set()
    await slow
    await until_delivered(a, b)
    [card] = slack.messages(DEPLOYS)
    assert [t for t in texts(card["replies"]) if "reply" in t] == [
        f"#{dep_id} reply 0.{n}" for n in range(REPLIES)]
    assert len(slack.messages(ALERTS)) == 1


async def test_a_failed_post_backs_off_on_every_replica_and_the_later_replies_wait(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    a, b = await pods("pod-a"), await pods("pod-b")
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    await a.notifier.deliver_pending()  # the card and reply 0.0 go out
    async with a.sessions() as session:
        session.add(Outbox(deployment_id=dep_id, kind="thread", created_at=clock(),
                           text=f"#{dep_id} reply 1.0"))
        session.add(Outbox(deployment_id=dep_id, kind="thread", created_at=clock(),
                           text=f"#{dep_id} reply 1.1"))
        await session.commit()
    slack.fail_next("chat.postMessage", error="internal_error")
    await a.notifier.deliver_pending()  # reply 1.0 fails: backing off 2 s
    failed = [r for r in await outbox(a) if r.attempts]
    assert [(r.text, r.claimed_by, r.claim_until) for r in failed] == [
        (f"#{dep_id} reply 1.0", None, None)]

    await b.notifier.deliver_pending()  # due on neither replica, and 1.1 waits behind it
    [card] = slack.messages(DEPLOYS)
    assert f"#{dep_id} reply 1.1" not in texts(card["replies"])
    clock.advance(seconds=3)
    await until_delivered(b)
    [card] = slack.messages(DEPLOYS)
    assert [t for t in texts(card["replies"]) if "reply 1" in t] == [
        f"#{dep_id} reply 1.0", f"#{dep_id} reply 1.1"]


async def test_a_restarted_replica_takes_its_dead_process_claims_back_at_once(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    """Its state directory's lock says the earlier process is dead: no lease to wait."""
    a = await pods("pod-a")
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    await die_after(a, slack, f"#{dep_id} reply 0.2")

    restarted = await pods("pod-a")
    restarted.notifier.owner = "pod-a/2"
    await release_dead_leases(restarted.sessions, WriterQueue(""), "pod-a", "pod-a/2")
    await until_delivered(restarted, rounds=1)
    [card] = slack.messages(DEPLOYS)
    assert len([t for t in texts(card["replies"]) if "reply" in t]) == REPLIES + 1


async def test_only_a_threads_oldest_undelivered_row_can_be_claimed(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock) -> None:
    """A replica whose list is stale (it missed the first rows) cannot post a later
    reply before an earlier one: the database refuses the claim."""
    a, b = await pods("pod-a"), await pods("pod-b")
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    rows = [r for r in await outbox(a) if r.deployment_id == dep_id]
    assert (await a.notifier.claims.claim(rows[2:])).rows == []
    won = await a.notifier.claims.claim(rows)
    assert [r.id for r in won.rows] == [r.id for r in rows] and not won.taken_over
    assert (await b.notifier.claims.claim(rows)).rows == []  # held by pod-a
    assert (await b.notifier.claims.claim(rows[1:])).rows == []
    # A rescan that found the whole thread delivered meanwhile claims nothing, quietly.
    assert (await b.notifier.claims.claim([])).rows == []


async def test_two_running_bots_post_a_deploys_thread_once(
        replica, tmp_path: Path, quiet: FakeSlack) -> None:  # noqa: F811
    """Two bots on one PostgreSQL (test_replicas' pods), both delivering the outbox: one
    card per deployment, each reply once, one approval request. Both look at the outbox
    every few milliseconds (as if busy pods polled at once), not only the one that wrote."""
    config = make_config(tmp_path)
    first, second = await replica(config, "pod-a"), await replica(config, "pod-b")

    async def kick_both() -> None:
        while True:
            first.bot.notifier.kick()
            second.bot.notifier.kick()
            await asyncio.sleep(0.005)

    kicker = asyncio.get_running_loop().create_task(kick_both())
    await first.driver.command("api dev v1.4.2")
    await second.driver.command("web production v2.0.0")  # waits for its approval

    async def settled() -> list[Deployment] | None:
        async with second.bot.sessions() as session:
            deps = list((await session.exec(select(Deployment).order_by(
                col(Deployment.id)))).all())
            left = (await session.exec(select(Outbox.id).where(
                col(Outbox.delivered_at).is_(None)))).all()
        done = len(deps) == 2 and deps[0].finished_at and deps[1].approval_ts
        return deps if done and not left else None

    try:
        api, web = await eventually(settled, timeout=30)
    finally:
        kicker.cancel()
    assert api.state == "succeeded", api.detail
    async with first.bot.sessions() as session:
        rows = (await session.exec(select(Outbox).where(col(Outbox.kind) == "thread"))).all()
    for dep, channel in ((api, "#deploys-api"), (web, "#deploys-web")):
        [card] = quiet.messages(channel)  # one status card
        thread = texts(card["replies"])
        assert len([t for t in thread if "Approval needed" not in t]) == len(
            [r for r in rows if r.deployment_id == dep.id]), thread  # each reply once
        assert len(approval_texts(thread)) == (dep is web)


async def test_a_stopping_replica_hands_its_threads_back_at_once(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack) -> None:
    """SIGTERM: its passes cancelled, the other replica need not wait a lease out."""
    a, b = await pods("pod-a"), await pods("pod-b")
    [dep_id] = [await add_deployment(a, clock, 0)]
    alert = await add_alert(a, clock)
    await queue(a, clock, [dep_id], alert, 0)
    await die_after(a, slack, f"#{dep_id} reply 0.1")
    await a.notifier.claims.hand_back()

    await until_delivered(b, rounds=1)  # no clock advance: no lease to wait out
    assert len(slack.messages(DEPLOYS)) == 1
    assert [t for t in await card_thread(b, slack, dep_id) if "reply" in t] == [
        f"#{dep_id} reply 0.0", f"#{dep_id} reply 0.1",
        *(f"#{dep_id} reply 0.{n}" for n in range(1, REPLIES))]


async def test_a_stopping_replica_records_the_post_slack_is_answering(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack,
        caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while Slack answers a post: the thread gets a moment to record it, so no
    replica posts it again and the hand-back is not blocked by a half-done write."""
    a, b = await pods("pod-a"), await pods("pod-b")
    dep_id = await add_deployment(a, clock, 0)
    async with a.sessions() as session:
        session.add(Outbox(deployment_id=dep_id, kind="card", created_at=clock()))
        await session.commit()
    a.client.answered_late = asyncio.Event()
    running = asyncio.get_running_loop().create_task(a.notifier.run_forever())
    await a.client.answered_late.wait()
    running.cancel()  # what stopping the bot does
    with pytest.raises(asyncio.CancelledError):
        await running
    await a.notifier.claims.hand_back()

    [row] = await outbox(a)
    assert row.delivered_at is not None
    await until_delivered(b, rounds=1)
    assert len(slack.messages(DEPLOYS)) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_row_another_replica_holds_in_the_middle_of_the_list_stops_the_claim(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock) -> None:
    """Claimed rows are a prefix of the thread: a later row someone else holds (a row
    whose transaction committed late, say) makes the whole claim wait, all or nothing."""
    a = await pods("pod-a")
    [dep_id] = [await add_deployment(a, clock, 0)]
    await queue(a, clock, [dep_id], await add_alert(a, clock), 0)
    rows = [r for r in await outbox(a) if r.deployment_id == dep_id]
    async with a.sessions() as session:
        middle = await session.get(Outbox, rows[3].id)
        assert middle is not None
        middle.claimed_by, middle.claim_until = "pod-b/1", clock() + LEASE
        session.add(middle)
        await session.commit()
    assert (await a.notifier.claims.claim(rows)).rows == []
    assert not [r for r in await outbox(a) if r.claimed_by == "pod-a/1"]  # rolled back


async def stopped_while_backing_off(notifier: Notifier) -> Backoffs:
    """Run ``notifier`` until a post of it waits to retry, then stop it as the bot does."""
    running = asyncio.get_running_loop().create_task(notifier.run_forever())
    backoffs: Backoffs = notifier.client.backoffs  # type: ignore[attr-defined]
    await eventually(lambda: asyncio.sleep(0, bool(backoffs.tasks)))
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(running, 30)  # a bound on a hang, not a measure of speed
    return backoffs


async def test_a_stopping_replica_does_not_wait_out_a_rate_limit(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock, slack: FakeSlack,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while a post waits out Slack's Retry-After: nothing is in flight, so the pod
    stops at once instead of after its whole grace period, and the other replica posts it,
    once. (The grace is made endless: waiting for it would hang the test.)"""
    monkeypatch.setattr(notifier_module, "STOP_GRACE_SECONDS", 3600)
    a, b = await pods("pod-a"), await pods("pod-b")
    a.notifier.client = build_web_client("xoxb-test", slack.base_url)  # slack_sdk's retries
    dep_id = await add_deployment(a, clock, 0)
    async with a.sessions() as session:
        session.add(Outbox(deployment_id=dep_id, kind="card", created_at=clock()))
        await session.commit()
    slack.fail_next("chat.postMessage", error="ratelimited", retry_after=600)
    backoffs = await stopped_while_backing_off(a.notifier)
    await a.notifier.claims.hand_back()

    await until_delivered(b, rounds=1)
    assert len(slack.messages(DEPLOYS)) == 1
    assert not backoffs.tasks


async def test_an_alert_reply_posted_before_a_stop_during_a_rate_limit_is_recorded(
        pods: Callable[[str], Awaitable[Pod]], clock: FakeClock) -> None:
    """An alert thread's pass records its posts at its end. SIGTERM while its next reply
    waits out Retry-After ends the pass at once: what it had posted is recorded first, so
    the replica taking over does not post it again."""
    a = await pods("pod-a")
    alert = await add_alert(a, clock)
    async with a.sessions() as session:
        session.add(Outbox(alert_thread_id=alert, kind="alert_root", created_at=clock()))
        for n in range(2):
            session.add(Outbox(alert_thread_id=alert, kind="alert_reply", created_at=clock(),
                               text=f"alert reply {n}"))
        await session.commit()
    # Two posts go through (the root and the first reply); the next waits ~1,000 s.
    async with FakeSlack(post_burst=2, post_rate_per_channel=0.001) as limited:
        limited.add_channel(ALERTS)
        a.notifier.client = build_web_client("xoxb-test", limited.base_url)
        await stopped_while_backing_off(a.notifier)
    delivered = {r.kind + (r.text or ""): r.delivered_at is not None for r in await outbox(a)}
    assert delivered == {"alert_root": True, "alert_replyalert reply 0": True,
                         "alert_replyalert reply 1": False}
