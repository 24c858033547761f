"""The engine's facts put into words by the Slack layer: every kind renders within Slack's
limits with untrusted text escaped, rows from older or newer processes are still
delivered, and the words item 11 fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlmodel import col, select

from bot.engine import facts
from bot.engine.facts import FACTS, UNTRUSTED, Fact, Line, MetricLine, Undecided
from bot.slack import notes
from bot.slack.words import RENDERERS
from bot.store.models import Outbox
from tests.conftest import eventually, make_config, outbox_delivered

HOSTILE = "<!here> & <@U0MALLORY> <https://evil.example|click>"
AT = datetime(2026, 12, 5, 9, 30, tzinfo=UTC)
LINES = (Line(outcome="pass", text=f"smoke: {HOSTILE}"), Line(outcome="fail", text=HOSTILE))
WHERE = {"service": "api", "env": "staging", "version": "v1.4.2", "previous_version": "v1.4.1"}
UNDECIDED = Undecided(score=50, pass_score=90, metrics=2, undecided=(HOSTILE,),
                      reasons=(f"{HOSTILE} — inconclusive: no baseline data",))
UNDO = {"rollback": True, "id": 7}

SAMPLES: list[Fact] = [
    facts.LatestVersion(version="v1.4.2"),
    facts.MoreApprovalsNeeded(by="U0BOB", received=1, required=2),
    facts.Approved(by="U0BOB", received=2, required=2, version="v1.4.2", env="production"),
    facts.Rejected(by="U0BOB", reason=HOSTILE, requester="U0ALICE"),
    facts.RequestExpired(requester="U0ALICE", received=0, required=1, service="api",
                         env="production", version="v1.4.2"),
    facts.ExpiredUnhandled(reason="database locked", attempts=5, service="api", env="prod",
                           version=None),
    facts.StoppedBeforeStart(why=":lock: staging is locked by <@U0BOB>: release."),
    facts.Cancelled(by="U0BOB", env="staging"),
    facts.BuildStarted(version="v1.4.2"),
    facts.BuildRunning(link="https://ci.example.com/run/1"),
    facts.RateLimited(reason="GitHub asks to wait 30s (rate limit)", wait_seconds=30),
    facts.ChecksRefused(reason="`v1.4.2` has not passed its required checks: `test` failed "
                        "(failure).", failed=True, service="api", env="production",
                        version="v1.4.2", link="https://github.com/acme/api/runs/1"),
    facts.BuildReused(version="v1.4.2", built_in="staging", built_by=5, artifact=HOSTILE),
    facts.ManyCommits(service="api", previous_version="v1.4.1", version="v1.4.2",
                      env="production", commits=31, limit=20),
    facts.ManyCommits(service="api", previous_version="v1.4.1", version="v1.4.2",
                      env="production", commits=31, limit=20, overridden_by="U0BOB"),
    facts.BuildPassed(detail=HOSTILE, output="[build] ok\n" * 400,
                      link="https://ci.example.com/run/1"),
    facts.Deploying(version="v1.4.2", env="staging", rollback=True),
    facts.AwaitingHealth(version="v1.4.2", env="staging"),
    facts.Healthy(version="v1.4.2", env="staging", output="200 OK"),
    facts.RunFailed(step="deploy", detail=HOSTILE, during_deploy=True, output="boom",
                    link="https://ci.example.com/run/2", **WHERE),
    facts.TakenOver(what="build", gone="host-a", replica="host-b"),
    facts.GaveUp(state="building", reason="internal error (KeyError)", service="api",
                 env="staging", version="v1.4.2"),
    facts.Deployed(version="v1.4.2", env="staging", rolling=False, output="done"),
    facts.Live(service="api", version="v1.4.2", env="staging", seconds=72, output="ok"),
    facts.RollbackWindow(version="v1.4.2", previous_version=None, until=AT, seconds=900),
    facts.TrafficChange(step="weight", blue_green=False, weight=25, version="v1.4.2"),
    facts.TargetAnalysis(name=f"api-6cf78c66c5-2-1 {HOSTILE}", phase=f"Failed {HOSTILE}",
                         outcome="fail", message=f'Metric "success-rate" {HOSTILE}',
                         results=(facts.Line(outcome="fail", text="success-rate: Failed, "
                                             f"measured [0.412] {HOSTILE}"),)),
    facts.TargetPosition(position=f"Argo step 4/8, canary weight 25 %, Paused {HOSTILE}"),
    facts.ChecksPassed(results=LINES),
    facts.NoAnalysis(weight=50, seconds=300),
    facts.CheckReport(weight=25, blue_green=False, verdict="pass", score=100, results=(
        MetricLine(outcome="pass", text=HOSTILE, points=(0.1, None, 0.3, 0.2)),)),
    facts.Paused(why="Manual gate: press Promote to continue.", analysis=UNDECIDED,
                 deadline=AT, service="api", env="staging"),
    facts.Pressed(by="U0BOB", action="promote"),
    facts.TargetWentOn(position=HOSTILE),
    facts.StopFailed(error=HOSTILE),
    facts.RollingBack(service="api", env="staging", why="post-deploy checks failed",
                      results=LINES, output="abort"),
    facts.RolledBack(seconds=40, output="", **WHERE),
    facts.RollbackFailed(reason="exit 1", output="no", **WHERE),
    facts.NothingToGoBackTo(service="api", env="staging", version="v1.4.2"),
    facts.RollbackKept(why="checks failed", results=LINES, output="x", **WHERE),
    facts.ShadowVerdict(weight=5, metric=HOSTILE, text=HOSTILE),
    facts.SparseTraffic(action="extend", weight=5, metrics=(HOSTILE,), seen=120, needed=880,
                        per_second=0.1, wait_seconds=8800, detect_seconds=660,
                        extension_seconds=900),
    facts.Locked(by="U0BOB", env="production", service="api", until=AT, reason=HOSTILE),
    facts.Unlocked(by="U0BOB", env="production"),
    facts.FreezeStarted(environments=("production", "staging"), name=HOSTILE, by="U0BOB",
                        reason=HOSTILE, until=AT),
    facts.FreezeEnded(environments=("production",), name=HOSTILE),
    facts.UndoNeedsApproval(channel="C0123ABCD9", **UNDO),
    facts.UndoDeploying(version="v1.4.1", env="production", **UNDO),
    facts.UndoIncomplete(state="rollback_failed", detail="The rollback failed: exit 2.", **UNDO),
    facts.UndoDone(service="api", env="production", version="v1.4.1", seconds=65,
                   recovery_seconds=300, **UNDO),
    facts.AutoRollbackStarted(alert=HOSTILE, after_seconds=120, suspect_version="v1.4.2",
                              suspect_id=6, service="api", version="v1.4.1", rollback_id=7),
    facts.RollbackStarted(by="U0BOB", rollback_id=7, env="production", suspect_version="v1.4.2",
                          suspect_id=6, version="v1.4.1"),
    facts.RollingBackForAlert(version="v1.4.1", rollback_id=7, alert=HOSTILE,
                              link="https://slack.com/archives/C1/p1"),
    facts.StartedFromAlert(alert=HOSTILE),
    facts.Redeploying(by="U0BOB", version="v1.4.2", id=8),
    facts.AlertResolved(seconds=600, at=AT),
    facts.AlertDismissed(by="U0BOB"),
]


def all_fact_classes() -> set[type[Fact]]:
    found, todo = set(), [Fact]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.kind:
                found.add(sub)
    return found


def untrusted_values(fact: Any) -> list[str]:
    """The untrusted text a fact holds, nested lines and analyses included."""
    values: list[str] = []
    for name, field in type(fact).model_fields.items():
        value = getattr(fact, name)
        if UNTRUSTED in field.metadata and isinstance(value, str):
            values.append(value)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, (Line, Undecided)):
                values += untrusted_values(item)
        if name in ("undecided", "reasons"):
            values += list(value)
    return values


def texts_of(blocks: list[dict[str, Any]]) -> list[str]:
    out = []
    for block in blocks:
        if block["type"] == "section":
            out.append(block["text"]["text"])
        elif block["type"] == "context":
            out += [e["text"] for e in block["elements"]]
    return out


def test_every_fact_kind_has_a_sample_and_a_renderer() -> None:
    classes = all_fact_classes()
    assert set(FACTS.values()) == classes
    assert {type(s) for s in SAMPLES} == classes
    assert classes <= set(RENDERERS)


@pytest.mark.parametrize("fact", SAMPLES, ids=lambda f: f.kind)
def test_every_fact_renders_within_slack_limits_with_untrusted_text_escaped(fact: Fact) -> None:
    again = facts.load(fact.kind, fact.payload())  # what the notifier reads back
    assert again == fact
    text, blocks = notes.render(again)
    assert text.strip() and "None" not in text
    assert 1 <= len(blocks) <= 50
    for block in blocks:
        assert block["type"] in ("section", "context")
    shown = texts_of(blocks)
    assert all(0 < len(t) <= 3000 for t in shown)
    prose = [t for t in shown if not t.startswith("```")]  # a program's output is code
    assert shown[0] == text if len(text) <= 3000 else shown[0].endswith("…")
    for value in untrusted_values(fact):
        assert HOSTILE in value  # the sample exercises every untrusted field
    for t in [text, *prose]:
        assert "<!here>" not in t and "<@U0MALLORY>" not in t and "<https://evil" not in t


def test_sparse_traffic_says_how_long_it_will_take_and_what_happens_meanwhile() -> None:
    fact = facts.SparseTraffic(action="extend", weight=5, metrics=("error rate",), seen=120,
                               needed=180, per_second=0.5, wait_seconds=360,
                               detect_seconds=660, extension_seconds=900)
    text, _ = notes.render(fact)
    assert text == (
        ":turtle: Not enough traffic to decide at 5% (error rate): 120 canary requests judged, "
        "180 more needed, at 0.5 canary req/s ~6 min. At this traffic a 5× rise of the error "
        "(or slow-request) rate would show within ~11 min. No regression so far: extending "
        "the step (up to 15 min) instead of pausing.")
    text, _ = notes.render(fact.model_copy(update={"action": "advance",
                                                   "detect_seconds": None}))
    assert "within" not in text and text.endswith(
        "moving to the next step, where the evidence carries over and more traffic reaches "
        "the canary.")
    text, _ = notes.render(fact.model_copy(update={"action": "pause"}))
    assert text.endswith("That is longer than the step may be extended: pausing.")


def test_sparse_traffic_says_which_metrics_still_warm_up() -> None:
    text, _ = notes.render(facts.SparseTraffic(
        action="advance", weight=5, metrics=(), warming=("latency",), warm_until=AT))
    assert text == (f":turtle: Still warming up at 5% until {AT:%H:%M} UTC: latency. No "
                    "regression so far: moving to the next step, where the evidence carries "
                    "over and more traffic reaches the canary.")


def test_shadow_verdict_says_nothing_was_done() -> None:
    text, _ = notes.render(facts.ShadowVerdict(weight=25, metric="p99", text="p99 40 ms vs 20 ms"))
    assert text == (":ghost: *Shadow:* p99 would have rolled back the 25% canary; it is in "
                    "shadow mode, so nothing was done. p99 40 ms vs 20 ms")


def test_long_untrusted_text_is_clipped_to_the_section_limit() -> None:
    text, blocks = notes.render(facts.Rejected(by="U1", reason="x" * 5000, requester="U2"))
    assert len(text) > 5000 and len(blocks[0]["text"]["text"]) == 3000


def test_known_facts_render_as_before() -> None:
    """Spot checks that the words did not change on the way out of the engine."""
    assert notes.render(facts.BuildPassed(detail="exited with code 0", output="ok",
                                          link="https://ci/1")) == (
        ":white_check_mark: Build passed (exited with code 0).",
        [{"type": "section", "text": {"type": "mrkdwn",
                                      "text": ":white_check_mark: Build passed (exited with "
                                              "code 0)."}},
         {"type": "context",
          "elements": [{"type": "mrkdwn", "text": "<https://ci/1|Open the run>"}]},
         {"type": "section", "text": {"type": "mrkdwn", "text": "```ok```"}}])
    assert notes.note_of(facts.Locked(by="U0BOB", env="production", service="api",
                                      reason="release <today>")).text == (
        ":lock: <@U0BOB> locked api on production: release &lt;today&gt;. New deployments are "
        "refused until `/deploy unlock production api`.")
    assert notes.note_of(facts.CheckReport(
        weight=0, blue_green=True, verdict="pass", score=99.6, results=(MetricLine(
            outcome="pass", text="error rate 0.1% vs 0.1%", points=(1.0, 2.0, 3.0)),))).text == (
        "*Step preview — pass* (score 100)\n:white_check_mark: error rate 0.1% vs 0.1%  `▁▅█`")


def test_an_inconclusive_pause_says_inconclusive_once() -> None:
    """Item 11: it used to say "inconclusive: INCONCLUSIVE: … — inconclusive" and "metric(s)"."""
    text = notes.note_of(facts.Paused(why="(the card's)", deadline=AT, service="api",
                                      env="staging", analysis=Undecided(
        score=0, pass_score=90, metrics=2, undecided=("error rate", "latency"),
        reasons=("error rate: no canary traffic yet — inconclusive",
                 "latency 3 vs n/a — inconclusive: no baseline data to compare with")))).text
    assert text == (
        ":double_vertical_bar: *Paused.* The canary analysis was inconclusive: 2 of 2 metrics "
        "without a verdict yet (error rate, latency), score so far 0/100. error rate: no canary "
        "traffic yet; latency 3 vs n/a: no baseline data to compare with. Decide with Promote "
        "or Roll back. With no decision by 09:30 UTC, Shipbot rolls back to keep staging on a "
        "known version. Decide with the buttons on the card at the top of this thread, or type "
        "`/deploy promote api staging` or `/deploy abort api staging`.")
    assert text.lower().count("inconclusive") == 1
    marginal = notes.note_of(facts.Paused(why="", deadline=AT, service="api", env="staging",
                                          analysis=Undecided(score=80, pass_score=90,
                                                             marginal=True, metrics=1))).text
    assert "inconclusive: a marginal score of 80/100 (a pass needs 90). Decide" in marginal


@pytest.mark.parametrize(("previous", "during", "where"), [
    (None, False, "staging was not touched; it has nothing deployed by Shipbot yet."),
    ("v1", False, "staging was not touched and still runs `v1`."),
    (None, True, "The deploy may have changed staging partly (Shipbot had deployed nothing "
                 "there before): check the output below, then fix forward or roll back."),
    ("v1", True, "The deploy may have changed staging partly (it ran `v1` before): check the "
                 "output below, then fix forward or roll back."),
])
def test_a_failed_run_says_what_still_runs(previous: str | None, during: bool,
                                           where: str) -> None:
    """Item 11: "still runs its previous version" for a service that never ran anything."""
    text = notes.note_of(facts.RunFailed(step="build", detail="exit 1", during_deploy=during,
                                         service="api", env="staging", version="v2",
                                         previous_version=previous)).text
    assert text == f":x: *Build failed: exit 1.* {where} To retry: `/deploy api staging v2`."


def test_rows_from_older_and_newer_processes() -> None:
    old = Outbox(kind="thread", text="hello", blocks='[{"type": "divider"}]', created_at=AT)
    assert notes.words_of(old) == ("hello", [{"type": "divider"}])
    newer = Outbox(kind="thread", fact="from_the_future", payload='{"x": 1}', text="fallback",
                   created_at=AT)
    assert notes.words_of(newer) == ("fallback", [
        {"type": "section", "text": {"type": "mrkdwn", "text": "fallback"}}])
    reshaped = Outbox(kind="thread", fact="build_started", payload='{"ver": 2}', created_at=AT)
    with pytest.raises(notes.UnknownFact, match="build_started"):
        notes.words_of(reshaped)
    extra = Outbox(kind="thread", fact="build_started",
                   payload='{"version": "v2", "added_later": true}', created_at=AT)
    assert notes.words_of(extra)[0] == ":hammer_and_wrench: Build started for `v2`."


def test_a_failing_renderer_is_a_failed_delivery_not_a_crash(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(fact: Fact) -> Any:
        raise KeyError("bug")

    monkeypatch.setitem(RENDERERS, facts.BuildStarted, broken)
    row = Outbox(id=3, kind="thread", fact="build_started", payload='{"version": "v2"}',
                 created_at=AT)
    with pytest.raises(notes.UnknownFact,
                       match="no words for fact kind 'build_started' in outbox row 3"):
        notes.words_of(row)


async def test_unknown_facts_are_delivered_from_their_fallback_or_retried(make_bot,
                                                                          tmp_path) -> None:
    bot = await make_bot(make_config(tmp_path, announce_channel="#deploys"))
    now = bot.bot.clock()
    async with bot.bot.sessions() as session:
        for row in (
            Outbox(kind="announce", channel="#deploys", fact="from_the_future", payload="{}",
                   created_at=now),  # nothing to fall back on
            Outbox(kind="announce", channel="#deploys", fact="from_the_future", payload="{}",
                   text="A newer Shipbot wrote this.", created_at=now),
            Outbox(kind="announce", channel="#deploys", text="Written before facts.",
                   blocks=json.dumps([{"type": "section", "text": {
                       "type": "mrkdwn", "text": "Written before facts."}}]), created_at=now),
            Outbox(kind="announce", channel="#deploys", fact="unlocked",
                   payload=facts.Unlocked(by="U0BOB", env="staging").payload(), created_at=now),
        ):
            session.add(row)
        await session.commit()
    bot.bot.notifier.kick()

    async def posted() -> list[str] | None:
        texts = [m["text"] for m in bot.slack.messages("#deploys")]
        return texts if len(texts) == 3 else None

    assert await eventually(posted) == ["A newer Shipbot wrote this.", "Written before facts.",
                                        ":unlock: <@U0BOB> unlocked staging."]


    async def undelivered() -> list[Outbox] | None:  # posted first, then marked delivered
        async with bot.bot.sessions() as session:
            rows = (await session.exec(select(Outbox).where(
                col(Outbox.delivered_at).is_(None)))).all()
        return list(rows) if len(rows) == 1 else None

    [unknown] = await eventually(undelivered)
    assert unknown.attempts >= 1 and unknown.next_attempt_at is not None
    assert unknown.last_error == f"unknown fact kind 'from_the_future' in outbox row {unknown.id}"
    async with bot.bot.sessions() as session:  # a newer replica delivers it meanwhile
        fresh = await session.get(Outbox, unknown.id)
        assert fresh is not None
        fresh.delivered_at = now
        session.add(fresh)
        await session.commit()
    await outbox_delivered(bot)  # the delivery loop is still running
