"""Chat text → typed command. Pure: no I/O, every error says how to fix the input."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from bot.config_delivery import STRATEGIES
from bot.engine.requests import (
    Audit,
    Cancel,
    Command,
    Control,
    Deploy,
    FreezeEnv,
    Help,
    History,
    LockEnv,
    Rollback,
    Status,
    Unfreeze,
    UnlockEnv,
    UsageError,
)
from bot.values import WHEN_FORMAT, parse_duration, parse_version, parse_when

MAX_TEXT = 1000
MAX_REASON = 500
CONTROLS = ("promote", "pause", "resume", "abort")
SUBCOMMANDS = ("help", "status", "history", "cancel", "lock", "unlock", "freeze", "unfreeze",
               "audit", "rollback", *CONTROLS)
VALUE_FLAGS = ("--reason", "--for", "--until", "--strategy")
BOOL_FLAGS = ("--hotfix",)
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})

USAGE = """\
*Usage*
• `/deploy <service> <env> [version] [--reason "why"] [--hotfix]` — deploy (default: latest build)
• `/deploy status [service]` — what runs where, locks, freezes, and what is in progress
• `/deploy history <service> [env]` — the last 10 deployments
• `/deploy cancel <service> <env>` — stop a deployment before it reaches the target
• `/deploy lock <env> [service] --reason "why" [--for 2h]` / `/deploy unlock <env> [service]`
• `/deploy freeze <env> --until "2026-12-01 09:00" --reason "why"` / `/deploy unfreeze <env>`
• `/deploy audit <service> [env]` — recent decisions: requests, approvals, locks, overrides
• `/deploy rollback <service> <env> [version]` (or `/rollback …`) — put the previous version back
*Examples*
• `/deploy api staging`
• `/deploy api production v1.4.2 --reason "fix login timeout"`
• `/deploy api production v1.4.3 --hotfix --reason "INC-123"`"""


def reserved_names(services: Iterable[str]) -> list[str]:
    """Problems for services named like a subcommand: `/deploy status` could not mean
    them (``shipbot config check`` and start-up refuse such a config)."""
    return [f"services.{name}: '{name}' is a /deploy subcommand; choose another name"
            for name in services if name in SUBCOMMANDS]


class Catalog:
    """The names a command may use: services, environments, and which go together."""

    def __init__(self, services: Mapping[str, Sequence[str]],
                 environments: Sequence[str] | None = None) -> None:
        self.services = dict(services)
        self.environments = list(environments or dict.fromkeys(
            e for envs in self.services.values() for e in envs))

    def service(self, name: str) -> str:
        if name in self.services:
            return name
        raise UsageError(
            f"Unknown service '{_clip(name)}'.{_did_you_mean(name, self.services)}"
            f" Known: {', '.join(sorted(self.services))}."
        )

    def env(self, service: str | None, name: str) -> str:
        envs = self.services[service] if service else self.environments
        if name in envs:
            return name
        scope = f" for {service}" if service else ""
        raise UsageError(
            f"Unknown environment '{_clip(name)}'{scope}.{_did_you_mean(name, envs)}"
            f" Known: {', '.join(envs)}."
        )


def parse(text: str, catalog: Catalog, now: datetime) -> Command:
    """Parse the text after ``/deploy``."""
    if len(text) > MAX_TEXT:
        raise UsageError(
            f"That command is {len(text)} characters long; the limit is {MAX_TEXT}. "
            "Shorten the --reason and try again."
        )
    words = _split(text)
    if not words or words[0] == "help":
        return Help()
    head = words[0]
    if head not in SUBCOMMANDS:
        return _deploy(words, catalog)
    args, flags = _flags(words[1:], allowed=_FLAGS_OF.get(head, ()))
    if head == "status":
        _arity(args, 0, 1, "/deploy status [service]")
        return Status(service=catalog.service(args[0]) if args else None)
    if head in ("history", "audit"):
        _arity(args, 1, 2, f"/deploy {head} <service> [env]")
        service = catalog.service(args[0])
        env = catalog.env(service, args[1]) if len(args) > 1 else None
        return History(service=service, env=env) if head == "history" else \
            Audit(service=service, env=env)
    if head == "rollback":
        _arity(args, 2, 3, ROLLBACK_USAGE)
        service = catalog.service(args[0])
        return Rollback(service=service, env=catalog.env(service, args[1]),
                        version=parse_version(args[2]) if len(args) > 2 else None,
                        reason=flags.get("--reason"))
    if head in CONTROLS:
        _arity(args, 2, 2, f"/deploy {head} <service> <env>")
        service = catalog.service(args[0])
        return Control(action=head, service=service,  # type: ignore[arg-type]
                       env=catalog.env(service, args[1]))
    if head == "cancel":
        _arity(args, 2, 2, "/deploy cancel <service> <env>")
        service = catalog.service(args[0])
        return Cancel(service=service, env=catalog.env(service, args[1]))
    if head in ("lock", "unlock"):
        _arity(args, 1, 2, f"/deploy {head} <env> [service]")
        env = catalog.env(None, args[0])
        scope = catalog.service(args[1]) if len(args) > 1 else None
        if head == "unlock":
            return UnlockEnv(env=env, service=scope)
        duration = parse_duration(flags["--for"]) if "--for" in flags else None
        return LockEnv(env=env, service=scope, duration=duration,
                       reason=_required(flags, "--reason", 'lock production --reason "why"'))
    if head == "freeze":
        _arity(args, 1, 1, '/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"')
        until = parse_when(_required(flags, "--until", f"--until with {WHEN_FORMAT}"), now)
        return FreezeEnv(env=catalog.env(None, args[0]), until=until,
                         reason=_required(flags, "--reason", 'freeze ... --reason "why"'))
    _arity(args, 1, 1, "/deploy unfreeze <env>")
    return Unfreeze(env=catalog.env(None, args[0]))


_FLAGS_OF = {"lock": ("--reason", "--for"), "freeze": ("--until", "--reason"),
             "rollback": ("--reason",)}
ROLLBACK_USAGE = "/rollback <service> <env> [version] [--reason \"why\"]"


def _deploy(words: list[str], catalog: Catalog) -> Deploy:
    positional, flags = _flags(words, allowed=("--reason", "--hotfix", "--strategy"))
    _arity(positional, 2, 3, "/deploy <service> <env> [version]")
    service = catalog.service(positional[0])
    env = catalog.env(service, positional[1])
    version = parse_version(positional[2]) if len(positional) > 2 else None
    hotfix = "--hotfix" in flags
    if hotfix and "--reason" not in flags:
        raise UsageError('A hotfix needs a reason for the audit trail: --hotfix --reason "INC-123"')
    strategy = flags.get("--strategy")
    if strategy is not None and strategy not in STRATEGIES:
        hint = _did_you_mean(strategy, STRATEGIES)
        raise UsageError(f"Unknown strategy '{_clip(strategy)}'.{hint} Strategies: "
                         f"{', '.join(STRATEGIES)}.")
    return Deploy(service=service, env=env, version=version, reason=flags.get("--reason"),
                  hotfix=hotfix, strategy=strategy)  # type: ignore[arg-type]


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text.translate(_SMART_QUOTES).strip())
    except ValueError:
        raise UsageError(
            'A quote is not closed. Put the reason in matching quotes: --reason "fix login".'
        ) from None


def _flags(words: list[str], allowed: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    flags: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if not word.startswith("--"):
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        if name not in allowed:
            raise UsageError(f"Unknown option '{_clip(name)}'.{_did_you_mean(name, allowed)}"
                             f" Options here: {', '.join(allowed) or 'none'}.")
        if name in BOOL_FLAGS:
            flags[name] = "yes"
            continue
        if not eq:
            value = next(it, "")
        if not value.strip() or value.startswith("--"):
            raise UsageError(f'{name} needs a value, e.g. {name} "what this is for".')
        if len(value) > MAX_REASON:
            raise UsageError(f"The {name[2:]} is {len(value)} characters; keep it under "
                             f"{MAX_REASON}.")
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise UsageError(f"The {name[2:]} contains control characters; use plain text.")
        flags[name] = value.strip()
    return positional, flags


def _required(flags: dict[str, str], name: str, example: str) -> str:
    if name not in flags:
        raise UsageError(f"{name} is required here: `/deploy {example}`.")
    return flags[name]


def _arity(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise UsageError(f"That is not a command I know: expected `{usage}`.\n\n{USAGE}")


def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    names = list(choices)
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.6) or [
        n for n in names if len(word) >= 2 and n.startswith(word)][:1]
    return f" Did you mean '{close[0]}'?" if close else ""


def _clip(text: str, limit: int = 40) -> str:
    """Echo user input back safely: short, and without Slack mention/link syntax."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.replace("<", "‹").replace(">", "›").replace("`", "'")


def parse_deployment_ref(value: str) -> int:
    """A button's value names a deployment by id; anything else was tampered with. Only
    ASCII digits count: ``str.isdigit`` also takes '²' (which ``int`` refuses) and '٣'."""
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise UsageError("That button is not valid any more. Use `/deploy status` instead.")
    return int(value)
