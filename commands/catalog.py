"""The names a command may use (services, environments) and the words for a name that
is not one of them: "did you mean", and user input echoed back safely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rapidfuzz import fuzz, process

from bot.values import UsageError

LISTED_SERVICES = 30  # an unknown service's reply lists the services up to this many


class Catalog:
    """The names a command may use: services, environments, and which go together."""

    def __init__(self, services: Mapping[str, Sequence[str]],
                 environments: Sequence[str] | None = None) -> None:
        self.services = dict(services)
        self.environments = list(environments or dict.fromkeys(
            e for envs in self.services.values() for e in envs))

    def suggestion(self, name: str) -> str:
        """``did_you_mean`` over the services."""
        return did_you_mean(name, self.services)

    def service(self, name: str) -> str:
        if name in self.services:
            return name
        raise UsageError(f"Unknown service '{clip(name)}'.{self.suggestion(name)}"
                         f" {self._known_services()}")

    def _known_services(self) -> str:
        """The list while it helps; past a screenful, how many (a 300-name list buries
        the suggestion, and every unknown name made a 3.6 KB reply)."""
        if len(self.services) <= LISTED_SERVICES:
            return f"Known: {', '.join(sorted(self.services))}."
        return f"It is none of the {len(self.services)} services configured here."

    def env(self, service: str | None, name: str) -> str:
        envs = self.services[service] if service else self.environments
        if name in envs:
            return name
        scope = f" for {service}" if service else ""
        raise UsageError(
            f"Unknown environment '{clip(name)}'{scope}.{did_you_mean(name, envs)}"
            f" Known: {', '.join(envs)}."
        )


def did_you_mean(word: str, choices: Sequence[str] | Mapping[str, object]) -> str:
    """The closest name at 60 % similarity or more (difflib's cutoff), else one that
    starts with ``word``. rapidfuzz, not difflib: over 600 services difflib took ~1.5 ms
    of an unknown name's ack, rapidfuzz a few microseconds."""
    names = list(choices)
    best = process.extractOne(word, names, scorer=fuzz.ratio, score_cutoff=60)
    close = [best[0]] if best else [
        n for n in names if len(word) >= 2 and n.startswith(word)][:1]
    return f" Did you mean '{close[0]}'?" if close else ""


def clip(text: str, limit: int = 40) -> str:
    """Echo user input back safely: short, and without Slack mention/link syntax."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.replace("<", "‹").replace(">", "›").replace("`", "'")
