"""The gitlab stanza in shipbot.yml: defaults, capabilities, actionable messages, the
schema, redaction of both token variables, and the bundle the registry builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.cli import main
from bot.config import ConfigError, parse_config
from bot.redact import REDACTED, Redactor, secret_env_names
from bot.settings import Settings
from integrations.base import Capability
from integrations.gitlab import GitLabProvider
from integrations.registry import ProviderContext, build_ci, build_deploy

GL = {"provider": "gitlab", "project": "acme/api"}


def config(ci: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"environments": {"staging": {}},
            "services": {"api": {"channel": "#deploys-api", "ci": ci or GL,
                                 "deploy": {"provider": "command", "argv": ["d"]}}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_a_gitlab_stanza_loads_with_its_defaults() -> None:
    ci = parse_config(config()).services["api"].ci
    assert ci is not None and ci.provider == "gitlab"
    assert ci.capabilities() == {Capability.CANCEL, Capability.COMPARE}
    dumped = ci.model_dump()
    assert dumped["token_env"] == "GITLAB_TOKEN" and dumped["trigger_token_env"] is None
    assert dumped["base_url"] == "https://gitlab.com" and dumped["ref"] == "main"
    assert dumped["variables"] == {"SHIPBOT_SERVICE": "{service}", "SHIPBOT_ENV": "{env}",
                                   "SHIPBOT_VERSION": "{version}"}
    assert dumped["correlation_variable"] == "SHIPBOT_CORRELATION_ID"
    latest = parse_config(config({**GL, "latest_version": {"tag_pattern": "v*"},
                                  "compare": False})).services["api"].ci
    assert latest is not None
    assert latest.capabilities() == {Capability.CANCEL, Capability.LATEST_VERSION}


@pytest.mark.parametrize(("project", "stored"), [
    (1234, "1234"), ("1234", "1234"), ("acme/platform/api", "acme/platform/api"),
    ("acme%2Fplatform%2Fapi", "acme/platform/api"), ("/acme/api/", "acme/api"),
])
def test_a_project_is_an_id_or_a_path(project: Any, stored: str) -> None:
    ci = parse_config(config({**GL, "project": project})).services["api"].ci
    assert ci is not None and ci.model_dump()["project"] == stored


@pytest.mark.parametrize(("change", "problem"), [
    ({"provider": "gitlabs"}, "services.api.ci.provider: unknown provider 'gitlabs' (did "
     "you mean 'gitlab'?); known: command, github_actions, gitlab"),
    ({"project": "api"}, "services.api.ci.project: must be the numeric project id or its "
     "path group/project (subgroups allowed, as in the project's URL), not 'api'"),
    ({"token_env": "glpat-abc123abc123abc123"}, "services.api.ci.token_env: must be the NAME "
     "of the environment variable holding the token (e.g. GITLAB_TOKEN), never the token "
     "itself"),
    ({"token": "glpat-abc123abc123abc123"}, "services.api.ci: token: never write a token in "
     "shipbot.yml; export it and name the variable in token_env (e.g. token_env: "
     "GITLAB_TOKEN) or trigger_token_env"),
    ({"trigger_token": "glpat-abc123abc123abc123"}, "services.api.ci: trigger_token: never "
     "write a token in shipbot.yml; export it and name the variable in token_env (e.g. "
     "token_env: GITLAB_TOKEN) or trigger_token_env"),
    ({"trigger_token_env": "GITLAB_TOKEN"}, "services.api.ci: trigger_token_env: a trigger "
     "token cannot follow or cancel pipelines; name a different variable than token_env"),
    ({"ref": "release/{verison}"}, "services.api.ci.ref: unknown placeholder {verison} "
     "(allowed: {service}, {env}, {version})"),
    ({"variables": {"SHIPBOT_CORRELATION_ID": "x"}}, "services.api.ci: variables: "
     "SHIPBOT_CORRELATION_ID is the correlation variable, which Shipbot fills itself"),
    ({"variables": {"bad-name": "x"}}, "services.api.ci: variables: 'bad-name' is not a "
     "valid variable name (letters, digits and _)"),
    ({"base_url": "ftp://gitlab.example.com"}, "services.api.ci.base_url: url must be "
     "http:// or https:// with a host"),
    ({"latest_version": {"branch": "main", "tag_pattern": "v*"}},
     "services.api.ci.latest_version: set exactly one of branch or tag_pattern"),
])
def test_bad_gitlab_settings_say_what_to_fix(change: dict[str, Any], problem: str) -> None:
    found = problems(config({**GL, **change}))
    assert found == [problem]
    assert "glpat-abc123" not in json.dumps(found)


def test_a_bot_setting_is_refused_as_either_token_variable() -> None:
    for field in ("token_env", "trigger_token_env"):
        [problem] = problems(config({**GL, field: "SLACK_BOT_TOKEN"}))
        assert problem.startswith(f"services.api.ci.{field}: SLACK_BOT_TOKEN is one of "
                                  "Shipbot's own settings")


def test_the_project_is_the_one_required_setting() -> None:
    assert problems(config({"provider": "gitlab"})) == [
        "services.api.ci.project: required setting is missing"]


def test_a_self_managed_base_url_may_be_given_with_or_without_the_api_path() -> None:
    for url in ("https://git.example.com", "https://git.example.com/",
                "https://git.example.com/api/v4", "https://git.example.com/api/v4/"):
        ci = parse_config(config({**GL, "base_url": url})).services["api"].ci
        assert ci is not None and ci.model_dump()["base_url"] == "https://git.example.com"


def test_the_schema_has_the_gitlab_provider(capsys) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "GitLabConfig" in json.dumps(schema["$defs"]["ServiceConfig"]["properties"]["ci"])
    gitlab = schema["$defs"]["GitLabConfig"]["properties"]
    assert gitlab["provider"]["const"] == "gitlab"
    assert {"project", "ref", "ref_from_version", "variables", "token_env",
            "trigger_token_env", "base_url", "latest_version", "compare",
            "timeout_seconds", "max_poll_seconds"} <= set(gitlab)


def test_both_token_variables_values_are_redacted_everywhere() -> None:
    parsed = parse_config(config({**GL, "token_env": "CI_TOKEN",
                                  "trigger_token_env": "CI_TRIGGER"}))
    assert {"CI_TOKEN", "CI_TRIGGER"} <= secret_env_names(parsed)
    settings = Settings(SLACK_BOT_TOKEN="xoxb-test")  # type: ignore[arg-type]
    redactor = Redactor.for_bot(settings, parsed, {"CI_TOKEN": "plain-looking-value-42",
                                                   "CI_TRIGGER": "another-plain-value-7"})
    assert redactor.text("GitLab said: plain-looking-value-42 and another-plain-value-7") \
        == f"GitLab said: {REDACTED} and {REDACTED}"


@pytest.mark.parametrize("token", ["glpat-" + "A1b2C3d4E5f6G7h8I9j0", "glptt-" + "0f" * 20,
                                   "gldt-" + "x" * 20])
def test_gitlab_token_shapes_are_redacted_wherever_they_come_from(token: str) -> None:
    assert Redactor().text(f"curl -H 'PRIVATE-TOKEN: {token}' ...") == \
        f"curl -H 'PRIVATE-TOKEN: {REDACTED}' ..."
    assert Redactor().text(f"echo {token}") == f"echo {REDACTED}"


def test_the_registry_builds_a_changelog_source_only_when_compare_is_on(tmp_path: Path
                                                                        ) -> None:
    ctx = ProviderContext(state_dir=tmp_path, environ={})
    on = parse_config(config()).services["api"].ci
    off = parse_config(config({**GL, "compare": False})).services["api"].ci
    assert on is not None and off is not None
    bundle = build_ci(on, ctx)
    assert isinstance(bundle.ci, GitLabProvider) and bundle.changes is bundle.ci
    assert build_ci(off, ctx).changes is None
    deploy = build_deploy(on, ctx)
    assert isinstance(deploy.target, GitLabProvider)
    assert (deploy.traffic, deploy.health, deploy.rollback) == (None, None, None)
