"""Block Kit for alert threads: the root message and the suspect reply with its buttons.

Pure functions of stored rows. Alert text (names, annotations, labels) comes from
whoever can write alert rules, so it is always escaped, and links are shown only when
they are plain http(s) URLs that cannot break out of Slack's ``<url|label>`` syntax.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from bot.clock import as_utc, human_duration
from bot.engine.machine import TERMINAL, State
from bot.mrkdwn import escape
from bot.slack.blocks import HEADER_LIMIT, Blocks, button, clip, context, section, state_label
from bot.store.models import AlertThread, Deployment
from commands.actions import ActionId

ALERT_ROLLBACK_ACTION = ActionId.ALERT_ROLLBACK
ALERT_DISMISS_ACTION = ActionId.ALERT_DISMISS
ALERT_ACK_ACTION = ActionId.ALERT_ACK
ALERT_REDEPLOY_ACTION = ActionId.ALERT_REDEPLOY
_SAFE_URL = re.compile(r"^https?://[^\s<>|`]{1,1000}$")
_LINKS = (("generator_url", "Source"), ("runbook_url", "Runbook"),
          ("dashboard_url", "Dashboard"), ("silence_url", "Silence"))


def safe_url(url: object) -> str | None:
    return url if isinstance(url, str) and _SAFE_URL.match(url) else None


def _payload(thread: AlertThread) -> dict[str, Any]:
    data = json.loads(thread.payload or "{}")
    return data if isinstance(data, dict) else {}


def _where(thread: AlertThread) -> str:
    if thread.service is None:
        return "unmapped"
    return f"{thread.service} {thread.env}" if thread.env else f"{thread.service} (env unknown)"


def alert_root(thread: AlertThread, firing: int, now: datetime,
               labels_tried: tuple[Sequence[str], Sequence[str]] = ((), ())) -> tuple[str, Blocks]:
    """The alert's root message: what fired, where, since when; edited when it resolves."""
    data, name = _payload(thread), thread.name
    started = as_utc(thread.started_at)
    if thread.status == "resolved" and thread.resolved_at is not None:
        took = human_duration((as_utc(thread.resolved_at) - started).total_seconds())
        title, state = f"✅ Resolved after {took} — {name}", f"Resolved after {took}"
    else:
        title = f"🔥 {name} — {_where(thread)}"
        state = f"Firing ({firing} alerts)" if firing > 1 else "Firing"
    fields = [f"*Severity*\n{escape(thread.severity or 'none')}",
              f"*Started*\n{started:%Y-%m-%d %H:%M:%S} UTC",
              f"*Where*\n{escape(_where(thread))}", f"*Status*\n{state}"]
    blocks: Blocks = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(title, HEADER_LIMIT)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": clip(f, 2000)}
                                       for f in fields]},
    ]
    # Blank notes (a template that rendered to whitespace) are no text: Slack refuses a
    # section with empty text, which would keep the whole thread from being posted.
    summary = clip(str(data.get("summary") or "").strip(), 300)
    description = clip(str(data.get("description") or "").strip(), 2000)
    if summary or description:
        text = (f"*{escape(summary)}*\n" if summary else "") + escape(description)
        blocks.append(section(text.strip()))
    links = [f"<{url}|{label}>" for key, label in _LINKS if (url := safe_url(data.get(key)))]
    if links:
        blocks.append(context(" · ".join(links)))
    if thread.service is None or thread.env is None:
        blocks.append(section(_unmapped(thread, data, labels_tried)))
    if thread.acknowledged_by:
        blocks.append(context(f":eyes: Acknowledged by <@{thread.acknowledged_by}>"))
    blocks.append(context(f"{thread.source} · alert thread #{thread.id}"))
    sev = f" ({escape(thread.severity)})" if thread.severity else ""
    text = escape(title) + sev + (f": {escape(summary)}" if summary else "")
    return clip(text, 3000), blocks


