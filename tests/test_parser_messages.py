"""What a user reads after a mistyped command: the whole sentence, word for word, and the
limits (arity, length, suggestions) at their exact edges."""

from __future__ import annotations

import pytest

from bot.engine.requests import Control, Deploy, Rollback, UnlockEnv, UsageError
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
     "Unknown option '--for'. Options here: --reason, --hotfix, --strategy."),
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
