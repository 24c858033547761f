"""The vocabulary's base: ``Fact`` (a kind, a payload, the registry), untrusted text,
and the parts several facts share (result lines, an undecided analysis)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class _UntrustedText:
    """Marks a field whose text came from outside (users, programs, alert sources)."""

    def __repr__(self) -> str:
        return "UNTRUSTED"


UNTRUSTED = _UntrustedText()
Untrusted = Annotated[str, UNTRUSTED]
Outcome = Literal["pass", "fail", "unknown"]

FACTS: dict[str, type[Fact]] = {}


class Fact(BaseModel):
    """One thing that happened, as data. Subclasses set ``kind`` (and register by it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    kind: ClassVar[str] = ""
    MRKDWN: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.kind:
            assert cls.kind not in FACTS, f"two facts of kind {cls.kind!r}"
            assert len(cls.kind) <= 40, cls.kind  # the outbox column's width
            FACTS[cls.kind] = cls

    def payload(self) -> str:
        return self.model_dump_json()


def load(kind: str, payload: str | None) -> Fact | None:
    """The fact a row records; None for a kind (or a shape) this process does not know."""
    cls = FACTS.get(kind)
    if cls is None:
        return None
    try:
        return cls.model_validate_json(payload or "{}")
    except ValidationError:
        return None


class Line(BaseModel):
    """One result in a list (a post-deploy check, a metric's verdict)."""

    model_config = ConfigDict(frozen=True)
    outcome: Outcome
    text: Untrusted


class MetricLine(Line):
    """A metric's verdict at a canary check, with the canary's values so far in the step."""

    points: tuple[float | None, ...] = ()


class Undecided(BaseModel):
    """Why a canary analysis could not decide (the judges' explanations, raw)."""

    model_config = ConfigDict(frozen=True)
    score: float
    pass_score: float
    marginal: bool = False
    metrics: int = 0  # how many were judged
    undecided: tuple[Untrusted, ...] = ()  # their names
    reasons: tuple[Untrusted, ...] = ()
