"""The `/deploy` subcommands, one table entry each: positional words, flags, usage line,
help, example and the request it builds. USAGE, `--help`, the reserved service names and
"did you mean" for subcommands are all derived from ``TABLE``.

Adding a subcommand: its request in ``bot/engine/requests.py``, a builder and an entry
here, and its case in ``commands/handlers.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from bot.config_delivery import STRATEGIES
from bot.engine.requests import (
    Audit,
    Cancel,
    Command,
    Control,
    FreezeEnv,
    Help,
    History,
    LockEnv,
    Rollback,
    Status,
    Unfreeze,
    UnlockEnv,
)
from bot.values import parse_duration, parse_version, parse_when
from commands.catalog import Catalog


@dataclass(frozen=True)
class Words:
    """A subcommand's words after the flags were taken out, and what they may name."""

    name: str
    args: list[str]
    flags: dict[str, str]
    catalog: Catalog
    now: datetime

    def service(self, i: int) -> str:
        return self.catalog.service(self.args[i])

    def env(self, service: str | None, i: int) -> str:
        return self.catalog.env(service, self.args[i])

    def optional(self, i: int) -> str | None:
        return self.args[i] if len(self.args) > i else None


@dataclass(frozen=True)
class Subcommand:
    """One `/deploy <name> …`: its words, its help, and the request it builds. USAGE,
    the reserved service names, `--help` and "did you mean" all come from ``TABLE``."""

    name: str
    usage: str  # the positional words; shown when they do not fit
    summary: str  # its line in `/deploy help`
    build: Callable[[Words], Command]
    flags: tuple[str, ...] = ()  # allowed; those in ``required`` must be given
    required: tuple[str, ...] = ()
    example: str = ""

    @property
    def arity(self) -> tuple[int, int]:
        words = [w for w in self.usage.split()
                 if w.startswith(("<", "[")) and not w.startswith("[--")]
        return sum(w.startswith("<") for w in words), len(words)

    @property
    def synopsis(self) -> str:
        shown = [FLAG_HINTS[f] if f in self.required else f"[{FLAG_HINTS[f]}]"
                 for f in self.flags if f not in self.usage]
        return " ".join([self.usage, *shown])


FLAG_HINTS = {"--reason": '--reason "why"', "--for": "--for 2h",
              "--until": '--until "2026-12-01 09:00"', "--hotfix": "--hotfix",
              "--allow-many-commits": "--allow-many-commits",
              "--strategy": "--strategy " + "|".join(STRATEGIES)}


def _status(w: Words) -> Command:
    return Status(service=w.service(0) if w.args else None)


def _history(w: Words) -> Command:
    service = w.service(0)
    env = w.env(service, 1) if len(w.args) > 1 else None
    return History(service=service, env=env) if w.name == "history" else \
        Audit(service=service, env=env)


def _rollback(w: Words) -> Command:
    service = w.service(0)
    version = w.optional(2)
    return Rollback(service=service, env=w.env(service, 1),
                    version=parse_version(version) if version else None,
                    reason=w.flags.get("--reason"))


def _control(w: Words) -> Command:
    service = w.service(0)
    return Control(action=w.name, service=service,  # type: ignore[arg-type]
                   env=w.env(service, 1))


def _cancel(w: Words) -> Command:
    service = w.service(0)
    return Cancel(service=service, env=w.env(service, 1))


def _lock(w: Words) -> Command:
    env, scope = w.env(None, 0), w.service(1) if len(w.args) > 1 else None
    if w.name == "unlock":
        return UnlockEnv(env=env, service=scope)
    duration = parse_duration(w.flags["--for"]) if "--for" in w.flags else None
    return LockEnv(env=env, service=scope, duration=duration, reason=w.flags["--reason"])


def _freeze(w: Words) -> Command:
    return FreezeEnv(env=w.env(None, 0), until=parse_when(w.flags["--until"], w.now),
                     reason=w.flags["--reason"])


def _unfreeze(w: Words) -> Command:
    return Unfreeze(env=w.env(None, 0))


