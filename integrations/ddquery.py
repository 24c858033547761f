"""Datadog metric query templates: check them at config load, fill them per track.

The same placeholders as the PromQL templates (``integrations.promql``): ``{service}``,
``{env}``, ``{track}``, ``{version}`` and ``{window}``, filled in one pass. A label
placeholder must be a tag value inside a scope, right after its key:
``sum:trace.http.request.errors{service:{service},version:{version}}.as_count()``.
``{window}`` is whole seconds outside any scope, for ``.rollup(sum, {window})``.

Datadog tags hold only letters, digits and ``_ - : . /`` (ingestion turns any other
character into ``_`` and upper case into lower case), so a value is lowercased and a
``+`` (as in ``1.2.0+build.7``) becomes ``_``, as Datadog stored it; anything else
(``,`` ``}`` ``(`` spaces, ``*``, ``!``, quotes) would close the scope or widen the filter,
and is refused.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta

from integrations.metrics import MetricsError
from integrations.promql import TEMPLATE_PLACEHOLDERS, TRACKS

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# A tag key right before the placeholder, at the start of a scope term.
_TAG_KEY_BEFORE = re.compile(r"(?:^|[{,(!\s])[A-Za-z][A-Za-z0-9_.\-/]*:$")
_AFTER_VALUE = frozenset("},) \t\n")
_TAG_VALUE = re.compile(r"[a-z0-9_.:/\-]+")
_ALLOWED_INPUT = re.compile(r"[A-Za-z0-9_.:/+\-]+")
COUNT_FIELDS = ("requests_query", "errors_query")


def _depths(template: str) -> list[int]:
    """The scope depth at each placeholder (placeholders themselves are not braces)."""
    depth, found, i = 0, [], 0
    while i < len(template):
        match = _PLACEHOLDER.match(template, i)
        if match:
            found.append(depth)
            i = match.end()
            continue
        if template[i] == "{":
            depth += 1
        elif template[i] == "}":
            depth -= 1
            if depth < 0:
                raise ValueError("a '}' closes no scope")
        i += 1
    if depth:
        raise ValueError("a '{' scope is not closed")
    return found


def check_template(template: str) -> str:
    """Validate placeholder names and placement, so a typo fails at config load."""
    if not template.strip():
        raise ValueError("the query must not be empty")
    depths = _depths(template)
    for match, depth in zip(_PLACEHOLDER.finditer(template), depths, strict=True):
        name = match.group(1)
        if name not in TEMPLATE_PLACEHOLDERS:
            names = ", ".join(f"{{{n}}}" for n in TEMPLATE_PLACEHOLDERS)
            raise ValueError(f"unknown placeholder {{{name}}} (allowed: {names})")
        if name == "window":
            if depth:
                raise ValueError("{window} is seconds for .rollup(sum, {window}); it must "
                                 "not be inside a {...} scope")
            continue
        after = template[match.end():match.end() + 1]
        if (not depth or not _TAG_KEY_BEFORE.search(template[:match.start()])
                or (after and after not in _AFTER_VALUE)):
            raise ValueError(f"{{{name}}} must be a whole tag value inside a scope, right "
                             f"after its key, e.g. metric{{{name}:{{{name}}}}}")
    return template


def check_count_template(template: str) -> str:
    """requests_query/errors_query: interval counts, so ``.as_count()`` and no ``cumsum``.

    Shipbot adds the counts up since the step started itself (see ``DatadogProvider.
    increase``); a rate (the default for counts out of the API) or an already
    accumulated series would be added up wrongly.
    """
    check_template(template)
    if ".as_count()" not in template:
        raise ValueError("a Datadog count query must end in .as_count() (per-interval "
                         "counts, which Shipbot adds up since the step started), e.g. "
                         "sum:trace.http.request.hits{service:{service},"
                         "track:{track}}.as_count()")
    if "cumsum(" in template:
        raise ValueError("drop cumsum(): Shipbot adds the interval counts up since the "
                         "step started itself")
    return template


def tag_value(name: str, value: str) -> str:
    """``value`` as Datadog stores it as a tag; a value that could not be one is refused."""
    if not _ALLOWED_INPUT.fullmatch(value) or len(value) > 200:
        raise MetricsError(
            f"{name} value {value[:60]!r} cannot be used in a Datadog query: only letters, "
            "digits and . _ : / + - are allowed"
        )
    stored = value.lower().replace("+", "_")
    assert _TAG_VALUE.fullmatch(stored)
    return stored


def window_seconds(window: str | float | timedelta) -> str:
    """Whole seconds (at least 1) for ``.rollup(..., {window})``; "1m" is "60"."""
    if isinstance(window, str):
        match = re.fullmatch(r"([0-9]+)(ms|s|m|h|d)", window)
        if not match:
            raise MetricsError(f"window {window[:40]!r} is not a duration like 30s, 1m or 1h")
        unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        seconds = int(match.group(1)) * unit
    else:
        seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    if not (math.isfinite(seconds) and seconds > 0):
        raise MetricsError(f"window must be a positive duration, not {seconds!r} seconds")
    return str(max(1, math.ceil(seconds)))


def render_query(
    template: str, *, service: str | None = None, env: str | None = None,
    track: str | None = None, version: str | None = None,
    window: str | float | timedelta | None = None,
) -> str:
    """Fill a template in one pass; inserted values are never re-scanned."""
    try:
        check_template(template)
    except ValueError as exc:
        raise MetricsError(f"invalid Datadog query template: {exc}") from exc
    if track is not None and track not in TRACKS:
        raise MetricsError(f"track must be canary or baseline, not {track!r}")
    given = {"service": service, "env": env, "track": track, "version": version}
    values = {k: tag_value(k, v) for k, v in given.items() if v is not None}
    if window is not None:
        values["window"] = window_seconds(window)

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise MetricsError(f"the query uses {{{name}}} but no {name} was given")
        return values[name]

    return _PLACEHOLDER.sub(fill, template)
