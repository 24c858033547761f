"""Provider selection by name: the config's ``provider:`` field picks the module."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from integrations.base import CIProvider, DeployTarget
from integrations.command import CommandConfig, CommandProvider

PROVIDERS = ("command",)
# One discriminated union per role; a new provider adds its config model here.
CIConfig = Annotated[CommandConfig, Field(discriminator="provider")]
DeployConfig = Annotated[CommandConfig, Field(discriminator="provider")]


def build_ci(config: CommandConfig, state_dir: Path) -> CIProvider:
    return CommandProvider(config, state_dir / "ci")


def build_target(config: CommandConfig, state_dir: Path) -> DeployTarget:
    return CommandProvider(config, state_dir / "deploy")
