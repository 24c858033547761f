"""One redaction step for everything that leaves the process.

A ``Redactor`` replaces secrets with ``[redacted]``: the values of the bot's own secret
settings (tokens, signing secret, the password inside ``DATABASE_URL``), the values of
every environment variable the config marks secret (``secret_env``, ``bearer_token_env``,
``token_env``, ``trigger_token_env``, ``private_key_env``: a key's lines one by one
too), and well-known token shapes wherever they come from (a build log, an error message,
a reason someone pasted). One instance is built per bot from its settings and config and
shared by the exits: the Slack Web API client, Bolt's ack bodies, the audit trail and the
log handlers. Structure is never touched: dict keys, list shapes and non-strings stay as
they are, so redacted Block Kit is still valid Block Kit.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import quote, unquote, urlsplit

from pydantic import BaseModel

from bot.settings import Settings

REDACTED = "[redacted]"
# A shorter value ("dev", "1", "true") would redact ordinary words everywhere.
MIN_SECRET_CHARS = 6
SECRET_SETTINGS = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN",
                   "SHIPBOT_WEBHOOK_TOKEN")
# Config fields whose value names environment variables holding secrets.
SECRET_ENV_FIELDS = ("secret_env", "bearer_token_env", "token_env",
                     "trigger_token_env", "private_key_env", "api_key_env", "app_key_env")

_KEY_BLOCK = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"
_KEY_END = r"-----END [A-Z0-9 ]*PRIVATE KEY-----"
_KEY_BLOCK_SHAPE = rf"{_KEY_BLOCK}(?:.*?{_KEY_END}|.*)"
# Base64 lines (16+ characters each) before an END; whitespace must separate them, and a
# line starts a run, or a long run without an END takes exponential time to reject. Even
# so, rejecting it costs a scan to the run's end from each of its lines: this shape is
# looked for only in a text with an END in it (a 96 KB base64 blob: 1.5 s otherwise).
_KEY_TAIL_SHAPE = (rf"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/=]{{16,}}(?:\s+[A-Za-z0-9+/=]{{16,}})*"
                   rf"\s*{_KEY_END}")
_TOKEN_SHAPES = (
    r"\bxox[a-z]-[A-Za-z0-9][A-Za-z0-9-]*",  # Slack: bot, user, refresh, client... tokens
    r"\bxapp-[A-Za-z0-9][A-Za-z0-9-]*",  # Slack app-level (Socket Mode) tokens
    r"\bgh[pousr]_[A-Za-z0-9]{20,}",  # GitHub personal, OAuth, user, server, refresh
    r"\bgithub_pat_[A-Za-z0-9_]{20,}",  # GitHub fine-grained personal access tokens
    # GitLab: personal/project/group access, pipeline trigger, deploy, runner, CI job...
    r"\bgl(?:pat|ptt|dt|rt|cbt|ft|oas|imt|soat|agent)-[A-Za-z0-9_-]{20,}",
    r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b",  # AWS access key ids
)
# A whole key block (or, when a tail or a limit cut it, from BEGIN to the end of the text,
# or from the first base64 line to END), and token shapes; leftmost first, in one pass.
_SHAPES = re.compile("|".join((_KEY_BLOCK_SHAPE, _KEY_TAIL_SHAPE, *_TOKEN_SHAPES)), re.DOTALL)
_SHAPES_WITHOUT_END = re.compile("|".join((_KEY_BLOCK_SHAPE, *_TOKEN_SHAPES)), re.DOTALL)
_HAS_KEY_END = re.compile(_KEY_END)
# ``password=x``, ``DEPLOY_TOKEN: x``, ``"secret": "x"``, ``client_secret='x'``: the key is
# kept, the value goes. Quoted values end at their quote, bare ones at a space or separator.
_ASSIGNMENT = re.compile(
    r"""(?P<key>\b[\w.-]*(?:password|passwd|token|secret)\w*["']?\s*[:=]\s*)"""
    r"""(?:(?P<q>["'])(?P<quoted>(?:(?!(?P=q))[^\n])+)(?P=q)"""
    r"""|(?!\[redacted\])(?P<bare>[^\s"',;&)\]}]+))""",
    re.IGNORECASE)
# ``scheme://user:password@host``: the password in any URL (a DSN in a driver's error).
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s/:@]*:)[^\s/@]+(?=@)",
                           re.IGNORECASE)
