"""Block Kit rendering: pure functions from our data to Slack JSON.

Every builder keeps within Slack's limits (section text 3,000, header 150, button
text 75) so a long reason or a noisy build log can never make a post fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol

from bot.clock import as_utc, human_duration
from bot.engine.lifecycle import Event, enabled_events
from bot.engine.machine import IN_FLIGHT, STATE_TEXT, State
from bot.mrkdwn import code_or, count, escape
from bot.store.models import Deployment
from commands.actions import ActionId
from integrations.base import Comparison

Blocks = list[dict[str, Any]]


class RunLike(Protocol):
    """What a status line shows of a deployment (a whole row, or a few of its columns)."""

    @property
    def id(self) -> int | None: ...
    @property
    def version(self) -> str | None: ...
    @property
    def requester(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...


SECTION_LIMIT = 3000
HEADER_LIMIT = 150
REJECT_CALLBACK = "deploy_reject_reason"

STATE_EMOJI: dict[State, str] = {
    State.REQUESTED: ":inbox_tray:",
    State.AWAITING_APPROVAL: ":raised_hand:",
    State.QUEUED: ":hourglass_flowing_sand:",
    State.BUILDING: ":hammer_and_wrench:",
    State.DEPLOYING: ":rocket:",
    State.VERIFYING: ":mag:",
    State.PROMOTING: ":arrow_double_up:",
    State.PAUSED: ":double_vertical_bar:",
    State.SUCCEEDED: ":white_check_mark:",
    State.REJECTED: ":no_entry:",
    State.EXPIRED: ":alarm_clock:",
    State.CANCELLED: ":heavy_multiplication_x:",
    State.FAILED: ":x:",
    State.ROLLING_BACK: ":rewind:",
    State.ROLLED_BACK: ":leftwards_arrow_with_hook:",
    State.ROLLBACK_FAILED: ":rotating_light:",
}


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": clip(text, SECTION_LIMIT)}}


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": clip(text, 3000)}]}


def code_block(text: str, limit: int = 2500) -> dict[str, Any]:
    body = text.replace("```", "'''")
    if len(body) > limit:
        body = "…" + body[-limit:]
    return section(f"```{body or '(no output)'}```")


def button(label: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    b: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": clip(label, 75)},
        "action_id": action_id,
        "value": value,
    }
    if style:
        b["style"] = style
    return b


def state_label(state: str) -> str:
    return f"{STATE_EMOJI[State(state)]} {STATE_TEXT[State(state)]}"


def version_text(dep: Deployment) -> str:
    version = f"`{dep.version}`" if dep.version else "_latest build (resolving)_"
    if dep.previous_version and dep.previous_version != dep.version:
        version += f" (was `{dep.previous_version}`)"
    return version


def elapsed(dep: RunLike, now: datetime) -> str:
    end = as_utc(dep.finished_at) if dep.finished_at else now
    took = human_duration((end - as_utc(dep.created_at)).total_seconds())
    return f"took {took}" if dep.finished_at else f"{took} so far"


def next_step(dep: Deployment, events: Sequence[Event] = ()) -> str:
    """The card's 'what happens next / what you can do' line; the buttons' part comes
    from the events that apply now (the same list the buttons are drawn from)."""
    state, target = State(dep.state), f"{dep.service} {dep.env}"
    again = f"`/deploy {dep.service} {dep.env} {dep.version or '<version>'}`"
    running = code_or(dep.previous_version, "its previous version")
    can = _controls_sentence(state, events)
    return {
        State.REQUESTED: "Next: checks, then the build. You can cancel until the deploy starts.",
        State.QUEUED: "Next: the build starts. You can cancel until the deploy starts.",
        State.BUILDING: f"Next: deploy to {dep.env} when the build passes. You can still cancel.",
        State.DEPLOYING: f"Next: {target} reports the result. Progress is in the thread.",
        State.VERIFYING: f"Next: the rollout moves on when this step passes.{can}",
        State.PAUSED: f"Paused: {dep.paused_reason or ''}{can}",
        State.PROMOTING: f"Next: {running} is retired; to go back later, `/rollback {target}`."
        if Event.ABORT not in events else f"Next: the new version becomes stable.{can}",
        State.ROLLING_BACK: "Rolling back to the previous version; the thread shows why.",
        State.ROLLED_BACK: f"{dep.env} is back on {running}. The thread shows what failed.",
        State.ROLLBACK_FAILED: f"The rollback failed: {dep.env} needs a human now.",
        State.AWAITING_APPROVAL: "Next: an approver presses Approve in the thread; the "
        "requester cannot approve their own deployment, but can cancel it.",
        State.REJECTED: f"Nothing was deployed. Address the reason, then run {again} again.",
        State.EXPIRED: f"Nothing was deployed. Run {again} to ask again.",
        State.SUCCEEDED: f"{target} now runs `{dep.version}`.",
        State.FAILED: f"Nothing more will run; {_left_as_it_was(dep)} "
        f"See the thread, fix, then run {again} again.",
        State.CANCELLED: f"Nothing was changed on {dep.env}. Run {again} to try again.",
    }.get(state, "Progress is in the thread.")


def _left_as_it_was(dep: Deployment) -> str:
    if dep.previous_version:
        return f"{dep.env} still runs `{dep.previous_version}`."
    return f"Shipbot had deployed nothing to {dep.env} before this."


def _controls_sentence(state: State, events: Sequence[Event]) -> str:
    """' Promote skips ahead, Pause holds it, Abort rolls back.' for the rollout buttons."""
    what = {
        Event.PROMOTE: "Promote skips this wait" if state is not State.PAUSED
        else "Promote goes on to the next step",
        Event.PAUSE: "Pause holds it",
        Event.RESUME: "Resume runs the current step again",
        Event.ABORT: f"{_abort_label(state)} rolls back",
    }
    said = [what[e] for e in events if e in what]
    return f" {', '.join(said)}." if said else ""


def _abort_label(state: State) -> str:
    return "Abort" if state is State.VERIFYING else "Roll back"


KIND_TITLE = {"rollback": "⏪ ROLLBACK ", "redeploy": "🔁 REDEPLOY "}


def status_card(dep: Deployment, now: datetime, progress: str | None = None,
                events: Sequence[Event] | None = None) -> tuple[str, Blocks]:
    """The root message of a deployment, re-rendered on every state change. ``events``:
    what people can do now (``lifecycle.enabled_events`` with the rollout's stage)."""
    events = enabled_events(dep) if events is None else events
    label = state_label(dep.state)
    if State(dep.state) is State.AWAITING_APPROVAL:
        label += f" ({dep.approvals_received} of {dep.approvals_required})"
    title = f"{'🚑 HOTFIX ' if dep.hotfix else ''}{KIND_TITLE.get(dep.kind, '')}" \
            f"{dep.service} → {dep.env}"
    fields = [
        f"*Version*\n{version_text(dep)}",
        f"*State*\n{label}",
        f"*Requested by*\n<@{dep.requester}>",
        f"*Time*\n{elapsed(dep, now)}",
    ]
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields]},
    ]
    if progress:
        blocks.append(section(f"*Rollout*\n{progress}"))
    if dep.reason:
        blocks.append(section(f"*Reason*\n{escape(dep.reason)}"))
    if State(dep.state) in IN_FLIGHT and (shipping := changes_text(dep)):
        blocks.append(section(shipping))
    if dep.detail and State(dep.state) not in IN_FLIGHT:
        blocks.append(section(f"*Outcome*\n{dep.detail}"))  # composed by us, parts escaped
    blocks.append(context(f"{next_step(dep, events)}  ·  Deployment #{dep.id}"))
    buttons = card_buttons(dep, events)
    if buttons:
        blocks.append({"type": "actions", "block_id": f"deployment:{dep.id}",
                       "elements": buttons})
    text = f"{title} {dep.version or ''}: {label}".replace("  ", " ")
    return text, blocks


