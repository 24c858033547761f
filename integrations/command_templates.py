"""The ``command`` provider's config: argv templates, checked at load, filled per run.

A template is a list of argv elements with ``{name}`` placeholders. Values are put in
one pass and each element stays one element, so a hostile version string can never
become a second argument, a shell construct or another placeholder.
"""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, ClassVar, Literal

from pydantic import (
    AfterValidator,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from integrations.base import Capability, ProviderConfig

EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")]
# Shipbot's own settings (bot/settings.py): its Slack tokens, signing secret, webhook token
# and database URL. With them anyone could forge approvals, so no provider ever gets one.
_BOT_SETTING = re.compile(r"^(?:SLACK_|SHIPBOT_)|^DATABASE_URL$")


def not_a_bot_setting(name: str) -> str:
    if _BOT_SETTING.match(name):
        raise ValueError(
            f"{name} is one of Shipbot's own settings (SLACK_*, SHIPBOT_*, DATABASE_URL), "
            "which providers never get: give the provider a variable of its own "
            "(e.g. DEPLOY_TOKEN) and name that instead")
    return name


# The name of a variable taken from the bot's environment and handed to a provider.
ProviderEnvName = Annotated[EnvName, AfterValidator(not_a_bot_setting)]
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# What every deploy-side template may use; ``{weight}`` only where traffic is shifted.
JOB_PLACEHOLDERS: tuple[str, ...] = ("service", "env", "version")
# {artifact}: what the build reported (SHIPBOT_OUTPUT), or the version when it reported none.
COMMAND_PLACEHOLDERS: tuple[str, ...] = (*JOB_PLACEHOLDERS, "artifact")
WEIGHT_ONLY_IN = "set_weight_argv"


def check_placeholders(argv: list[str], allowed: tuple[str, ...]) -> None:
    """Reject ``{verison}``-style typos at config load instead of deploying them literally.

    Only ``{identifier}`` counts as a placeholder; other braces (JSON etc.) are literal.
    The field is named by the error's location (``services.api.deploy.abort_argv: ...``).
    """
    for arg in argv:
        for name in _PLACEHOLDER.findall(arg):
            if name in allowed:
                continue
            if name == "weight":
                raise ValueError(f"{{weight}} is only allowed in {WEIGHT_ONLY_IN}")
            names = ", ".join(f"{{{n}}}" for n in allowed)
            raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names})")


def check_program(argv: list[str]) -> None:
    """An empty first item would only fail at deploy time, with a confusing message."""
    if not argv[0]:
        raise ValueError("the program (first item) must not be empty")


def render(arg: str, values: dict[str, str]) -> str:
    """Fill placeholders in one pass: inserted values are never re-scanned or re-parsed."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), arg)


def run_id_for(key: str) -> str:
    """A safe directory name for ``key``; the hash keeps distinct keys distinct."""
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", key).lstrip(".-")[:80]
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{readable}-{digest}" if readable else digest


class CommandConfig(ProviderConfig):
    """One program per action; only ``argv`` (the deploy or CI build) is required."""

    # Errors never echo the input (ProviderConfig): env values can be secrets.
    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(Capability) - {
        Capability.COMPARE, Capability.CHECKS}  # a program answers neither
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {
        Capability.TRAFFIC: "set_weight_argv, promote_argv and abort_argv",
        Capability.HEALTH: "health_argv", Capability.ROLLBACK: "rollback_argv",
        Capability.LATEST_VERSION: "latest_version_argv"}

    provider: Literal["command"] = "command"
    argv: list[str] = Field(min_length=1, description="templated with {service} {env} {version} "
                            "{artifact}; a build reports what it produced by writing "
                            "`artifact=<image ref>` and `commit=<sha>` lines to $SHIPBOT_OUTPUT")
    timeout_seconds: float = Field(600.0, gt=0)
    # Checked on the keys alone, so that no error message can carry a value (a secret).
    env: dict[EnvName, str] = Field(default_factory=dict, description="extra environment")
    # The program's environment is PATH, HOME, LANG, LC_*, TZ, ``env`` and these; the
    # bot's own variables (its tokens, its database URL) never reach it.
    pass_env: list[ProviderEnvName] = Field(
        default_factory=list, description="names of the bot's environment variables to pass on")
    secret_env: list[ProviderEnvName] = Field(
        default_factory=list, description="like pass_env, and their values are redacted from "
        "everything Shipbot shows (Slack, logs, audit trail)")
    workdir: str | None = None
    latest_version_argv: list[str] | None = Field(
        None, min_length=1, description="CI only: prints the newest built version; {service}"
    )
    output_lines: int = Field(20, ge=0, le=1000)
    rollback_argv: list[str] | None = Field(
        None, min_length=1, description="deploy only: the target's own undo (e.g. `kubectl "
        "rollout undo`), used for rollbacks instead of argv; {service} {env} {version}")
    # Progressive delivery: all three of these make the target able to split traffic.
    set_weight_argv: list[str] | None = Field(
        None, min_length=1, description="send {weight} percent of traffic to the new version")
    promote_argv: list[str] | None = Field(
        None, min_length=1, description="make the new version the stable one")
    abort_argv: list[str] | None = Field(
        None, min_length=1, description="all traffic back to the old version, remove the new")
    health_argv: list[str] | None = Field(
        None, min_length=1, description="exits 0 when the new version is healthy")

    @field_validator("argv", "rollback_argv", "set_weight_argv", "promote_argv", "abort_argv",
                     "health_argv")
    @classmethod
    def _job_template(cls, argv: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if argv is not None:
            check_program(argv)
            extra = ("weight",) if info.field_name == WEIGHT_ONLY_IN else ()
            check_placeholders(argv, COMMAND_PLACEHOLDERS + extra)
        return argv

    @model_validator(mode="after")
    def _each_variable_once(self) -> CommandConfig:
        """One source per variable: a name in two lists would be passed one way and
        (maybe) redacted another."""
        if both := sorted(set(self.pass_env) & set(self.secret_env)):
            raise ValueError(f"secret_env: {', '.join(both)} is also in pass_env; list a "
                             "secret in secret_env only")
        if both := sorted(set(self.env) & (set(self.pass_env) | set(self.secret_env))):
            raise ValueError(f"env: {', '.join(both)} is also passed from the bot's "
                             "environment (pass_env/secret_env); keep one of the two")
        return self

    def capabilities(self) -> frozenset[Capability]:
        """Each optional program turns one capability on; traffic needs all three of
        set_weight, promote and abort (one alone is useless)."""
        on = {Capability.CANCEL}
        if None not in (self.set_weight_argv, self.promote_argv, self.abort_argv):
            on.add(Capability.TRAFFIC)
        for argv, capability in ((self.health_argv, Capability.HEALTH),
                                 (self.rollback_argv, Capability.ROLLBACK),
                                 (self.latest_version_argv, Capability.LATEST_VERSION)):
            if argv is not None:
                on.add(capability)
        return frozenset(on)

    @field_validator("latest_version_argv")
    @classmethod
    def _latest_template(cls, argv: list[str] | None) -> list[str] | None:
        if argv is not None:
            check_placeholders(argv, ("service",))
        return argv
