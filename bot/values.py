"""Parsing of the values inside commands and config: durations, points in time,
versions. Pure functions; errors are ``UsageError``s that show the accepted format.

The configuration uses them too, so they sit below both it and ``commands``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class UsageError(Exception):
    """Input we cannot act on; the message tells the user how to fix it."""

VERSION_RE = re.compile(r"[A-Za-z0-9._/+-]+")  # the character set; rules below
_DURATION_RE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
WHEN_FORMAT = '"YYYY-MM-DD HH:MM" in UTC, optionally followed by a time zone such as Europe/Berlin'
_WHEN_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2})(?:\s+(\S+))?$")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``."""
    match = _DURATION_RE.match(text.strip().lower())
    if not text.strip() or not match or not any(match.groups()):
        raise UsageError(f"'{text[:40]}' is not a duration. Use forms like 30m, 2h, 1d or 1h30m.")
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    value = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
    if value <= timedelta(0):
        raise UsageError("A duration must be longer than zero.")
    if value > timedelta(days=365):
        raise UsageError("A duration must be at most 365 days.")
    return value


def parse_when(text: str, now: datetime) -> datetime:
    """A future point in time, e.g. ``2026-12-01 09:00`` or ``2026-12-01 09:00 Europe/Berlin``."""
    match = _WHEN_RE.match(text.strip())
    if not match:
        raise UsageError(f"'{text[:40]}' is not a date and time I understand. Use {WHEN_FORMAT}.")
    date, clock, zone = match.groups()
    try:
        tz = ZoneInfo(zone) if zone and zone.upper() != "UTC" else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"Unknown time zone '{zone[:40]}'. Use names like Europe/Berlin.") from None
    try:
        naive = datetime.fromisoformat(f"{date} {int(clock[:-3]):02d}{clock[-3:]}")
        when = naive.replace(tzinfo=tz)
    except ValueError:
        raise UsageError(f"'{text[:40]}' is not a valid date. Use {WHEN_FORMAT}.") from None
    if when <= now:
        raise UsageError(f"{when:%Y-%m-%d %H:%M %Z} is in the past. Give a future time.")
    return when


def parse_version(raw: str) -> str:
    """A version as git refs and container tags allow it: it reaches providers' argv and
    URLs, so anything that could read as an option or a path trick is refused by name."""
    if len(raw) > MAX_VERSION:
        raise UsageError(f"Version is {len(raw)} characters long; the limit is {MAX_VERSION}.")
    shown = _clip(raw)
    # An option or a reflog selector is named as such, before the character set.
    _check_rules(raw, shown, _VERSION_RULES[:2])
    if not VERSION_RE.fullmatch(raw):
        bad = sorted({c for c in raw if not VERSION_RE.fullmatch(c)})
        listed = " ".join(f"'{c}'" if c.isprintable() and not c.isspace() else repr(c)
                          for c in bad)
        raise UsageError(f"Version '{shown}' contains characters Shipbot does not accept: "
                         f"{listed}. Versions use letters, digits and . _ / + - "
                         "(for example v1.4.2 or 2026.11.26-3).")
    _check_rules(raw, shown, _VERSION_RULES[2:])
    return raw


def _check_rules(raw: str, shown: str, rules: tuple[tuple[Callable[[str], bool], str], ...]
                 ) -> None:
    for broken, rule in rules:
        if broken(raw):
            raise UsageError(f"Version '{shown}' {rule} {_VERSION_HINT}")


def _clip(raw: str) -> str:
    """Echo it back short and without Slack mention/link syntax."""
    return raw[:40].replace("<", "‹").replace(">", "›").replace("`", "'")


MAX_VERSION = 128
_VERSION_HINT = "Give the version as your CI names it, for example v1.4.2 or 2026.11.26-3."
# (is it broken?, what the rule is): git check-ref-format and OCI tag rules, named one by one.
_VERSION_RULES: tuple[tuple[Callable[[str], bool], str], ...] = (
    (lambda v: v.startswith("-"),
     "starts with '-': a deploy command would read it as an option. Drop the leading '-'."),
    (lambda v: "@{" in v, "contains '@{', which git refs may not."),
    (lambda v: ".." in v, "contains '..', which versions may not (it climbs paths and "
                          "means a range in git)."),
    (lambda v: "//" in v, "contains '//'; use a single '/' between parts."),
    (lambda v: v.startswith("/"), "starts with '/'; start with a letter or digit."),
    (lambda v: v.startswith("."), "starts with '.'; start with a letter or digit."),
    (lambda v: v.endswith(".lock"), "ends with '.lock', which git refs may not."),
    (lambda v: v.endswith("/"), "ends with '/'; drop the last '/'."),
    (lambda v: v.endswith("."), "ends with '.'; drop the last '.'."),
)
