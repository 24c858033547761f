"""What a step of the runner may use, apart from the steps themselves, so that the
steps, the rollout stages and the exits (``progressive``, ``rollout_stops``) can share it
without importing one another."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel.ext.asyncio.session import AsyncSession

from bot.engine.policy import Policy
from bot.engine.providers import ServiceProviders
from bot.store.models import Deployment
from integrations.http import HttpOptions
from integrations.metrics import MetricsProvider


class StepContext:
    """What a step may use: the session, the service's providers, time, polling pace, and
    the HTTP options the bot gives every provider (the HTTP checks' requests count too)."""

    def __init__(
        self, session: AsyncSession, providers: ServiceProviders, now: datetime, poll: float,
        policy: Policy, metrics: MetricsProvider | None = None,
        http: HttpOptions | None = None,
    ) -> None:
        self.session, self.providers, self.now, self.poll = session, providers, now, poll
        self.policy, self.metrics, self.http = policy, metrics, http or HttpOptions()

    def later(self, dep: Deployment) -> None:
        dep.next_action_at = self.now + timedelta(seconds=self.poll)
        self.session.add(dep)
