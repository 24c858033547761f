"""Chat text → typed command, and the errors users see for bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.engine.requests import (
    AlertDecision,
    Approve,
    Audit,
    Cancel,
    Control,
    Deploy,
    FreezeEnv,
    Help,
    History,
    LockEnv,
    Status,
    Unfreeze,
    UnlockEnv,
    UsageError,
)
from commands import actions, grammar, parser
from commands.actions import parse_ref as parse_deployment_ref
from commands.catalog import Catalog

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def parse(text: str, catalog: Catalog) -> object:
    return parser.parse(text, catalog, NOW)


CATALOG = Catalog({"api": ["dev", "staging", "production"], "web": ["dev", "staging"],
                   "worker": ["staging"]})


@pytest.mark.parametrize(("text", "expected"), [
    ("api staging", Deploy(service="api", env="staging")),
    ("  api   staging  v1.4.2 ", Deploy(service="api", env="staging", version="v1.4.2")),
    ('api production v1.4.2 --reason "INC-42: fix login"',
     Deploy(service="api", env="production", version="v1.4.2", reason="INC-42: fix login")),
    ("api staging --reason=hotfix v2", Deploy(service="api", env="staging", version="v2",
                                              reason="hotfix")),
    ("api staging 2026.11.26-3+build/7_rc",
     Deploy(service="api", env="staging", version="2026.11.26-3+build/7_rc")),
    ("api staging v1 --reason “smart quotes from Slack”",
     Deploy(service="api", env="staging", version="v1", reason="smart quotes from Slack")),
    ("status", Status()),
    ("status web", Status(service="web")),
    ("history api", History(service="api")),
    ("history api production", History(service="api", env="production")),
    ("cancel api staging", Cancel(service="api", env="staging")),
    ("", Help()),
    ("api production v1.4.3 --hotfix --reason INC-123",
     Deploy(service="api", env="production", version="v1.4.3", reason="INC-123", hotfix=True)),
    ("api production v2.0.0 --allow-many-commits",
     Deploy(service="api", env="production", version="v2.0.0", allow_many_commits=True)),
    ('lock production --reason "db migration" --for 2h',
     LockEnv(env="production", reason="db migration", duration=timedelta(hours=2))),
    ("lock staging web --reason x", LockEnv(env="staging", service="web", reason="x")),
    ("unlock production", UnlockEnv(env="production")),
    ('freeze production --until "2026-12-01 09:00" --reason "year end"',
     FreezeEnv(env="production", until=datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
               reason="year end")),
    ('freeze production --until "2026-12-01 09:00 Europe/Berlin" --reason x',
     FreezeEnv(env="production", until=datetime(2026, 12, 1, 8, 0, tzinfo=UTC), reason="x")),
    ("unfreeze production", Unfreeze(env="production")),
    ("audit api production", Audit(service="api", env="production")),
    ("help", Help()),
])
def test_parses(text: str, expected: object) -> None:
    assert parse(text, CATALOG) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("apu staging", "Unknown service 'apu'. Did you mean 'api'? Known: api, web, worker."),
    ("api stagin", "Unknown environment 'stagin' for api. Did you mean 'staging'? "
                   "Known: dev, staging, production."),
    ("worker dev", "Unknown environment 'dev' for worker. Known: staging."),
    ("api staging v1;rm -rf /", "That is not a command I know"),
    ("api staging 'v1;rm -rf /'", "contains characters Shipbot does not accept: ' ' ';'"),
    ("api staging v1$(reboot)", "contains characters Shipbot does not accept: '$' '(' ')'"),
    ("api staging v1`id`", "contains characters Shipbot does not accept: '`'"),
    ("api staging v1|cat", "contains characters Shipbot does not accept: '|'"),
    ("api staging " + "v" * 129, "Version is 129 characters long; the limit is 128."),
    ("api staging v1 --reson x", "Unknown option '--reson'. Did you mean '--reason'?"),
    ("api production v1 --hotfix", "A hotfix needs a reason"),
    ("lock qa --reason x", "Unknown environment 'qa'. Known: dev, staging, production."),
    ("lock production", "--reason is required here"),
    ("lock production --reason x --for 2 hours", "Unknown service 'hours'"),
    ("lock production --reason x --for 2x", "'2x' is not a duration. Use forms like 30m, 2h"),
    ('freeze production --until tomorrow --reason x',
     "'tomorrow' is not a date and time I understand. Use \"YYYY-MM-DD HH:MM\" in UTC"),
    ('freeze production --until "2026-13-01 09:00" --reason x', "is not a valid date"),
    ('freeze production --until "2026-11-01 09:00" --reason x', "is in the past"),
    ('freeze production --until "2026-12-01 09:00 Mars/Base" --reason x',
     "Unknown time zone 'Mars/Base'"),
    ("status --hotfix", "Unknown option '--hotfix'. Options here: none."),
    ("api staging v1 --reason", "--reason needs a value"),
    ('api staging v1 --reason "unclosed', "A quote is not closed"),
    ("api", "That is not a command I know"),
    ("history", "expected `/deploy history <service> [env]`"),
    ("x" * 1001, "That command is 1001 characters long; the limit is 1000."),
    ("<@U123|bob> staging", "Unknown service '‹@U123|bob›'"),
])
def test_rejects_with_actionable_message(text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(text, CATALOG)
    assert message in str(err.value)


def test_malformed_input_shows_usage_with_examples() -> None:
    with pytest.raises(UsageError) as err:
        parse("api", CATALOG)
    assert '/deploy api production v1.4.2 --reason "fix login timeout"' in str(err.value)


@pytest.mark.parametrize("value", ["", "abc", "1;2", "-1", "9" * 13])
def test_button_value_must_be_a_deployment_id(value: str) -> None:
    with pytest.raises(UsageError):
        parse_deployment_ref(value)


def test_button_value_parses() -> None:
    assert parse_deployment_ref("42") == 42


# --- the subcommand table ----------------------------------------------------------------


@pytest.mark.parametrize(("text", "suggested"), [
    ("statsu", "/deploy status"), ("histroy api", "/deploy history"),
    ("unfreez production", "/deploy unfreeze"), ("rolback api dev", "/deploy rollback"),
])
def test_a_mistyped_subcommand_gets_a_did_you_mean(text: str, suggested: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(text, CATALOG)
    assert str(err.value) == (f"Unknown command or service '{text.split()[0]}'. Did you mean "
                              f"`{suggested}`? `/deploy help` lists the commands.")


def test_an_unknown_service_among_hundreds_gets_the_suggestion_not_the_list() -> None:
    many = Catalog({f"payments-{i:03}": ["dev"] for i in range(300)} | {"checkout": ["dev"]})
    with pytest.raises(UsageError) as err:
        parse("chekout dev", many)
    assert str(err.value) == ("Unknown service 'chekout'. Did you mean 'checkout'? It is none "
                              "of the 301 services configured here.")


def test_a_mistyped_service_is_still_a_service_first() -> None:
    with pytest.raises(UsageError) as err:
        parse("apu staging", CATALOG)
    assert str(err.value) == "Unknown service 'apu'. Did you mean 'api'? Known: api, web, worker."


@pytest.mark.parametrize("text", ["lock --help", "help lock", "lock production --help"])
def test_one_subcommands_help(text: str) -> None:
    command = parse(text, CATALOG)
    assert command == Help(topic="lock")
    assert grammar.help_text("lock") == (
        '`/deploy lock <env> [service] --reason "why" [--for 2h]` — stop deploys to an '
        'environment.\nExample: `/deploy lock production --reason "DB migration" --for 2h`')


def test_usage_lists_every_subcommand_with_its_flags() -> None:
    """USAGE is derived from the table: nothing can be left out of /deploy help."""
    lines = grammar.USAGE.splitlines()
    for name in grammar.SUBCOMMANDS:
        assert any(line.startswith(("• `/deploy " + name, "• `/" + name)) for line in lines), name
    assert any("[--strategy rolling|canary|blue-green]" in line for line in lines)
    assert grammar.help_text(None) == grammar.help_text("nonsense") == grammar.USAGE


@pytest.mark.parametrize("command", grammar.TABLE, ids=lambda c: c.name)
def test_each_usage_line_accepts_as_many_words_as_it_shows(command: grammar.Subcommand) -> None:
    """The arity is read from the usage line: one word more than it shows is refused."""
    _, high = command.arity
    with pytest.raises(UsageError) as err:
        parse(" ".join([command.name, *["x"] * (high + 1)]), CATALOG)
    assert f"expected `{command.usage}`" in str(err.value)


# --- button clicks: the same typed requests as the text grammar ----------------------------


@pytest.mark.parametrize(("family", "name", "request_"), [
    ("button", "cancel", Cancel(deployment_id=42)),
    ("button", "approve", Approve(deployment_id=42)),
    *(("button", n, Control(action=n, deployment_id=42))  # type: ignore[arg-type]
      for n in ("promote", "pause", "resume", "abort")),
    *(("alert", n, AlertDecision(thread_id=42, decision=n))  # type: ignore[arg-type]
      for n in ("rollback", "dismiss", "acknowledge", "redeploy")),
])
def test_a_recorded_click_is_the_request_its_button_names(family: str, name: str,
                                                          request_: object) -> None:
    assert actions.intent(family, name, "42") == request_


@pytest.mark.parametrize("name", ["promote", "pause", "resume", "abort"])
def test_the_rollout_and_alert_buttons_are_built_for_each_name(name: str) -> None:
    """ACTIONS is built once at import; building the click handlers again here checks the
    builders themselves (mutation testing cannot see code that only ran at import)."""
    assert actions._control(name)(7) == Control(action=name, deployment_id=7)  # type: ignore[arg-type]
    decision = {"promote": "rollback", "pause": "dismiss", "resume": "acknowledge",
                "abort": "redeploy"}[name]
    assert actions._alert(decision)(7) == AlertDecision(
        thread_id=7, decision=decision)  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "name", "value"), [
    ("button", "frobnicate", "42"), ("alert", "cancel", "42"), ("button", "rollback", "42"),
])
def test_a_click_on_a_button_we_do_not_render_is_refused(family: str, name: str,
                                                         value: str) -> None:
    with pytest.raises(actions.UnknownAction) as err:
        actions.intent(family, name, value)
    assert str(err.value) == "That button is not valid any more. Use `/deploy status` instead."


def test_a_known_button_with_a_tampered_value_is_refused() -> None:
    with pytest.raises(UsageError) as err:
        actions.intent("button", "cancel", "42; drop")
    assert not isinstance(err.value, actions.UnknownAction)
    assert str(err.value) == "That button is not valid any more. Use `/deploy status` instead."
