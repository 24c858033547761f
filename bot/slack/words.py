"""What every renderer of the engine's facts shares: the rendered note, the table of
renderers (fact class → function), and the few phrases many notes use (command hints,
durations, times, result lines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from bot.clock import as_utc, human_duration
from bot.engine.facts import Fact, Line
from bot.mrkdwn import escape

F = TypeVar("F", bound=Fact)


@dataclass(frozen=True)
class Note:
    """A message's words: its sentence (mrkdwn), a program's output, a link to the run."""

    text: str
    output: str = ""
    link: str | None = None


Renderer = Callable[[Fact], Note]
RENDERERS: dict[type[Fact], Renderer] = {}


def renders(cls: type[F]) -> Callable[[Callable[[F], Note]], Callable[[F], Note]]:
    """Register the function that words facts of class ``cls``."""

    def register(fn: Callable[[F], Note]) -> Callable[[F], Note]:
        assert cls not in RENDERERS, f"two renderers for {cls.__name__}"
        RENDERERS[cls] = fn  # type: ignore[assignment]
        return fn

    return register


def command(*words: str | None) -> str:
    """A command to type, as inline code: ``/deploy api staging v1.2``."""
    return "`" + " ".join(w for w in words if w) + "`"


def deploy(*words: str | None) -> str:
    return command("/deploy", *words)


def took(seconds: float) -> str:
    return human_duration(seconds)


def hhmm(at: datetime) -> str:
    return f"{as_utc(at):%H:%M} UTC"


ICONS = {"pass": ":white_check_mark:", "fail": ":x:"}


def icon(outcome: str) -> str:
    return ICONS.get(outcome, ":grey_question:")


def result_lines(results: Sequence[Line]) -> str:
    return "\n".join(f"{icon(r.outcome)} {escape(r.text)}" for r in results)
