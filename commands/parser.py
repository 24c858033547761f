"""Chat text → typed command. Pure: no I/O, every error says how to fix the input."""

from __future__ import annotations

import difflib
import shlex
from collections.abc import Sequence
from datetime import datetime

from bot.config_delivery import STRATEGIES
from bot.engine.requests import Command, Deploy, Help, UsageError
from bot.values import WHEN_FORMAT, parse_version
from commands.catalog import Catalog, clip, did_you_mean
from commands.grammar import COMMANDS, DEPLOY, SUBCOMMANDS, USAGE, Words

MAX_TEXT = 1000
MAX_REASON = 500
BOOL_FLAGS = ("--hotfix", "--allow-many-commits")
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})


def parse(text: str, catalog: Catalog, now: datetime) -> Command:
    """Parse the text after ``/deploy``."""
    if len(text) > MAX_TEXT:
        raise UsageError(
            f"That command is {len(text)} characters long; the limit is {MAX_TEXT}. "
            "Shorten the --reason and try again."
        )
    words = _split(text)
    if not words:
        return Help()
    command = COMMANDS.get(words[0])
    if command is None:
        return _deploy(words, catalog)
    if "--help" in words[1:]:
        return Help(topic=command.name)
    args, flags = _flags(words[1:], allowed=command.flags)
    low, high = command.arity
    _arity(args, low, high, command.usage)
    for name in command.required:
        if name not in flags:
            note = f" The time is {WHEN_FORMAT}." if name == "--until" else ""
            raise UsageError(f"{name} is required here: `{command.synopsis}`.{note}")
    return command.build(Words(command.name, args, flags, catalog, now))


def _deploy(words: list[str], catalog: Catalog) -> Deploy:
    if words[0] not in catalog.services:
        _maybe_a_subcommand(words[0], catalog)
    positional, flags = _flags(words, allowed=DEPLOY.flags)
    _arity(positional, 2, 3, DEPLOY.usage)
    service = catalog.service(positional[0])
    env = catalog.env(service, positional[1])
    version = parse_version(positional[2]) if len(positional) > 2 else None
    hotfix = "--hotfix" in flags
    if hotfix and "--reason" not in flags:
        raise UsageError('A hotfix needs a reason for the audit trail: --hotfix --reason "INC-123"')
    strategy = flags.get("--strategy")
    if strategy is not None and strategy not in STRATEGIES:
        hint = did_you_mean(strategy, STRATEGIES)
        raise UsageError(f"Unknown strategy '{clip(strategy)}'.{hint} Strategies: "
                         f"{', '.join(STRATEGIES)}.")
    return Deploy(service=service, env=env, version=version, reason=flags.get("--reason"),
                  hotfix=hotfix, strategy=strategy,  # type: ignore[arg-type]
                  allow_many_commits="--allow-many-commits" in flags)


def _maybe_a_subcommand(word: str, catalog: Catalog) -> None:
    """`/deploy statsu`: a typo of a subcommand, not of a service, gets its own hint."""
    if catalog.suggestion(word):
        return
    close = difflib.get_close_matches(word, SUBCOMMANDS, n=1, cutoff=0.75)
    if close:
        raise UsageError(f"Unknown command or service '{clip(word)}'. Did you mean "
                         f"`/deploy {close[0]}`? `/deploy help` lists the commands.")


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
            raise UsageError(f"Unknown option '{clip(name)}'.{did_you_mean(name, allowed)}"
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


def _arity(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise UsageError(f"That is not a command I know: expected `{usage}`.\n\n{USAGE}")
