"""A handler's reply as the text Slack shows: sentences as they are, views rendered."""

from __future__ import annotations

from bot.slack.blocks_queries import audit_text, guards_text, history_text, status_text
from commands.views import AuditView, HistoryView, Reply, StatusView


def reply_text(reply: Reply) -> str:
    match reply.view:
        case StatusView(slots=slots, locks=locks, freezes=freezes, now=now):
            return status_text(slots, now, guards_text(locks, freezes))
        case HistoryView(service=service, env=env, deployments=deps, now=now):
            return history_text(service, env, deps, now)
        case AuditView(service=service, env=env, events=events):
            return audit_text(service, env, events)
    return reply.text