def _help(w: Words) -> Command:
    return Help(topic=w.optional(0))


_CONTROL_SUMMARY = {
    "promote": "skip the current wait of a canary or blue-green rollout",
    "pause": "hold a rollout where it is (it rolls back after its pause timeout)",
    "resume": "go on from a pause, or past a manual gate",
    "abort": "stop a rollout and move traffic back to the old version",
}
TABLE: tuple[Subcommand, ...] = (
    Subcommand("help", "/deploy help [command]", "this help, or one command's", _help),
    Subcommand("status", "/deploy status [service]",
               "what runs where, locks, freezes, and what is in progress", _status,
               example="/deploy status api"),
    Subcommand("history", "/deploy history <service> [env]", "the last 10 deployments",
               _history, example="/deploy history api production"),
    Subcommand("audit", "/deploy audit <service> [env]",
               "recent decisions: requests, approvals, locks, overrides", _history,
               example="/deploy audit api production"),
    Subcommand("cancel", "/deploy cancel <service> <env>",
               "stop a deployment before it reaches the target", _cancel,
               example="/deploy cancel api staging"),
    *(Subcommand(name, f"/deploy {name} <service> <env>", summary, _control,
                 example=f"/deploy {name} web production")
      for name, summary in _CONTROL_SUMMARY.items()),
    Subcommand("lock", "/deploy lock <env> [service]", "stop deploys to an environment",
               _lock, flags=("--reason", "--for"), required=("--reason",),
               example='/deploy lock production --reason "DB migration" --for 2h'),
    Subcommand("unlock", "/deploy unlock <env> [service]", "lift a lock", _lock,
               example="/deploy unlock production"),
    Subcommand("freeze", '/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"',
               "no deploys until a time (UTC, or with a zone such as Europe/Berlin)", _freeze,
               flags=("--until", "--reason"), required=("--until", "--reason"),
               example='/deploy freeze production --until "2026-12-24 09:00" --reason "holidays"'),
    Subcommand("unfreeze", "/deploy unfreeze <env>", "lift the freezes of an environment",
               _unfreeze, example="/deploy unfreeze production"),
    Subcommand("rollback", '/rollback <service> <env> [version] [--reason "why"]',
               "put the previous version back (or `/deploy rollback …`)", _rollback,
               flags=("--reason",), example="/rollback api production"),
)
COMMANDS = {c.name: c for c in TABLE}
SUBCOMMANDS = tuple(COMMANDS)
# The command without a subcommand word: only its usage and flags are read from here (the
# parser builds the Deploy itself, as its first word is a service, not a name).
DEPLOY = Subcommand("deploy", "/deploy <service> <env> [version]",
                    "deploy (default: the latest build)", _help,
                    flags=("--reason", "--hotfix", "--strategy", "--allow-many-commits"))
ROLLBACK_USAGE = COMMANDS["rollback"].synopsis


def _usage() -> str:
    lines = ["*Usage*", f"• `{DEPLOY.synopsis}` — {DEPLOY.summary}"]
    lines += [f"• `{c.synopsis}` — {c.summary}" for c in TABLE]
    return "\n".join([*lines, "*Examples*", "• `/deploy api staging`",
                      '• `/deploy api production v1.4.2 --reason "fix login timeout"`',
                      '• `/deploy api production v1.4.3 --hotfix --reason "INC-123"`'])


USAGE = _usage()


def help_text(topic: str | None) -> str:
    """`/deploy help` (everything) or `/deploy help lock` / `/deploy lock --help`."""
    command = COMMANDS.get(topic or "")
    if command is None or command.name == "help":
        return USAGE
    text = f"`{command.synopsis}` — {command.summary}."
    return text + (f"\nExample: `{command.example}`" if command.example else "")


def reserved_names(services: Iterable[str]) -> list[str]:
    """Problems for services named like a subcommand: `/deploy status` could not mean
    them (``shipbot config check`` and start-up refuse such a config)."""
    return [f"services.{name}: '{name}' is a /deploy subcommand; choose another name"
            for name in services if name in SUBCOMMANDS]