CARD_BUTTONS: dict[Event, tuple[str, ActionId, str | None]] = {  # label, id, style
    Event.CANCEL: ("Cancel", ActionId.CANCEL, "danger"),
    Event.PROMOTE: ("Promote", ActionId.PROMOTE, "primary"),
    Event.PAUSE: ("Pause", ActionId.PAUSE, None),
    Event.RESUME: ("Resume", ActionId.RESUME, None),
    Event.ABORT: ("Abort", ActionId.ABORT, "danger"),
}  # Approve and Reject are on the approval request, not on the card


def card_buttons(dep: Deployment, events: Sequence[Event] | None = None
                 ) -> list[dict[str, Any]]:
    """A button for each event that applies now, and only those."""
    state, value = State(dep.state), str(dep.id)
    shown = []
    for event in enabled_events(dep) if events is None else events:
        if event in CARD_BUTTONS:
            label, action_id, style = CARD_BUTTONS[event]
            label = _abort_label(state) if event is Event.ABORT else label
            shown.append(button(label, action_id, value, style=style))
    return shown


CHANGES_SHOWN = 20


def changes_text(dep: Deployment) -> str:
    """The commits a deployment ships, newest last: up to 20, then how many more."""
    if not dep.changes:
        return ""
    found = Comparison.model_validate_json(dep.changes)
    link = f" (<{found.url}|compare>)" if found.url else ""
    lines = [f"*Changes* — {count(found.total, 'commit')}{link}"]
    for c in found.commits[:CHANGES_SHOWN]:
        pr = f" (#{c.pr})" if c.pr else ""
        lines.append(f"• `{escape(c.sha[:7])}` {escape(clip(c.title, 90))}{pr} — "
                     f"{escape(clip(c.author, 40))}")
    if found.total > len(lines) - 1:
        lines.append(f"and {found.total - (len(lines) - 1)} more")
    return clip("\n".join(lines), SECTION_LIMIT)


