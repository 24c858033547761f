"""The words for announcements (locks, freeze windows) and for alert threads, with what
the deployments an alert concerns say about it in their own threads."""

from __future__ import annotations

from bot.clock import as_utc
from bot.engine import facts as f
from bot.mrkdwn import channel_mention, escape
from bot.slack.words import Note, deploy, hhmm, renders, took


def _scope(env: str, service: str | None) -> str:
    return f"{service} on {env}" if service else env


@renders(f.Locked)
def locked(x: f.Locked) -> Note:
    until = f" until {as_utc(x.until):%Y-%m-%d %H:%M} UTC" if x.until else ""
    return Note(f":lock: <@{x.by}> locked {_scope(x.env, x.service)}{until}: "
                f"{escape(x.reason)}. New deployments are refused until "
                f"{deploy('unlock', x.env, x.service)}.")


@renders(f.Unlocked)
def unlocked(x: f.Unlocked) -> Note:
    return Note(f":unlock: <@{x.by}> unlocked {_scope(x.env, x.service)}.")


@renders(f.FreezeStarted)
def freeze_started(x: f.FreezeStarted) -> Note:
    who = f" by <@{x.by}>" if x.by else ""
    window = (f"{escape(x.name)}{who}: {escape(x.reason)} "
              f"(until {as_utc(x.until):%Y-%m-%d %H:%M} UTC)")
    return Note(f":snowflake: Freeze started on {', '.join(sorted(x.environments))} — {window}. "
                "Deployments are refused until then; --hotfix remains for emergencies.")


@renders(f.FreezeEnded)
def freeze_ended(x: f.FreezeEnded) -> Note:
    return Note(f":sunny: Freeze over on {', '.join(sorted(x.environments))} "
                f"({escape(x.name)}). Deployments are open again.")


def _ref(x: f.UndoNeedsApproval | f.UndoDeploying | f.UndoIncomplete | f.UndoDone) -> str:
    return f"{'Rollback' if x.rollback else 'Redeploy'} #{x.id}"


@renders(f.UndoNeedsApproval)
def undo_needs_approval(x: f.UndoNeedsApproval) -> Note:
    return Note(f":raised_hand: {_ref(x)} needs approval first: the request is in its thread "
                f"in {channel_mention(x.channel)}.")


@renders(f.UndoDeploying)
def undo_deploying(x: f.UndoDeploying) -> Note:
    return Note(f":rewind: {_ref(x)}: putting `{x.version}` on {x.env} now.")


@renders(f.UndoIncomplete)
def undo_incomplete(x: f.UndoIncomplete) -> Note:
    return Note(f":x: *{_ref(x)} did not complete ({x.state.replace('_', ' ')})*: {x.detail}")


@renders(f.UndoDone)
def undo_done(x: f.UndoDone) -> Note:
    text = (f":white_check_mark: *{_ref(x)} done*: {x.service} {x.env} runs `{x.version}` "
            f"again (took {took(x.seconds)}).")
    if x.rollback and x.recovery_seconds is not None:
        text += (f" {took(x.recovery_seconds)} from the alert's start to the end of the "
                 "rollback.")
    return Note(text)


@renders(f.AutoRollbackStarted)
def auto_rollback_started(x: f.AutoRollbackStarted) -> Note:
    return Note(f":robot_face: *Auto-rollback*: {escape(x.alert)} fired {took(x.after_seconds)} "
                f"after `{x.suspect_version}` (deployment #{x.suspect_id}) went live, as "
                f"`auto_rollback` for {x.service} asks. Rolling back to `{x.version}` "
                f"(rollback #{x.rollback_id}). Changed your mind? Use "
                f"*Redeploy {x.suspect_version}* once it has finished.")


@renders(f.RollbackStarted)
def rollback_started(x: f.RollbackStarted) -> Note:
    return Note(f":rewind: <@{x.by}> started rollback #{x.rollback_id}: {x.env} goes back from "
                f"`{x.suspect_version}` (deployment #{x.suspect_id}) to `{x.version}`.")


def _alert_thread(link: str | None) -> str:
    return f"<{link}|alert thread>" if link else "the alert thread"


@renders(f.RollingBackForAlert)
def rolling_back_for_alert(x: f.RollingBackForAlert) -> Note:
    return Note(f":rewind: Rolling back to `{x.version}` (rollback #{x.rollback_id}) because "
                f"of *{escape(x.alert)}* — see {_alert_thread(x.link)}.")


@renders(f.StartedFromAlert)
def started_from_alert(x: f.StartedFromAlert) -> Note:
    return Note(f":rotating_light: Started from alert *{escape(x.alert)}* — see "
                f"{_alert_thread(x.link)}.")


@renders(f.Redeploying)
def redeploying(x: f.Redeploying) -> Note:
    return Note(f":arrows_counterclockwise: <@{x.by}> redeploys `{x.version}` (#{x.id}), "
                "undoing the automatic rollback.")


@renders(f.AlertResolved)
def alert_resolved(x: f.AlertResolved) -> Note:
    return Note(f":white_check_mark: Resolved after {took(x.seconds)} (at {hhmm(x.at)}).")


@renders(f.AlertDismissed)
def alert_dismissed(x: f.AlertDismissed) -> Note:
    return Note(f":thumbsup: <@{x.by}>: not caused by the deploy; no rollback offered any "
                "more.")