def _unmapped(thread: AlertThread, data: dict[str, Any],
              tried: tuple[Sequence[str], Sequence[str]]) -> str:
    labels = data.get("labels") or {}
    shown = ", ".join(f"`{escape(str(k))}={escape(str(v))}`" for k, v in labels.items())
    what, names = ("service", tried[0]) if thread.service is None else ("environment", tried[1])
    looked = ", ".join(names) or "the configured labels"
    return clip(f":grey_question: *Unmapped*: no {what} label ({looked}) names a known "
                f"{what}, so no deployment is suspected and no rollback offered. Labels: "
                f"{shown or 'none'}. Add the label to the alert rule, or map it under "
                "`alerts:` in shipbot.yml.", 3000)


def _before(thread: AlertThread, dep: Deployment) -> str:
    gap = (as_utc(thread.started_at) - as_utc(dep.finished_at or dep.created_at)).total_seconds()
    if gap >= 0:
        return f"finished {human_duration(gap)} before the alert started"
    return f"was still finishing when the alert started ({human_duration(-gap)} earlier)"


def suspect_message(
    thread: AlertThread, suspect: Deployment | None, rollback: Deployment | None,
    redeploy: Deployment | None, window: timedelta, deployment_link: str | None = None,
) -> tuple[str, Blocks]:
    """The first reply: the deployment that most likely caused it, and what to do."""
    value, buttons = str(thread.id), []
    if thread.env is None:
        text = (f":mag: Shipbot cannot tell which environment of {thread.service} this alert is "
                "about, so it suspects no deployment and offers no rollback. If you need one: "
                f"`/rollback {thread.service} <env>`.")
    elif suspect is None:
        text = (f":mag: No deployment of {thread.service} to {thread.env} finished in the "
                f"{human_duration(window.total_seconds())} before this alert, so there is no "
                "suspect and no rollback to offer.")
    else:
        was = f" (was `{suspect.previous_version}`)" if suspect.previous_version else ""
        link = f" · <{deployment_link}|deployment thread>" if deployment_link else ""
        text = (f":mag: *Suspect deployment*: #{suspect.id} `{suspect.version}`{was} by "
                f"<@{suspect.requester}>, {_before(thread, suspect)}.{link}")
    blocks: Blocks = [section(text)]
    if rollback is not None:
        blocks.append(section(f":rewind: {state_label(rollback.state)}: rollback #{rollback.id} "
                              f"to `{rollback.version}` by <@{rollback.requester}>"
                              + (" (automatic)" if thread.auto_rollback else "") + "."))
    elif thread.dismissed_by:
        blocks.append(context(f"<@{thread.dismissed_by}>: not the deploy."))
    elif suspect is not None and thread.rollback_to:
        buttons.append(_rollback_button(thread, suspect, value))
        buttons.append(button("Not the deploy", ALERT_DISMISS_ACTION, value))
    elif suspect is not None:
        blocks.append(context(f"No earlier successful version of {thread.service} on "
                              f"{thread.env} is known, so there is nothing to roll back to."))
    if redeploy is not None:
        blocks.append(section(f":arrows_counterclockwise: {state_label(redeploy.state)}: "
                              f"redeploy #{redeploy.id} of `{redeploy.version}` by "
                              f"<@{redeploy.requester}>."))
    elif thread.auto_rollback and rollback is not None and suspect is not None \
            and State(rollback.state) in TERMINAL:
        buttons.append(button(f"Redeploy {suspect.version}", ALERT_REDEPLOY_ACTION, value))
    if not thread.acknowledged_by and thread.status == "firing":
        buttons.append(button("Acknowledge", ALERT_ACK_ACTION, value))
    if buttons:
        blocks.append({"type": "actions", "block_id": f"alert:{thread.id}", "elements": buttons})
    return clip(text, 3000), blocks


def _rollback_button(thread: AlertThread, suspect: Deployment, value: str) -> dict[str, Any]:
    b = button(f"Roll back to {thread.rollback_to}", ALERT_ROLLBACK_ACTION, value,
               style="danger")
    b["confirm"] = {
        "title": {"type": "plain_text", "text": "Roll back?"},
        "text": {"type": "mrkdwn", "text": clip(
            f"{thread.env} goes back from `{suspect.version}` to `{thread.rollback_to}`.", 300)},
        "confirm": {"type": "plain_text", "text": "Roll back"},
        "deny": {"type": "plain_text", "text": "Cancel"},
    }
    return b
