"""Canary, blue-green and rolling: the stages after the new version is deployed.

Each call advances the deployment's current stage (``plan.plan``) at most one step:
start a traffic change and wait for it, run checks, judge the canary at each check
interval, stop at gates, and roll back through the target when the judge fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from bot.clock import as_utc, human_duration
from bot.config import ShipbotConfig
from bot.config_delivery import StrategyConfig
from bot.engine import bake_rules, facts, machine, target_reports
from bot.engine.analysis import AnalysisState, Verdict, carry_over, judge
from bot.engine.analysis.model import Judgement
from bot.engine.lifecycle import Event, enabled_events
from bot.engine.machine import State
from bot.engine.measure import measure
from bot.engine.outbox import note
from bot.engine.plan import Stage, plan, progress_bar
from bot.engine.providers import job
from bot.engine.rollout_stops import pause, roll_back
from bot.mrkdwn import escape
from bot.store.models import Deployment, Outbox
from integrations.base import RunState
from integrations.http_check import run_check

if TYPE_CHECKING:
    from bot.engine.context import StepContext


def strategy_of(ctx: StepContext, dep: Deployment) -> StrategyConfig:
    return ctx.policy.config.strategy_for(dep.service, dep.env, dep.strategy)


def stages_of(ctx: StepContext, dep: Deployment) -> list[Stage]:
    return plan(strategy_of(ctx, dep))


def stage_now(config: ShipbotConfig, dep: Deployment) -> Stage | None:
    """The rollout step the deployment is at (None before its first, after its last)."""
    stages = plan(config.strategy_for(dep.service, dep.env, dep.strategy))
    return stages[dep.stage] if dep.stage < len(stages) else None


def enabled_now(config: ShipbotConfig, dep: Deployment) -> list[Event]:
    """What people can do to ``dep`` now: the card's buttons."""
    return enabled_events(dep, stage_now(config, dep))


def progress(config: ShipbotConfig, dep: Deployment) -> str | None:
    """The card's progress bar for canary and blue-green rollouts, and where the target's
    own rollout stands when it reports that (``target_reports``)."""
    where = target_reports.position_of(dep)
    if dep.strategy == "rolling":
        return where
    stages = plan(config.strategy_for(dep.service, dep.env, dep.strategy))
    index = min(dep.stage, len(stages) - 1)
    bar = progress_bar(stages, index) if stages else ""
    text = f"{dep.strategy}: {bar}" if bar else dep.strategy
    if stages and stages[index].kind == "window" and State(dep.state) is State.PROMOTING:
        text += f" · rollback window until {window_end(dep, stages[index]):%H:%M} UTC"
    return f"{text}\n{where}" if where else text


def window_end(dep: Deployment, stage: Stage) -> datetime:
    assert dep.stage_started_at is not None
    return as_utc(dep.stage_started_at) + (stage.duration or timedelta())


async def begin(ctx: StepContext, dep: Deployment, output: str = "") -> None:
    """The new version is deployed: walk the plan, or finish if there is none."""
    if not stages_of(ctx, dep):
        await finish(ctx, dep, output)
        return
    note(ctx.session, dep, facts.Deployed(version=dep.version, env=dep.env,
                                          rolling=dep.strategy == "rolling", output=output),
         now=ctx.now)
    dep.stage, dep.stage_started_at, dep.action_run_id = 0, ctx.now, None
    machine.transition(ctx.session, dep, State.VERIFYING, actor="shipbot", now=ctx.now,
                       detail=f"{dep.strategy} rollout")
    dep.next_action_at = ctx.now


async def finish(ctx: StepContext, dep: Deployment, output: str = "") -> None:
    seconds = (ctx.now - as_utc(dep.created_at)).total_seconds()
    await machine.succeed(ctx.session, dep, actor="shipbot", now=ctx.now,
                          detail=f"{dep.env} runs {dep.version} (took {human_duration(seconds)}).")
    note(ctx.session, dep, facts.Live(service=dep.service, version=dep.version, env=dep.env,
                                      seconds=seconds, output=output), now=ctx.now)
    if json.loads(dep.analysis_log or "[]"):
        ctx.session.add(Outbox(deployment_id=dep.id, kind="chart", created_at=ctx.now))


async def advance_stage(ctx: StepContext, dep: Deployment, stages: list[Stage],
                        by: str = "shipbot") -> None:
    """Move to the next stage (or finish); the card re-renders its progress bar."""
    dep.stage += 1
    dep.stage_started_at, dep.action_run_id, dep.last_check_at = ctx.now, None, None
    if dep.analysis_state:  # sequential evidence pools across the steps
        dep.analysis_state = carry_over(AnalysisState.model_validate_json(
            dep.analysis_state)).model_dump_json()
    dep.next_action_at = ctx.now
    if dep.stage >= len(stages):
        await finish(ctx, dep)
        return
    target = State.PROMOTING if stages[dep.stage].kind in ("window", "promote") else \
        State.VERIFYING
    machine.transition(ctx.session, dep, target, actor=by, now=ctx.now,
                       detail=stages[dep.stage].label())
    stage = stages[dep.stage]
    if stage.kind == "window":
        note(ctx.session, dep, facts.RollbackWindow(
            version=dep.version, previous_version=dep.previous_version,
            until=window_end(dep, stage),
            seconds=(stage.duration or timedelta()).total_seconds()), now=ctx.now)


