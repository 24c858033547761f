"""The lifecycle table: what people can do when, and the card that shows it.

The rules come from the product (cancel only before anything changes, Promote only skips a
wait, no Abort once the old version is being retired, one button per choice at a manual
gate); the card's buttons and its "what you can do" line must agree with them.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.engine.lifecycle import LIFECYCLE, Blocked, Event, enabled_events, normalise, refusal
from bot.engine.machine import IN_FLIGHT, TERMINAL, State
from bot.engine.plan import Stage
from bot.slack.blocks import card_buttons, next_step, status_card
from bot.store.models import Deployment
from commands.actions import ACTIONS, ActionId

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
STAGES: list[Stage | None] = [None, Stage("checks"), Stage("weight", 20), Stage("bake", 20),
                              Stage("gate", 20), Stage("window", 100), Stage("promote", 100)]


def dep(state: State, *, running: str | None = None) -> Deployment:
    return Deployment(id=7, request_key="k", service="api", env="production", version="v2",
                      previous_version="v1", requester="U0ALICE", state=state,
                      channel="C0DEPLOYS", created_at=NOW, updated_at=NOW,
                      action_run_id=running, strategy="canary")


def test_cancel_only_before_the_target_is_touched() -> None:
    before = {State.REQUESTED, State.AWAITING_APPROVAL, State.QUEUED, State.BUILDING}
    for state in State:
        blocked = refusal(dep(state), Event.CANCEL)
        if state in before:
            assert blocked is None, state
        elif state in TERMINAL:
            assert blocked is Blocked.ENDED, state
        else:
            assert blocked is Blocked.NOT_NOW, state


def test_approve_and_reject_only_while_waiting_for_approval() -> None:
    for event in (Event.APPROVE, Event.REJECT):
        open_to = [s for s in State if refusal(dep(s), event) is None]
        assert open_to == [State.AWAITING_APPROVAL]
        assert LIFECYCLE[event].role == "approve"


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.kind if s else "none")
def test_promote_only_skips_a_wait(stage: Stage | None) -> None:
    waiting = stage is not None and stage.kind in ("bake", "gate", "window")
    for state in (State.VERIFYING, State.PAUSED, State.PROMOTING):
        blocked = refusal(dep(state), Event.PROMOTE, stage)
        assert blocked is (None if waiting else Blocked.NOT_WAITING), (state, stage)


def test_no_abort_once_the_old_version_is_being_retired() -> None:
    retiring = dep(State.PROMOTING, running="run-9")
    assert refusal(retiring, Event.ABORT, Stage("promote", 100)) is Blocked.RETIRING
    assert refusal(dep(State.PROMOTING), Event.ABORT, Stage("promote", 100)) is None
    assert refusal(retiring, Event.ABORT, Stage("window", 100)) is None
    assert LIFECYCLE[Event.ABORT].role == "rollback"


def test_a_manual_gate_offers_promote_not_both() -> None:
    gate = Stage("gate", 20)
    assert enabled_events(dep(State.PAUSED), gate) == [Event.PROMOTE, Event.ABORT]
    assert normalise(Event.RESUME, gate) is Event.PROMOTE
    assert normalise(Event.RESUME, Stage("bake", 20)) is Event.RESUME
    assert enabled_events(dep(State.PAUSED), Stage("bake", 20)) == [
        Event.PROMOTE, Event.RESUME, Event.ABORT]


def test_pause_only_while_verifying() -> None:
    assert [s for s in State if refusal(dep(s), Event.PAUSE) is None] == [State.VERIFYING]
    assert [s for s in State if refusal(dep(s), Event.RESUME) is None] == [State.PAUSED]


def test_ended_deployments_offer_nothing() -> None:
    for state in TERMINAL:
        for stage in STAGES:
            assert enabled_events(dep(state), stage) == []
            assert card_buttons(dep(state), enabled_events(dep(state), stage)) == []


LABEL_WORD = {"Cancel": "cancel", "Promote": "Promote", "Pause": "Pause", "Resume": "Resume",
              "Abort": "Abort", "Roll back": "Roll back"}


@pytest.mark.parametrize("state", sorted(IN_FLIGHT), ids=str)
def test_the_card_offers_exactly_what_applies_and_says_what_each_button_does(
        state: State) -> None:
    for stage in STAGES:
        for running in (None, "run-9"):
            d = dep(state, running=running)
            events = enabled_events(d, stage)
            _, blocks = status_card(d, NOW, events=events)
            shown = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
            ids = [ActionId(b["action_id"]) for b in shown]
            card_events = [ACTIONS[i].name for i in ids]
            assert card_events == [e.value for e in events
                                   if e not in (Event.APPROVE, Event.REJECT)], (state, stage)
            line = next_step(d, events)
            for button in shown:  # the line explains every button it shows
                assert LABEL_WORD[button["text"]["text"]] in line, (state, stage, line)


def test_a_failed_first_deploy_does_not_claim_a_previous_version_runs() -> None:
    first = dep(State.FAILED)
    first.previous_version = None
    assert "Shipbot had deployed nothing to production before this." in next_step(first)
    assert "production still runs `v1`." in next_step(dep(State.FAILED))
