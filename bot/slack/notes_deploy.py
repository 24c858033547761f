"""The words for a deployment's request, approvals, build and deploy (its thread)."""

from __future__ import annotations

from bot.engine import facts as f
from bot.mrkdwn import count, escape
from bot.slack.words import Note, deploy, renders


@renders(f.LatestVersion)
def latest_version(x: f.LatestVersion) -> Note:
    return Note(f":label: No version given: the latest build is `{x.version}`.")


@renders(f.MoreApprovalsNeeded)
def more_approvals_needed(x: f.MoreApprovalsNeeded) -> Note:
    return Note(f":+1: <@{x.by}> approved ({x.received} of {x.required}). Waiting for more "
                "approvals.")


@renders(f.Approved)
def approved(x: f.Approved) -> Note:
    return Note(f":white_check_mark: <@{x.by}> approved ({x.received} of {x.required}). "
                f"Deploying `{x.version}` to {x.env} now.")


@renders(f.Rejected)
def rejected(x: f.Rejected) -> Note:
    why = escape(x.reason) if x.reason else "no reason given"
    return Note(f":no_entry: <@{x.by}> rejected this deployment: {why}. Nothing was deployed. "
                f"<@{x.requester}> can address it and ask again.")


@renders(f.RequestExpired)
def request_expired(x: f.RequestExpired) -> Note:
    return Note(f":alarm_clock: <@{x.requester}> your request expired without enough approvals "
                f"({x.received} of {x.required}). Nothing was deployed. Ask again with "
                f"{deploy(x.service, x.env, x.version)}.")


@renders(f.ExpiredUnhandled)
def expired_unhandled(x: f.ExpiredUnhandled) -> Note:
    return Note(f":alarm_clock: *Request expired:* Shipbot could not handle it while it waited "
                f"for approval ({x.reason}; gave up after {x.attempts} attempts). Nothing was "
                "deployed, and approving it now does nothing. Fix the cause, then ask again "
                f"with {deploy(x.service, x.env, x.version)}.")


@renders(f.StoppedBeforeStart)
def stopped_before_start(x: f.StoppedBeforeStart) -> Note:
    return Note(f"{x.why} This deployment was stopped before anything ran.")


@renders(f.Cancelled)
def cancelled(x: f.Cancelled) -> Note:
    return Note(f":heavy_multiplication_x: Cancelled by <@{x.by}>. Nothing was changed on "
                f"{x.env}.")


@renders(f.BuildStarted)
def build_started(x: f.BuildStarted) -> Note:
    return Note(f":hammer_and_wrench: Build started for `{x.version}`.")


@renders(f.BuildRunning)
def build_running(x: f.BuildRunning) -> Note:
    return Note(":link: The build is running.", link=x.link)


@renders(f.ChecksRefused)
def checks_refused(x: f.ChecksRefused) -> Note:
    what_to_do = ("fix what failed and push a new version" if x.failed
                  else "wait for the pending checks to pass")
    return Note(f":no_entry: *{x.reason}* Nothing was deployed and {x.env} was not touched. "
                f"To deploy, {what_to_do}, then {deploy(x.service, x.env, escape(x.version))} "
                "again.", link=x.link)


@renders(f.BuildReused)
def build_reused(x: f.BuildReused) -> Note:
    made = f" (`{escape(x.artifact.replace('`', ''))}`)" if x.artifact else ""
    return Note(f":package: Using the build of `{x.version}` from {x.built_in} "
                f"(#{x.built_by}){made}: not built again.")


@renders(f.ManyCommits)
def many_commits(x: f.ManyCommits) -> Note:
    change = (f"{x.service} `{x.previous_version}` → `{x.version}` ships "
              f"{count(x.commits, 'commit')}, more than")
    if x.overridden_by:
        return Note(f":warning: {change} {x.env}'s max_commits ({x.limit}): "
                    f"<@{x.overridden_by}> overrode the limit.")
    return Note(f":no_entry: {change} {x.env} takes at once ({x.limit}). Nothing was deployed. "
                "Deploy a version in between, or run "
                f"{deploy(x.service, x.env, x.version, '--allow-many-commits')} (announced and "
                "audited).")


@renders(f.BuildPassed)
def build_passed(x: f.BuildPassed) -> Note:
    return Note(f":white_check_mark: Build passed ({escape(x.detail)}).", x.output, x.link)


@renders(f.Deploying)
def deploying(x: f.Deploying) -> Note:
    if x.rollback:
        return Note(f":rewind: Rolling {x.env} back to `{x.version}`.")
    return Note(f":rocket: Deploying `{x.version}` to {x.env}.")


@renders(f.AwaitingHealth)
def awaiting_health(x: f.AwaitingHealth) -> Note:
    return Note(f":stethoscope: `{x.version}` is deployed; waiting for {x.env} to report it "
                "healthy.")


@renders(f.Healthy)
def healthy(x: f.Healthy) -> Note:
    return Note(f":green_heart: {x.env} reports `{x.version}` healthy.", x.output)


@renders(f.RunFailed)
def run_failed(x: f.RunFailed) -> Note:
    if x.timed_out:
        reason = f"The {x.step} did not finish in time and was stopped."
    else:
        reason = f"{x.step.capitalize()} failed: {escape(x.detail)}."
    if x.during_deploy:
        before = (f"it ran `{x.previous_version}` before" if x.previous_version
                  else "Shipbot had deployed nothing there before")
        where = (f"The deploy may have changed {x.env} partly ({before}): check the output "
                 "below, then fix forward or roll back.")
    elif x.previous_version:
        where = f"{x.env} was not touched and still runs `{x.previous_version}`."
    else:
        where = f"{x.env} was not touched; it has nothing deployed by Shipbot yet."
    return Note(f":x: *{reason}* {where} To retry: {deploy(x.service, x.env, x.version)}.",
                x.output, x.link)


@renders(f.TakenOver)
def taken_over(x: f.TakenOver) -> Note:
    return Note(f":arrows_counterclockwise: The Shipbot replica running the {x.what} "
                f"(`{x.gone}`) stopped. Replica `{x.replica}` took over and starts the {x.what} "
                "again; nothing for you to do.")


@renders(f.RateLimited)
def rate_limited(x: f.RateLimited) -> Note:
    return Note(f":hourglass_flowing_sand: {x.reason}")


@renders(f.GaveUp)
def gave_up(x: f.GaveUp) -> Note:
    return Note(f":x: *Stopped while {x.state}:* {x.reason}. Nothing more will run. Fix the "
                f"cause, then {deploy(x.service, x.env, x.version)} again.")


