"""The words for a rollout after the deploy: traffic steps, checks, the canary's verdicts
(with their sparklines), pauses and rollbacks (a deployment's thread)."""

from __future__ import annotations

from bot.engine import facts as f
from bot.mrkdwn import code_or, count, escape
from bot.slack.charts import sparkline
from bot.slack.words import Note, deploy, hhmm, icon, renders, result_lines, took


@renders(f.Deployed)
def deployed(x: f.Deployed) -> Note:
    what = f"to {x.env}" if x.rolling else "beside the current one, with no traffic yet"
    return Note(f":package: `{x.version}` is deployed {what}.", x.output)


@renders(f.Live)
def live(x: f.Live) -> Note:
    return Note(f":white_check_mark: *{x.service} {x.version} is live on {x.env}* — total "
                f"{took(x.seconds)}.", x.output)


@renders(f.RollbackWindow)
def rollback_window(x: f.RollbackWindow) -> Note:
    old = code_or(x.previous_version, "the previous version")
    return Note(f":hourglass_flowing_sand: {old} stays deployed beside `{x.version}` for the "
                f"rollback window, until {hhmm(x.until)} ({took(x.seconds)}): press *Roll back* "
                "on the card to switch all traffic back to it at once. Then it is retired.")


@renders(f.TrafficChange)
def traffic_change(x: f.TrafficChange) -> Note:
    if x.step == "weight":
        what = (f"Switching all traffic to `{x.version}`" if x.blue_green
                else f"Shifting {x.weight}% of traffic to `{x.version}`")
    elif x.blue_green:
        old = code_or(x.previous_version, "the previous version")
        what = f"Retiring {old}: `{x.version}` is the only version now"
    else:
        what = f"Promoting `{x.version}`: it becomes the stable version"
    return Note(f":arrow_right: {what}.")


@renders(f.ChecksPassed)
def checks_passed(x: f.ChecksPassed) -> Note:
    return Note(f"*Post-deploy checks passed*\n{result_lines(x.results)}")


@renders(f.NoAnalysis)
def no_analysis(x: f.NoAnalysis) -> Note:
    return Note(f":hourglass: {x.weight}% for {took(x.seconds)}: no analysis configured; "
                "continuing.")


@renders(f.CheckReport)
def check_report(x: f.CheckReport) -> Note:
    label = "preview" if x.blue_green and not x.weight else f"{x.weight}% canary"
    lines = [f"{icon(r.outcome)} {escape(r.text)}  `{sparkline(r.points)}`" for r in x.results]
    return Note(f"*Step {label} — {x.verdict}* (score {x.score:.0f})\n" + "\n".join(lines))


def _without_verdict(explanation: str) -> str:
    """A judge's sentence without its closing "— inconclusive" (the note says it once)."""
    return explanation.replace(" — inconclusive: ", ": ").removesuffix(" — inconclusive")


def undecided(a: f.Undecided) -> str:
    """Why the analysis paused, saying "inconclusive" once."""
    if a.marginal:
        head = f"a marginal score of {a.score:g}/100 (a pass needs {a.pass_score:g})"
    else:
        names = ", ".join(escape(n) for n in a.undecided)
        head = (f"{len(a.undecided)} of {count(a.metrics, 'metric')} without a verdict yet "
                f"({names}), score so far {a.score:g}/100")
    reasons = "; ".join(escape(_without_verdict(r)) for r in a.reasons)
    return (f"The canary analysis was inconclusive: {head}."
            + (f" {reasons}." if reasons else "") + " Decide with Promote or Roll back.")


@renders(f.Paused)
def paused(x: f.Paused) -> Note:
    why = undecided(x.analysis) if x.analysis else x.why
    return Note(f":double_vertical_bar: *Paused.* {why} With no decision by {hhmm(x.deadline)}, "
                f"Shipbot rolls back to keep {x.env} on a known version. Decide with the "
                "buttons on the card at the top of this thread, or type "
                f"{deploy('promote', x.service, x.env)} or {deploy('abort', x.service, x.env)}.")


@renders(f.TargetWentOn)
def target_went_on(x: f.TargetWentOn) -> Note:
    return Note(":fast_forward: The deploy went on past its wait without Shipbot (promoted "
                f"outside it): {escape(x.position)}. Shipbot follows it again instead of "
                "rolling back.")


@renders(f.Pressed)
def pressed(x: f.Pressed) -> Note:
    return Note(f":arrow_forward: <@{x.by}> pressed {x.action.capitalize()}.")


@renders(f.StopFailed)
def stop_failed(x: f.StopFailed) -> Note:
    return Note(f":warning: Could not stop the traffic change still running ({escape(x.error)}); "
                "check that it did not finish after the rollback.")


