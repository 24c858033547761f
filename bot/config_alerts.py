"""Config for alert threads: which labels name the service and environment, where
unmapped alerts go, how far back a deployment counts as a suspect, and auto-rollback.

The label mapping is ``integrations.alerts.AlertMapping`` itself, so the parser and the
config can never disagree about what ``service_labels`` means.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bot.config_policy import Duration
from integrations.alerts import AlertMapping

_CHANNEL_RE = re.compile(r"^(#[a-z0-9][a-z0-9._-]{0,79}|[CGD][A-Z0-9]{8,})$")
# Known severities in rising order; an auto-rollback threshold matches its level and above.
SEVERITIES = ("info", "warning", "error", "critical", "page")


class AlertsConfig(AlertMapping):
    """The top-level ``alerts:`` section (every key optional)."""

    model_config = ConfigDict(extra="forbid")
    default_channel: str | None = Field(
        default=None, description="Where alerts that name no known service go "
                                  "(default: announce_channel)")
    suspect_window: Duration = Field(
        default=timedelta(hours=2),
        description="A deployment that finished this long before an alert is a suspect")

    @field_validator("default_channel")
    @classmethod
    def _channel(cls, v: str | None) -> str | None:
        if v is not None and not _CHANNEL_RE.match(v):
            raise ValueError("must be a channel ID like C0123ABCD or a name like #alerts")
        return v


class AutoRollbackConfig(BaseModel):
    """Per service: roll back without a click when one of ``alerts`` fires soon after a deploy."""

    model_config = ConfigDict(extra="forbid")
    alerts: list[str] = Field(min_length=1, description="alertname values, e.g. HighErrorRate")
    severity: str | None = Field(
        default=None, description=f"Minimum severity ({', '.join(SEVERITIES)}); "
                                  "other values must match exactly")
    within: Duration = Field(default=timedelta(minutes=30),
                             description="How long after the deploy finished")

    def matches(self, name: str, severity: str | None, after_deploy: timedelta) -> bool:
        """Is an alert called ``name`` firing ``after_deploy`` after the deploy a trigger?"""
        if name not in self.alerts or after_deploy > self.within:
            return False
        return self.severity is None or _at_least(severity, self.severity)


def _at_least(severity: str | None, threshold: str) -> bool:
    if severity is None:
        return False
    got, want = severity.casefold(), threshold.casefold()
    if got in SEVERITIES and want in SEVERITIES:
        return SEVERITIES.index(got) >= SEVERITIES.index(want)
    return got == want
