"""Parsing of the values inside commands and config: durations and points in time.

Pure functions; errors are ``UsageError``s that show the accepted format.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from commands.model import UsageError

VERSION_RE = re.compile(r"^[A-Za-z0-9._/+-]{1,128}$")
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
    if VERSION_RE.match(raw):
        return raw
    if len(raw) > 128:
        raise UsageError(f"Version is {len(raw)} characters long; the limit is 128.")
    bad = sorted({c for c in raw if not re.match(r"[A-Za-z0-9._/+-]", c)})
    shown = " ".join(f"'{c}'" if c.isprintable() and not c.isspace() else repr(c) for c in bad)
    clipped = raw[:40].replace("<", "‹").replace(">", "›").replace("`", "'")
    raise UsageError(
        f"Version '{clipped}' contains characters Shipbot does not accept: {shown}. "
        "Versions use letters, digits and . _ / + - (for example v1.4.2 or 2026.11.26-3)."
    )
