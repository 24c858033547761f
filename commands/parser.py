"""Chat text → typed command. Pure: no I/O, every error says how to fix the input."""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence

from commands.model import Cancel, Command, Deploy, Help, History, Status, UsageError

MAX_TEXT = 1000
MAX_REASON = 500
VERSION_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
SUBCOMMANDS = ("help", "status", "history", "cancel")
FLAGS = ("--reason",)
_SMART_QUOTES = str.maketrans({"“": '"', "”": '"', "„": '"', "‘": "'", "’": "'"})

USAGE = """\
*Usage*
• `/deploy <service> <env> [version] [--reason "why"]` — deploy a version (latest build if omitted)
• `/deploy status [service]` — what runs where, and what is in progress
• `/deploy history <service> [env]` — the last 10 deployments
• `/deploy cancel <service> <env>` — stop a deployment that has not reached the target yet
• `/deploy help` — this text
*Examples*
• `/deploy api staging`
• `/deploy api staging v1.4.2 --reason "fix login timeout"`
• `/deploy history api production`"""


class Catalog:
    """The names a command may use: services and the environments each deploys to."""

    def __init__(self, services: Mapping[str, Sequence[str]]) -> None:
        self.services = dict(services)

    def service(self, name: str) -> str:
        if name in self.services:
            return name
        raise UsageError(
            f"Unknown service '{_clip(name)}'.{_did_you_mean(name, self.services)}"
            f" Known: {', '.join(sorted(self.services))}."
        )

    def env(self, service: str, name: str) -> str:
        envs = self.services[service]
        if name in envs:
            return name
        raise UsageError(
            f"Unknown environment '{_clip(name)}' for {service}.{_did_you_mean(name, envs)}"
            f" Known: {', '.join(envs)}."
        )


def parse(text: str, catalog: Catalog) -> Command:
    """Parse the text after ``/deploy``."""
    if len(text) > MAX_TEXT:
        raise UsageError(
            f"That command is {len(text)} characters long; the limit is {MAX_TEXT}. "
            "Shorten the --reason and try again."
        )
    words = _split(text)
    if not words or words[0] == "help":
        return Help()
    head, rest = words[0], words[1:]
    if head == "status":
        _arity(rest, 0, 1, "/deploy status [service]")
        return Status(service=catalog.service(rest[0]) if rest else None)
    if head == "history":
        _arity(rest, 1, 2, "/deploy history <service> [env]")
        service = catalog.service(rest[0])
        env = catalog.env(service, rest[1]) if len(rest) > 1 else None
        return History(service=service, env=env)
    if head == "cancel":
        _arity(rest, 2, 2, "/deploy cancel <service> <env>")
        service = catalog.service(rest[0])
        return Cancel(service=service, env=catalog.env(service, rest[1]))
    return _deploy(words, catalog)


def _deploy(words: list[str], catalog: Catalog) -> Deploy:
    positional, flags = _flags(words)
    _arity(positional, 2, 3, "/deploy <service> <env> [version]")
    service = catalog.service(positional[0])
    env = catalog.env(service, positional[1])
    version = parse_version(positional[2]) if len(positional) > 2 else None
    return Deploy(service=service, env=env, version=version, reason=flags.get("--reason"))


def parse_version(raw: str) -> str:
    if VERSION_RE.match(raw):
        return raw
    if len(raw) > 128:
        raise UsageError(f"Version is {len(raw)} characters long; the limit is 128.")
    bad = sorted({c for c in raw if not re.match(r"[A-Za-z0-9._/+-]", c)})
    shown = " ".join(f"'{c}'" if c.isprintable() and not c.isspace() else repr(c) for c in bad)
    raise UsageError(
        f"Version '{_clip(raw)}' contains characters Shipbot does not accept: {shown}. "
        "Versions use letters, digits and . _ / + - (for example v1.4.2 or 2026.11.26-3)."
    )


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text.translate(_SMART_QUOTES).strip())
    except ValueError:
        raise UsageError(
            'A quote is not closed. Put the reason in matching quotes: --reason "fix login".'
        ) from None


def _flags(words: list[str]) -> tuple[list[str], dict[str, str]]:
    positional: list[str] = []
    flags: dict[str, str] = {}
    it = iter(words)
    for word in it:
        if not word.startswith("--"):
            positional.append(word)
            continue
        name, eq, value = word.partition("=")
        if name not in FLAGS:
            raise UsageError(f"Unknown option '{_clip(name)}'.{_did_you_mean(name, FLAGS)}"
                             f" Options: {', '.join(FLAGS)}.")
        if not eq:
            value = next(it, "")
        if not value.strip():
            raise UsageError(f'{name} needs a value: {name} "what this deploy is for".')
        if len(value) > MAX_REASON:
            raise UsageError(f"The reason is {len(value)} characters; keep it under {MAX_REASON}.")
        if any(ord(c) < 32 and c not in "\t" for c in value):
            raise UsageError("The reason contains control characters; use plain text.")
        flags[name] = value.strip()
    return positional, flags


def _arity(args: list[str], low: int, high: int, usage: str) -> None:
    if not low <= len(args) <= high:
        raise UsageError(f"That is not a command I know: expected `{usage}`.\n\n{USAGE}")


def _did_you_mean(word: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _clip(text: str, limit: int = 40) -> str:
    """Echo user input back safely: short, and without Slack mention/link syntax."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.replace("<", "‹").replace(">", "›").replace("`", "'")


def parse_deployment_ref(value: str) -> int:
    """A button's value names a deployment by id; anything else was tampered with."""
    if not value.isdigit() or len(value) > 12:
        raise UsageError("That button is not valid any more. Use `/deploy status` instead.")
    return int(value)
