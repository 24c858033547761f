"""Where a deployment ends when its step keeps failing: nothing is left half-done.

The runner retries a failing step with backoff; after ``MAX_STEP_ATTEMPTS`` in a row it
calls ``give_up``, which picks the safe end for the state the deployment is in.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine import facts, machine, rollout_stops
from bot.engine.machine import State
from bot.engine.outbox import note, refresh_approval
from bot.store.models import Deployment

MAX_STEP_ATTEMPTS = 5


def give_up(session: AsyncSession, dep: Deployment, state: State, reason: str,
            now: datetime) -> None:
    """The step failed MAX_STEP_ATTEMPTS times in a row: end it where nothing is left
    half-done. A rollout under way (traffic split, or a new version out) is rolled
    back; a rollback that cannot finish calls a human; a request not yet approved
    expires; anything earlier, which has not touched the target's traffic, fails."""
    gave_up = f"Gave up after {MAX_STEP_ATTEMPTS} attempts: {reason}"
    if state is State.ROLLING_BACK:
        machine.transition(session, dep, State.ROLLBACK_FAILED, actor="shipbot",
                           now=now, detail=gave_up)
        note(session, dep, rollout_stops.rollback_failed(dep, reason), now=now)
    elif state in (State.VERIFYING, State.PROMOTING, State.PAUSED):
        # Canary and blue-green: the stable version still runs, so traffic goes back to
        # it. Rolling (it replaced the old version): the old version is deployed again.
        rollout_stops.begin_rollback(session, dep, now, f"the {state.value} step failed "
                                   f"{MAX_STEP_ATTEMPTS} times in a row ({reason})")
    elif state is State.AWAITING_APPROVAL:
        machine.transition(session, dep, State.EXPIRED, actor="shipbot", now=now,
                           detail=f"{gave_up}. Nothing was deployed.")
        refresh_approval(session, dep, now=now)
        note(session, dep, facts.ExpiredUnhandled(
            reason=reason, attempts=MAX_STEP_ATTEMPTS, service=dep.service, env=dep.env,
            version=dep.version), now=now)
    else:
        machine.transition(session, dep, State.FAILED, actor="shipbot", now=now,
                           detail=gave_up)
        note(session, dep, facts.GaveUp(state=state.value, reason=reason,
                                        service=dep.service, env=dep.env,
                                        version=dep.version), now=now)