# The credentials a Web API call authenticates with go to Slack itself, not into a message.
_CREDENTIAL_ARGS = frozenset({"token", "client_id", "client_secret"})

T = TypeVar("T")


class Redactor:
    """Replaces known secret values and token shapes in text and nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS},
                        key=len, reverse=True)  # longest first: no half-redacted secret
        self._values = re.compile("|".join(map(re.escape, values))) if values else None

    @classmethod
    def for_bot(cls, settings: Settings, config: BaseModel | None,
                environ: Mapping[str, str]) -> Redactor:
        """The bot's secrets: its own settings and the env vars its config marks secret."""
        found = [v.get_secret_value() for name in SECRET_SETTINGS
                 if (v := getattr(settings, name)) is not None]
        found += database_password(settings.DATABASE_URL)
        names = secret_env_names(config) if config is not None else set()
        for name in sorted(names):
            value = environ.get(name)
            if value:
                found += [value, *_secret_lines(value)]
        return cls(found)

    def text(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(REDACTED, text)
        shapes = _SHAPES if _HAS_KEY_END.search(text) else _SHAPES_WITHOUT_END
        text = shapes.sub(REDACTED, text)
        text = _ASSIGNMENT.sub(_keep_key, text)
        return _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, text)

    def value(self, value: T) -> T:
        """``value`` with every string inside it redacted; keys and shapes unchanged.

        A string holding JSON (slack_sdk sends ``blocks`` and ``files`` that way) is
        redacted value by value and re-encoded, so no pattern can cut through its syntax.
        """
        return self._value(value)  # type: ignore[no-any-return]

    def _value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._string(value)
        if isinstance(value, Mapping):
            return {k: self._value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._value(v) for v in value)
        return value

    def _string(self, value: str) -> str:
        if value[:1] in ("[", "{"):
            try:
                parsed = json.loads(value)
            except ValueError:
                pass
            else:
                if isinstance(parsed, dict | list):
                    return json.dumps(self._value(parsed))
        return self.text(value)

    def api_args(self, args: dict[str, Any] | None) -> dict[str, Any] | None:
        """A Web API call's arguments, redacted except the credentials it sends to Slack."""
        if args is None:
            return None
        return {k: v if k in _CREDENTIAL_ARGS else self._value(v) for k, v in args.items()}


def _secret_lines(value: str) -> list[str]:
    """A multi-line secret's lines (a PEM key's base64, its newlines real or written
    out as backslash-n), so that a line quoted alone is redacted too; the BEGIN/END
    markers are no secret."""
    lines = value.replace("\\n", "\n").splitlines()
    if len(lines) < 2:
        return []
    return [line.strip() for line in lines if not line.strip().startswith("-----")]


def _keep_key(match: re.Match[str]) -> str:
    quote_mark = match.group("q") or ""
    return f"{match.group('key')}{quote_mark}{REDACTED}{quote_mark}"


def database_password(url: str) -> list[str]:
    """The password in ``DATABASE_URL``, as written (percent-encoded) and decoded."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    if not password:
        return []
    return [password, unquote(password), quote(unquote(password), safe="")]


def secret_env_names(config: BaseModel) -> set[str]:
    """Every env var name in a ``secret_env``, ``bearer_token_env``, ``token_env`` or
    ``private_key_env`` field, anywhere in the config tree, so a new provider with such a
    field is covered without a change here."""
    names: set[str] = set()
    stack: list[Any] = [config]
    while stack:
        item = stack.pop()
        if isinstance(item, BaseModel):
            for field in type(item).model_fields:
                child = getattr(item, field)
                if field in SECRET_ENV_FIELDS:
                    names.update([child] if isinstance(child, str) else child or [])
                else:
                    stack.append(child)
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return names


class RedactingFilter(logging.Filter):
    """A handler filter: the message, its arguments and any traceback, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.text
        message = record.getMessage()
        if redact(message) != message:
            if isinstance(record.args, tuple):  # kept a tuple: formatters may unpack it
                record.args = tuple(redact(a) if isinstance(a, str) else a
                                    for a in record.args)
            if redact(record.getMessage()) != record.getMessage():
                record.msg, record.args = redact(record.getMessage()), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
