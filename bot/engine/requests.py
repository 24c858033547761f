"""Typed requests: what a line of chat text or a button click means. The engine owns
them (they are its API); ``commands/`` parses text and clicks into them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict

from bot.config_delivery import StrategyKind
from bot.values import UsageError as UsageError  # the error every parser raises


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True)


class Deploy(_Command):
    kind: Literal["deploy"] = "deploy"
    service: str
    env: str
    version: str | None = None
    reason: str | None = None
    hotfix: bool = False
    strategy: StrategyKind | None = None
    allow_many_commits: bool = False  # over the environment's max_commits: audited


class Control(_Command):
    """Steer a progressive rollout: what the card's buttons do, from the keyboard."""

    kind: Literal["control"] = "control"
    action: Literal["promote", "pause", "resume", "abort"]
    service: str | None = None
    env: str | None = None
    deployment_id: int | None = None


class Rollback(_Command):
    """Put an earlier version back (default: the last that succeeded before the current)."""

    kind: Literal["rollback"] = "rollback"
    service: str
    env: str
    version: str | None = None
    reason: str | None = None


class LockEnv(_Command):
    """Block new deployments to an environment (or one service in it)."""

    kind: Literal["lock"] = "lock"
    env: str
    service: str | None = None
    reason: str
    duration: timedelta | None = None


class UnlockEnv(_Command):
    kind: Literal["unlock"] = "unlock"
    env: str
    service: str | None = None


class FreezeEnv(_Command):
    """A one-off freeze window from now until ``until``."""

    kind: Literal["freeze"] = "freeze"
    env: str
    until: datetime
    reason: str


class Unfreeze(_Command):
    kind: Literal["unfreeze"] = "unfreeze"
    env: str


class Audit(_Command):
    kind: Literal["audit"] = "audit"
    service: str
    env: str | None = None


class Status(_Command):
    kind: Literal["status"] = "status"
    service: str | None = None


class History(_Command):
    kind: Literal["history"] = "history"
    service: str
    env: str | None = None


class Cancel(_Command):
    """Stop a deployment that has not started changing the target yet."""

    kind: Literal["cancel"] = "cancel"
    service: str | None = None
    env: str | None = None
    deployment_id: int | None = None


class Approve(_Command):
    """An approver's Approve click on a deployment's approval request."""

    kind: Literal["approve"] = "approve"
    deployment_id: int


class AlertDecision(_Command):
    """A click in an alert thread: roll back, redeploy, not the deploy, acknowledge."""

    kind: Literal["alert"] = "alert"
    thread_id: int
    decision: Literal["rollback", "redeploy", "dismiss", "acknowledge"]


class Help(_Command):
    kind: Literal["help"] = "help"
    topic: str | None = None  # one subcommand's help


Command = (
    Deploy | Status | History | Cancel | Help | LockEnv | UnlockEnv | FreezeEnv | Unfreeze
    | Audit | Control | Rollback | Approve | AlertDecision
)