async def step_rollout(ctx: StepContext, dep: Deployment) -> None:
    """VERIFYING and PROMOTING: run the current stage."""
    stages = stages_of(ctx, dep)
    if dep.stage >= len(stages):
        await finish(ctx, dep)
        return
    stage = stages[dep.stage]
    if stage.kind in ("weight", "promote"):
        await _action(ctx, dep, stage, stages)
    elif stage.kind == "checks":
        await _checks(ctx, dep, stages)
    elif stage.kind == "bake":
        await _bake(ctx, dep, stage, stages)
    elif stage.kind == "gate":
        pause(ctx, dep, "Manual gate: press Promote to continue.")
    elif ctx.now >= as_utc(dep.stage_started_at or ctx.now) + (stage.duration or timedelta()):
        await advance_stage(ctx, dep, stages)  # the rollback window passed
    else:
        dep.next_action_at = as_utc(dep.stage_started_at or ctx.now) + (
            stage.duration or timedelta())


async def _action(ctx: StepContext, dep: Deployment, stage: Stage, stages: list[Stage]) -> None:
    target = ctx.providers.target
    spec = job(dep, f"{stage.kind}-{stage.weight}")
    if dep.action_run_id is None:
        if stage.kind == "weight":
            dep.action_run_id = await ctx.providers.need_traffic().set_weight(
                spec, stage.weight or 0)
        else:
            dep.action_run_id = await ctx.providers.need_traffic().promote(spec)
        note(ctx.session, dep, facts.TrafficChange(
            step="weight" if stage.kind == "weight" else "promote",
            blue_green=dep.strategy == "blue-green", weight=stage.weight or 0,
            version=dep.version, previous_version=dep.previous_version), now=ctx.now)
        if stage.kind == "promote":  # the card stops offering Roll back (see card_buttons)
            ctx.session.add(Outbox(deployment_id=dep.id, kind="card", created_at=ctx.now))
        ctx.later(dep)
        return
    status = await target.poll(dep.action_run_id)
    if status.state is RunState.RUNNING:
        target_reports.show_position(ctx, dep, status)
        ctx.later(dep)
        return
    target_reports.report(ctx, dep, status)
    if status.state is RunState.FAILED:
        dep.action_run_id = None  # it ended: nothing left to stop
        await roll_back(ctx, dep, f"{stage.label()} failed: {escape(status.detail)}",
                        detail=status.output_tail)
        return
    await advance_stage(ctx, dep, stages)
    if status.position and State(dep.state) in (State.VERIFYING, State.PROMOTING):
        note(ctx.session, dep, facts.TargetPosition(position=status.position), now=ctx.now)
        target_reports.show_position(ctx, dep, status)


async def _checks(ctx: StepContext, dep: Deployment, stages: list[Stage]) -> None:
    assert dep.version is not None
    results = [await run_check(check, service=dep.service, env=dep.env, version=dep.version,
                               options=ctx.http)
               for check in strategy_of(ctx, dep).checks]
    lines = tuple(facts.Line(outcome="pass" if r.passed else "fail", text=f"{r.name}: {r.detail}")
                  for r in results)
    if all(r.passed for r in results):
        note(ctx.session, dep, facts.ChecksPassed(results=lines), now=ctx.now)
        await advance_stage(ctx, dep, stages)
    else:
        await roll_back(ctx, dep, "post-deploy checks failed", lines=lines)


