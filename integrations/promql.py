"""PromQL templates for canary analysis: check them at config load, fill them per track.

Templates are PromQL with ``{service}``, ``{env}``, ``{track}``, ``{version}`` and
``{window}`` placeholders, filled in one pass. Label values may only appear inside a
quoted string and may only contain ``[A-Za-z0-9._:/+-]``, so no value can close the
string and add PromQL of its own (``api"} or vector(1) #`` is rejected).

Kept apart from the provider because the config and the engine need templates without
any HTTP: they are plain text rules, testable without a server.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import AfterValidator

from integrations.metrics import MetricsError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
LABEL_PLACEHOLDERS = ("service", "env", "track", "version")
TEMPLATE_PLACEHOLDERS = (*LABEL_PLACEHOLDERS, "window")
TRACKS = ("canary", "baseline")
_LABEL_VALUE = re.compile(r"[A-Za-z0-9._:/+-]+")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d|w|y))+")


def _literal_spans(template: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where PromQL string literals and # comments are, to check placeholder placement.

    Knows "..." and '...' (backslash escapes) and `...` (raw). Spans are [start, end).
    """
    strings: list[tuple[int, int]] = []
    comments: list[tuple[int, int]] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch == "#":
            end = template.find("\n", i)
            end = n if end < 0 else end
            comments.append((i, end))
            i = end
        elif ch in "\"'`":
            start, i = i, i + 1
            while i < n and template[i] != ch:
                i += 2 if ch != "`" and template[i] == "\\" else 1
            if i >= n:
                raise ValueError("unterminated string literal in the query")
            i += 1
            strings.append((start, i))
        else:
            i += 1
    return strings, comments


def check_template(template: str) -> str:
    """Validate a PromQL template at config load: placeholder names and placement.

    A typo like ``{verison}`` fails here rather than at the first canary. Label
    placeholders must sit inside quotes (``service="{service}"``) because that is what
    makes the allowed value characters harmless; ``{window}`` must not (``[{window}]``).
    """
    if not template.strip():
        raise ValueError("the query must not be empty")
    strings, comments = _literal_spans(template)

    def within(spans: list[tuple[int, int]], match: re.Match[str]) -> bool:
        return any(s <= match.start() and match.end() <= e for s, e in spans)

    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1)
        if name not in TEMPLATE_PLACEHOLDERS:
            names = ", ".join(f"{{{n}}}" for n in TEMPLATE_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names})")
        if within(comments, match):
            continue  # harmless: values hold no newline, so a comment stays a comment
        quoted = within(strings, match)
        if name in LABEL_PLACEHOLDERS and not quoted:
            raise ValueError(f'{{{name}}} must be inside quotes, e.g. {name}="{{{name}}}"')
        if name == "window" and quoted:
            raise ValueError("{window} must not be inside quotes; use it as [{window}]")
    return template


PromQLTemplate = Annotated[str, AfterValidator(check_template)]


def format_window(window: str | float | timedelta) -> str:
    """A PromQL duration: ``"1m"`` as is, seconds or a timedelta as ``"90s"``/``"500ms"``."""
    if isinstance(window, str):
        if not _DURATION.fullmatch(window):
            raise MetricsError(f"window {window[:40]!r} is not a duration like 30s, 1m or 1h")
        return window
    seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    millis = round(seconds * 1000) if math.isfinite(seconds) else 0
    if millis <= 0:
        raise MetricsError(f"window must be a positive duration, not {seconds!r} seconds")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def render_query(
    template: str, *, service: str | None = None, env: str | None = None,
    track: str | None = None, version: str | None = None,
    window: str | float | timedelta | None = None,
) -> str:
    """Fill a template in one pass; inserted values are never re-scanned.

    Values come from deploy requests (i.e. from Slack users), so each is checked
    against the label-safe alphabet; a bad one is a ``MetricsError`` naming it.
    """
    try:
        check_template(template)
    except ValueError as exc:
        raise MetricsError(f"invalid query template: {exc}") from exc
    given = {"service": service, "env": env, "track": track, "version": version}
    values: dict[str, str] = {}
    for name, value in given.items():
        if value is None:
            continue
        if not _LABEL_VALUE.fullmatch(value) or len(value) > 200:
            raise MetricsError(
                f"{name} value {value[:60]!r} cannot be used in a query: only letters, "
                "digits and . _ : / + - are allowed"
            )
        values[name] = value
    if track is not None and track not in TRACKS:
        raise MetricsError(f"track must be canary or baseline, not {track!r}")
    if window is not None:
        values["window"] = format_window(window)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise MetricsError(f"the query uses {{{name}}} but no {name} was given")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)
