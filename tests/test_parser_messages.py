"""What a user reads after a mistyped command: the whole sentence, word for word, and the
limits (arity, length, suggestions) at their exact edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.engine.requests import (
    Control,
    Deploy,
    FreezeEnv,
    Help,
    LockEnv,
    Rollback,
    UnlockEnv,
    UsageError,
)
from commands import grammar
from commands.actions import parse_ref as parse_deployment_ref
from commands.catalog import Catalog
from commands.grammar import USAGE
from tests.test_parser import CATALOG, parse


def refusal(text: str, catalog: Catalog = CATALOG) -> str:
    with pytest.raises(UsageError) as err:
        parse(text, catalog)
    return str(err.value)


def expected(usage: str) -> str:
    return f"That is not a command I know: expected `{usage}`.\n\n{USAGE}"


@pytest.mark.parametrize(("text", "usage"), [
    ("api staging v1 extra", "/deploy <service> <env> [version]"),
    ("status api web", "/deploy status [service]"),
    ("history api staging x", "/deploy history <service> [env]"),
    ("audit", "/deploy audit <service> [env]"),
    ("rollback api", '/rollback <service> <env> [version] [--reason "why"]'),
    ("rollback api staging v1 x", '/rollback <service> <env> [version] [--reason "why"]'),
    ("promote api", "/deploy promote <service> <env>"),
    ("abort api staging x", "/deploy abort <service> <env>"),
    ("cancel api", "/deploy cancel <service> <env>"),
    ("cancel api staging x", "/deploy cancel <service> <env>"),
    ("lock", "/deploy lock <env> [service]"),
    ("unlock staging api x", "/deploy unlock <env> [service]"),
    ("freeze", '/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"'),
    ('freeze production api --until "2026-12-01 09:00" --reason x',
     '/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"'),
    ("unfreeze", "/deploy unfreeze <env>"),
    ("unfreeze staging api", "/deploy unfreeze <env>"),
])
def test_a_wrong_number_of_words_shows_the_usage(text: str, usage: str) -> None:
    assert refusal(text) == expected(usage)


@pytest.mark.parametrize(("text", "message"), [
    ("api production v1 --hotfix",
     'A hotfix needs a reason for the audit trail: --hotfix --reason "INC-123"'),
    ("api staging v1 --strategy canry",
     "Unknown strategy 'canry'. Did you mean 'canary'? Strategies: rolling, canary, blue-green."),
    ("api staging --for 2h",
     "Unknown option '--for'. Options here: --reason, --hotfix, --strategy, --allow-many-commits."),
    ("lock production --reason x --until y",
     "Unknown option '--until'. Options here: --reason, --for."),
    ("api st", "Unknown environment 'st' for api. Did you mean 'staging'? "
               "Known: dev, staging, production."),
    ("api s", "Unknown environment 's' for api. Known: dev, staging, production."),
    ("a" * 40 + " staging", f"Unknown service '{'a' * 40}'. Known: api, web, worker."),
    ("a" * 41 + " staging", f"Unknown service '{'a' * 40}…'. Known: api, web, worker."),
    ("ap`i staging", "Unknown service 'ap'i'. Did you mean 'api'? Known: api, web, worker."),
    ("lock production", '--reason is required here: '
                        '`/deploy lock <env> [service] --reason "why" [--for 2h]`.'),
    ("freeze production --reason x",
     '--until is required here: `/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason '
     '"why"`. The time is "YYYY-MM-DD HH:MM" in UTC, optionally followed by a time zone such '
     'as Europe/Berlin.'),
    ("api staging v1 --reason", '--reason needs a value, e.g. --reason "what this is for".'),
    ("api staging v1 --reason=--hotfix",
     '--reason needs a value, e.g. --reason "what this is for".'),
    ("api staging v1 --reason " + "r" * 501, "The reason is 501 characters; keep it under 500."),
    ("api staging v1 --reason 'a\x07b'", "The reason contains control characters; use plain text."),
    ("x" * 1001, "That command is 1001 characters long; the limit is 1000. "
                 "Shorten the --reason and try again."),
    ('api staging v1 --reason "unclosed',
     'A quote is not closed. Put the reason in matching quotes: --reason "fix login".'),
    ('freeze production --until "2026-12-01 09:00"',
     '--reason is required here: '
     '`/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"`.'),
    ("rollback worker dev", "Unknown environment 'dev' for worker. Known: staging."),
    ("history worker dev", "Unknown environment 'dev' for worker. Known: staging."),
    ("promote worker dev", "Unknown environment 'dev' for worker. Known: staging."),
    ("cancel worker dev", "Unknown environment 'dev' for worker. Known: staging."),
    ("rollback apu staging", "Unknown service 'apu'. Did you mean 'api'? Known: api, web, worker."),
    ("pause apu staging", "Unknown service 'apu'. Did you mean 'api'? Known: api, web, worker."),
])
def test_refusals_read_exactly(text: str, message: str) -> None:
    assert refusal(text) == message


def test_the_longest_reason_and_a_tab_are_accepted() -> None:
    assert parse("api staging --reason " + "r" * 500, CATALOG) == Deploy(
        service="api", env="staging", reason="r" * 500)
    assert parse("api staging --reason 'a\tb'", CATALOG) == Deploy(
        service="api", env="staging", reason="a\tb")


def test_a_command_of_exactly_the_length_limit_is_read() -> None:
    padded = "api staging" + " " * (1000 - len("api staging"))
    assert len(padded) == 1000 and parse(padded, CATALOG) == Deploy(service="api", env="staging")


def test_strategy_and_controls_are_parsed() -> None:
    assert parse("api staging v1 --strategy blue-green", CATALOG) == Deploy(
        service="api", env="staging", version="v1", strategy="blue-green")
    assert parse("pause web staging", CATALOG) == Control(action="pause", service="web",
                                                          env="staging")
    assert parse('rollback api staging v1 --reason "bad"', CATALOG) == Rollback(
        service="api", env="staging", version="v1", reason="bad")
    assert parse("rollback web dev", CATALOG) == Rollback(service="web", env="dev")
    assert parse("unlock staging web", CATALOG) == UnlockEnv(env="staging", service="web")
    assert parse("abort worker staging", CATALOG) == Control(action="abort", service="worker",
                                                             env="staging")


def test_environments_default_to_those_of_the_services_in_order() -> None:
    catalog = Catalog({"api": ["dev", "staging"], "web": ["staging", "qa"]})
    assert refusal("lock prod --reason x", catalog) == (
        "Unknown environment 'prod'. Known: dev, staging, qa.")


def test_a_button_value_is_at_most_twelve_digits() -> None:
    assert parse_deployment_ref("9" * 12) == 999_999_999_999
    with pytest.raises(UsageError) as err:
        parse_deployment_ref("9" * 13)
    assert str(err.value) == "That button is not valid any more. Use `/deploy status` instead."


# --- versions: the rule that was broken, and the characters, shown safely ----------------

HINT = "Give the version as your CI names it, for example v1.4.2 or 2026.11.26-3."
CHARSET = ("Versions use letters, digits and . _ / + - (for example v1.4.2 or "
           "2026.11.26-3).")


@pytest.mark.parametrize(("version", "message"), [
    ("v1..2", "Version 'v1..2' contains '..', which versions may not (it climbs paths and "
              f"means a range in git). {HINT}"),
    ("v1.lock", f"Version 'v1.lock' ends with '.lock', which git refs may not. {HINT}"),
    ("-v1", "Version '-v1' starts with '-': a deploy command would read it as an option. "
            f"Drop the leading '-'. {HINT}"),
    # the character set is checked before '..' (only '-' and '@{' come first)
    ("v1..;2", f"Version 'v1..;2' contains characters Shipbot does not accept: ';'. {CHARSET}"),
    # echoed back: the first 40 characters, Slack's <, > and ` defused; the characters
    # themselves listed in order of code point
    ("<@U123>`" + "x" * 32 + "y" * 8,
     "Version '‹@U123›'" + "x" * 32 + "' contains characters Shipbot does not accept: "
     f"'<' '>' '@' '`'. {CHARSET}"),
])
def test_a_refused_version_names_the_rule(version: str, message: str) -> None:
    assert refusal(f"api staging {version}") == message


def test_invisible_characters_in_a_version_are_listed_escaped() -> None:
    """Printable characters are shown as they are (a backslash too); control characters
    and whitespace are shown escaped, so the user can see what to remove."""
    assert refusal("api staging 'v1\\2\x07\t'") == (
        "Version 'v1\\2\x07\t' contains characters Shipbot does not accept: "
        f"'\\x07' '\\t' '\\'. {CHARSET}")


# --- durations (--for) ---------------------------------------------------------------------

@pytest.mark.parametrize(("duration", "expected"), [
    ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
    ("1h30m", timedelta(minutes=90)),
    ("90s", timedelta(seconds=90)),
    ("365d", timedelta(days=365)),
])
def test_a_lock_for_a_duration(duration: str, expected: timedelta) -> None:
    assert parse(f"lock production --reason x --for {duration}", CATALOG) == LockEnv(
        env="production", reason="x", duration=expected)


@pytest.mark.parametrize(("duration", "message"), [
    ("0m", "A duration must be longer than zero."),
    ("0d0h", "A duration must be longer than zero."),
    ("366d", "A duration must be at most 365 days."),
    ("364d24h1s", "A duration must be at most 365 days."),
    ("x" * 40 + "yyyyy",
     f"'{'x' * 40}' is not a duration. Use forms like 30m, 2h, 1d or 1h30m."),
])
def test_a_duration_out_of_bounds_is_refused(duration: str, message: str) -> None:
    assert refusal(f"lock production --reason x --for {duration}") == message


# --- points in time (--until); NOW is 2026-11-26 12:00 UTC ---------------------------------

WHEN = 'Use "YYYY-MM-DD HH:MM" in UTC, optionally followed by a time zone such as Europe/Berlin.'


@pytest.mark.parametrize(("until", "expected"), [
    ("2026-12-01 09:00 utc", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
    ("2026-12-01 09:00 UTC", datetime(2026, 12, 1, 9, 0, tzinfo=UTC)),
    ("2026-12-01 9:30", datetime(2026, 12, 1, 9, 30, tzinfo=UTC)),
    ("2026-11-26 12:01", datetime(2026, 11, 26, 12, 1, tzinfo=UTC)),
])
def test_a_freeze_until(until: str, expected: datetime) -> None:
    assert parse(f'freeze production --until "{until}" --reason x', CATALOG) == FreezeEnv(
        env="production", until=expected, reason="x")


@pytest.mark.parametrize(("until", "message"), [
    ("2026-11-26 12:00", "2026-11-26 12:00 UTC is in the past. Give a future time."),
    ("x" * 40 + "yyyyy", f"'{'x' * 40}' is not a date and time I understand. {WHEN}"),
    ("2026-13-01 09:00 America/Argentina/Buenos_Aires",
     f"'2026-13-01 09:00 America/Argentina/Bueno' is not a valid date. {WHEN}"),
    ("2026-12-01 09:00 Mars/" + "x" * 35 + "yyyyy",
     f"Unknown time zone 'Mars/{'x' * 35}'. Use names like Europe/Berlin."),
])
def test_a_freeze_until_that_cannot_be_used_is_refused(until: str, message: str) -> None:
    assert refusal(f'freeze production --until "{until}" --reason x') == message


# --- help, the reserved names, and a word only loosely like a subcommand -------------------

USAGE_TEXT = """*Usage*
• `/deploy <service> <env> [version] [--reason "why"] [--hotfix] [--strategy rolling|canary|blue-green] [--allow-many-commits]` — deploy (default: the latest build)
• `/deploy help [command]` — this help, or one command's
• `/deploy status [service]` — what runs where, locks, freezes, and what is in progress
• `/deploy history <service> [env]` — the last 10 deployments
• `/deploy audit <service> [env]` — recent decisions: requests, approvals, locks, overrides
• `/deploy cancel <service> <env>` — stop a deployment before it reaches the target
• `/deploy promote <service> <env>` — skip the current wait of a canary or blue-green rollout
• `/deploy pause <service> <env>` — hold a rollout where it is (it rolls back after its pause timeout)
• `/deploy resume <service> <env>` — go on from a pause, or past a manual gate
• `/deploy abort <service> <env>` — stop a rollout and move traffic back to the old version
• `/deploy lock <env> [service] --reason "why" [--for 2h]` — stop deploys to an environment
• `/deploy unlock <env> [service]` — lift a lock
• `/deploy freeze <env> --until "YYYY-MM-DD HH:MM" --reason "why"` — no deploys until a time (UTC, or with a zone such as Europe/Berlin)
• `/deploy unfreeze <env>` — lift the freezes of an environment
• `/rollback <service> <env> [version] [--reason "why"]` — put the previous version back (or `/deploy rollback …`)
*Examples*
• `/deploy api staging`
• `/deploy api production v1.4.2 --reason "fix login timeout"`
• `/deploy api production v1.4.3 --hotfix --reason "INC-123"`"""  # noqa: E501


def test_the_usage_reads_exactly() -> None:
    """`/deploy help`, word for word: the bare deploy first, then each subcommand in table
    order with its flags (required bare, optional in brackets), then the examples."""
    assert grammar.USAGE == USAGE_TEXT
    # USAGE is built once at import; building it again checks the builder itself.
    assert grammar._usage() == USAGE_TEXT


def test_help_about_help_is_the_whole_usage() -> None:
    assert parse("help help", CATALOG) == Help(topic="help")
    assert grammar.help_text("help") == grammar.help_text(None) == USAGE_TEXT


def test_services_named_like_a_subcommand_are_reported() -> None:
    assert grammar.reserved_names(["api", "status", "web", "lock"]) == [
        "services.status: 'status' is a /deploy subcommand; choose another name",
        "services.lock: 'lock' is a /deploy subcommand; choose another name",
    ]
    assert grammar.reserved_names(["api", "web"]) == []


def test_a_word_only_loosely_like_a_subcommand_is_read_as_a_service() -> None:
    """'sta' is 2·3/9 ≈ 0.67 similar to 'status', under the 0.75 needed to be taken for a
    subcommand: it is an unknown service."""
    assert refusal("sta staging") == "Unknown service 'sta'. Known: api, web, worker."