@renders(f.RollingBack)
def rolling_back(x: f.RollingBack) -> Note:
    lines = f"\n{result_lines(x.results)}" if x.results else ""
    return Note(f":rewind: *Rolling back {x.service} on {x.env}: {x.why}.*{lines}", x.output)


@renders(f.RolledBack)
def rolled_back(x: f.RolledBack) -> Note:
    before = code_or(x.previous_version, "the previous version")
    return Note(f":leftwards_arrow_with_hook: Rolled back in {took(x.seconds)}: {x.env} is back "
                f"on {before}. Fix the cause, then deploy again with "
                f"{deploy(x.service, x.env, x.version)}.", x.output)


@renders(f.RollbackFailed)
def rollback_failed(x: f.RollbackFailed) -> Note:
    again = deploy(x.service, x.env, x.previous_version or "<version>", "--hotfix")
    return Note(f":rotating_light: *Rollback failed* ({x.reason}). {x.env} may be serving "
                f"`{x.version}` partly. Act now: fix by hand, or deploy the previous version "
                f"with {again}.", x.output)


@renders(f.NothingToGoBackTo)
def nothing_to_go_back_to(x: f.NothingToGoBackTo) -> Note:
    return Note(f":rotating_light: *Cannot roll back:* Shipbot knows no earlier version of "
                f"{x.service} on {x.env}, which now runs `{x.version}`. Fix forward with "
                f"{deploy(x.service, x.env, '<version>')}, or restore it by hand.")


@renders(f.RollbackKept)
def rollback_kept(x: f.RollbackKept) -> Note:
    bad = code_or(x.previous_version, "the version it replaced")
    fix = deploy(x.service, x.env, "<fixed version>", "--hotfix")
    what = f"The rollback to `{x.version}` " + (
        "did not pass its checks" if x.results else "stopped before its checks passed")
    results = f"\n{result_lines(x.results)}\n" if x.results else " "
    return Note(f":rotating_light: *{what}* ({x.why}).{results}{x.env} now runs `{x.version}`, "
                "not known to be healthy. Shipbot does not undo a rollback: that would put back "
                f"{bad}, the version it replaced. A human decides now: fix forward with {fix}, "
                "or deploy another known-good version the same way.", x.output)


@renders(f.ShadowVerdict)
def shadow_verdict(x: f.ShadowVerdict) -> Note:
    return Note(f":ghost: *Shadow:* {escape(x.metric)} would have rolled back the {x.weight}% "
                f"canary; it is in shadow mode, so nothing was done. {escape(x.text)}")


def _minutes(seconds: float) -> str:
    """Round figures: a forecast from traffic so far is no more precise than that."""
    if seconds < 60:
        return f"{max(round(seconds), 1)} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h" if seconds < 36_000 else "more than 10 h"


@renders(f.SparseTraffic)
def sparse_traffic(x: f.SparseTraffic) -> Note:
    parts = []
    if x.metrics:
        names = ", ".join(escape(m) for m in x.metrics)
        rate = f"{x.per_second:.2g} canary req/s"
        parts.append(f"Not enough traffic to decide at {x.weight}% ({names}): {x.seen:,} "
                     f"canary requests judged, {x.needed:,} more needed, at {rate} "
                     f"~{_minutes(x.wait_seconds)}.")
        if x.detect_seconds is not None:
            parts.append(f"At this traffic a 5× rise of the error (or slow-request) rate "
                         f"would show within ~{_minutes(x.detect_seconds)}.")
    if x.warming:
        until = f" until {hhmm(x.warm_until)}" if x.warm_until else ""
        parts.append(f"Still warming up at {x.weight}%{until}: "
                     f"{', '.join(escape(m) for m in x.warming)}.")
    parts.append({
        "extend": f"No regression so far: extending the step (up to "
                  f"{_minutes(x.extension_seconds)}) instead of pausing.",
        "advance": "No regression so far: moving to the next step, where the evidence "
                   "carries over and more traffic reaches the canary.",
        "pause": "That is longer than the step may be extended: pausing.",
    }[x.action])
    return Note(":turtle: " + " ".join(parts))


@renders(f.TargetAnalysis)
def target_analysis(x: f.TargetAnalysis) -> Note:
    said = f" — {escape(x.message)}" if x.message else ""
    lines = f"\n{result_lines(x.results)}" if x.results else ""
    return Note(f"{icon(x.outcome)} *Analysis {escape(x.name)}: {escape(x.phase)}*{said}{lines}")


@renders(f.TargetPosition)
def target_position(x: f.TargetPosition) -> Note:
    return Note(f":round_pushpin: {escape(x.position)}")
