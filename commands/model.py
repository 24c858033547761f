"""Typed commands: what a line of chat text or a button click means."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True)


class Deploy(_Command):
    kind: Literal["deploy"] = "deploy"
    service: str
    env: str
    version: str | None = None
    reason: str | None = None


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


class Help(_Command):
    kind: Literal["help"] = "help"


Command = Deploy | Status | History | Cancel | Help


class UsageError(Exception):
    """Input we cannot act on; the message tells the user how to fix it."""


class Reply(BaseModel):
    """What the bot answers the person who asked (ephemeral unless ``public``)."""

    text: str
    public: bool = False