def thread_note(text: str, detail: str | None = None, link: str | None = None) -> Blocks:
    """One step in the deployment thread: a sentence, optional output, optional link."""
    blocks: Blocks = [section(text)]
    if link:
        blocks.append(context(f"<{link}|Open the run>"))
    if detail:
        blocks.append(code_block(detail))
    return blocks


def approval_request(
    dep: Deployment, approvals: Sequence[tuple[str, datetime]], approvers: str, now: datetime,
    thread_link: str | None = None,
) -> tuple[str, Blocks]:
    """The approval request: what changes, who asks, why; buttons while it is open."""
    hotfix = " :ambulance: *HOTFIX*" if dep.hotfix else ""
    change = (f"`{dep.previous_version}` → `{dep.version}`" if dep.previous_version else
              f"`{dep.version}` (its first deploy there)")
    text = (f":raised_hand: *Approval needed*{hotfix} — <@{dep.requester}> wants to deploy "
            f"*{dep.service}* {change} to *{dep.env}*.")
    expires = as_utc(dep.approval_expires_at) if dep.approval_expires_at else now
    fields = [f"*Reason*\n{escape(dep.reason or '—')}",
              f"*Approvals*\n{dep.approvals_received} of {dep.approvals_required}",
              f"*Who can approve*\n{approvers}", f"*Expires*\n{expires:%H:%M} UTC"]
    blocks: Blocks = [section(text),
                      {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, 2000)}
                                                     for f in fields]}]
    if shipping := changes_text(dep):
        blocks.append(section(shipping))
    links = [f"<{dep.ci_url}|CI run>"] if dep.ci_url else []
    if thread_link:
        links.append(f"<{thread_link}|deployment thread>")
    if links:
        blocks.append(context(" · ".join(links)))
    state = State(dep.state)
    who = ", ".join(f"<@{u}>" for u, _ in approvals)
    if state is State.AWAITING_APPROVAL:
        blocks.append({"type": "actions", "block_id": f"approval:{dep.id}", "elements": [
            button("Approve", ActionId.APPROVE, str(dep.id), style="primary"),
            button("Reject", ActionId.REJECT, str(dep.id), style="danger")]})
    elif approvals and state not in (State.REJECTED, State.EXPIRED, State.CANCELLED):
        last = max(at for _, at in approvals)
        blocks.append(section(f":white_check_mark: Approved by {who} at {as_utc(last):%H:%M} UTC"))
    else:
        blocks.append(section(f"{state_label(dep.state)}: {dep.detail}"))
    return f"Approval needed: {dep.service} {dep.version} to {dep.env}", blocks


def reject_modal(dep_id: int) -> dict[str, Any]:
    """The Reject reason form; the deployment id travels in private_metadata."""
    return {
        "type": "modal", "callback_id": REJECT_CALLBACK, "private_metadata": str(dep_id),
        "title": {"type": "plain_text", "text": "Reject deployment"},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Back"},
        "blocks": [{
            "type": "input", "block_id": "reason",
            "label": {"type": "plain_text", "text": f"Why reject deployment #{dep_id}?"},
            "element": {"type": "plain_text_input", "action_id": "reason", "multiline": True,
                        "max_length": 500},
        }],
    }