async def _bake(ctx: StepContext, dep: Deployment, stage: Stage, stages: list[Stage]) -> None:
    strategy = strategy_of(ctx, dep)
    started = as_utc(dep.stage_started_at or ctx.now)
    ends = started + (stage.duration or timedelta())
    analysis = strategy.analysis
    if analysis is None or ctx.metrics is None:
        if ctx.now >= ends:
            note(ctx.session, dep, facts.NoAnalysis(
                weight=stage.weight or 0,
                seconds=(stage.duration or timedelta()).total_seconds()), now=ctx.now)
            await advance_stage(ctx, dep, stages)
        else:
            dep.next_action_at = ends
        return
    due = as_utc(dep.last_check_at) + analysis.check_every if dep.last_check_at else \
        started + min(analysis.check_every, stage.duration or analysis.check_every)
    if ctx.now < min(due, ends):
        dep.next_action_at = min(due, ends)
        return
    state = AnalysisState.model_validate_json(dep.analysis_state) if dep.analysis_state \
        else AnalysisState(canary_since=started)
    warm = bake_rules.warmup(analysis, as_utc(state.canary_since or started), stages)
    series = await measure(ctx.metrics, analysis, dep, started, ctx.now, warmup=warm)
    verdict, new_state = judge(analysis.metrics, series, state,
                               pass_score=analysis.pass_score,
                               marginal_score=analysis.marginal_score, mode=analysis.mode)
    dep.analysis_state, dep.last_check_at = new_state.model_dump_json(), ctx.now
    for shadow in bake_rules.shadow_fails(dep, verdict, stage.weight or 0):
        note(ctx.session, dep, shadow, now=ctx.now)
    _log(dep, stage, verdict, series, ctx.now)
    sparse = None if ctx.now < ends else bake_rules.sparse(
        analysis, verdict, series, stages, dep.stage, now=ctx.now,
        since=started, ends=ends, warm=warm)
    if verdict.verdict is Verdict.FAIL:
        why = verdict.summary.split(" — ")[0].removeprefix("FAIL: ")  # e.g. score 50/100 ...
        await roll_back(ctx, dep, f"canary analysis failed at {stage.weight}% ({why})",
                        lines=_explain(verdict))
    elif sparse is not None and sparse.action != "pause":
        _sparse(ctx, dep, sparse, ends, analysis.check_every)
        if sparse.action == "advance":
            _report(ctx, dep, stage, verdict)
            await advance_stage(ctx, dep, stages)
    elif ctx.now >= ends or verdict.final:
        _report(ctx, dep, stage, verdict)
        if verdict.verdict is Verdict.PASS:
            await advance_stage(ctx, dep, stages)
        else:
            if sparse is not None:
                note(ctx.session, dep, sparse.fact, now=ctx.now)
            pause(ctx, dep, "The canary analysis was inconclusive; the thread says why.",
                  analysis=_undecided(verdict, analysis.pass_score))
    else:
        dep.next_action_at = min(ctx.now + analysis.check_every, ends)


def _sparse(ctx: StepContext, dep: Deployment, sparse: bake_rules.Sparse, ends: datetime,
            check_every: timedelta) -> None:
    """Say once per step why it waits for traffic (or that it moves on), check again."""
    earlier = [h for h in json.loads(dep.analysis_log or "[]")[:-1] if h["stage"] == dep.stage]
    if sparse.action == "advance" or not any(
            datetime.fromisoformat(h["t"]) >= ends for h in earlier):
        note(ctx.session, dep, sparse.fact, now=ctx.now)
    dep.next_action_at = ctx.now + check_every


def _report(ctx: StepContext, dep: Deployment, stage: Stage, verdict: Judgement) -> None:
    """The step's verdict, with each metric's canary values in the step (for a sparkline)."""
    history = json.loads(dep.analysis_log or "[]")
    lines = tuple(facts.MetricLine(
        outcome=_outcome(result.verdict), text=result.explanation,
        points=tuple(h["metrics"].get(result.name, {}).get("canary") for h in history
                     if h["stage"] == dep.stage))
        for result in verdict.results)
    note(ctx.session, dep, facts.CheckReport(
        weight=stage.weight or 0, blue_green=dep.strategy == "blue-green",
        verdict=verdict.verdict.value, score=verdict.score, results=lines), now=ctx.now)


def _undecided(verdict: Judgement, pass_score: float) -> facts.Undecided:
    """Why the analysis could not decide: the metrics that failed, else the undecided."""
    undecided = [r for r in verdict.results if r.verdict is Verdict.INCONCLUSIVE]
    failed = [r for r in verdict.results if r.verdict is Verdict.FAIL]
    return facts.Undecided(
        score=verdict.score, pass_score=pass_score, marginal=verdict.marginal,
        metrics=len(verdict.results), undecided=tuple(r.name for r in undecided),
        reasons=tuple(r.explanation for r in (failed or undecided)[:3]))


def _outcome(verdict: Verdict) -> facts.Outcome:
    return "pass" if verdict is Verdict.PASS else "fail" if verdict is Verdict.FAIL else "unknown"


def _explain(verdict: Judgement) -> tuple[facts.Line, ...]:
    return tuple(facts.Line(outcome=_outcome(r.verdict), text=r.explanation)
                 for r in verdict.results)


def _log(dep: Deployment, stage: Stage, verdict: Judgement, series: Mapping[str, object],
         now: datetime) -> None:
    """Keep each check's numbers for the thread's sparklines and the final chart."""
    history = json.loads(dep.analysis_log or "[]")
    history.append({"t": now.isoformat(), "stage": dep.stage, "weight": stage.weight,
                    "verdict": verdict.verdict.value, "metrics": {
                        r.name: {"canary": r.canary_value, "baseline": r.baseline_value}
                        for r in (*verdict.results, *verdict.shadow)},
                    "shadow": {r.name: r.verdict.value for r in verdict.shadow}})
    dep.analysis_log = json.dumps(history[-500:])
