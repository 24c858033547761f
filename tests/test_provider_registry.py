"""The provider registry: the config's unions, schema, `config check` and capabilities
come from it; a github_actions stanza is validated with actionable messages."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from bot.cli import main
from bot.config import ConfigError, parse_config
from bot.redact import REDACTED, Redactor, secret_env_names
from bot.settings import Settings
from integrations.base import Capability
from integrations.registry import REGISTRY

GH = {"provider": "github_actions", "repository": "acme/api", "workflow": "build.yml",
      "ref": "main"}


def config(ci: dict[str, Any] | None = None, deploy: dict[str, Any] | None = None,
           **service: Any) -> dict[str, Any]:
    return {"environments": {"staging": {}},
            "services": {"api": {"channel": "#deploys-api", "ci": ci or GH,
                                 "deploy": deploy or {"provider": "command", "argv": ["d"]},
                                 **service}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_the_registry_declares_roles_and_capabilities() -> None:
    assert {name: (e.roles, sorted(e.capabilities)) for name, e in REGISTRY.items()} == {
        "command": (("ci", "deploy"), ["cancel", "health", "latest_version", "rollback",
                                       "traffic"]),  # a program cannot compare or check
        "github_actions": (("ci", "deploy"), ["cancel", "checks", "compare", "latest_version"]),
        "gitlab": (("ci", "deploy"), ["cancel", "compare", "latest_version"]),
        "helm": (("deploy",), ["cancel", "health", "rollback"]),
        "kubernetes": (("deploy",), ["cancel", "health", "rollback", "traffic"]),
        "webhook": (("deploy",), ["cancel", "rollback", "traffic"]),
        "argo_rollouts": (("deploy",), ["cancel", "health", "rollback", "traffic"]),
    }


def test_a_github_actions_stanza_loads_with_its_defaults() -> None:
    ci = parse_config(config()).services["api"].ci
    assert ci is not None and ci.provider == "github_actions"
    assert ci.capabilities() == {Capability.CANCEL, Capability.COMPARE}
    dumped = ci.model_dump()
    assert dumped["token_env"] == "GITHUB_TOKEN"
    assert dumped["base_url"] == "https://api.github.com"
    assert dumped["inputs"] == {"service": "{service}", "environment": "{env}",
                                "version": "{version}"}
    with_latest = parse_config(config({**GH, "latest_version": {"branch": "main"}}))
    assert Capability.LATEST_VERSION in with_latest.services["api"].ci.capabilities()


@pytest.mark.parametrize(("change", "problem"), [
    ({"provider": "github_action"}, "services.api.ci.provider: unknown provider "
     "'github_action' (did you mean 'github_actions'?); known: command, github_actions, "
     "gitlab"),
    ({"repository": "acme"}, "services.api.ci.repository: must be owner/name (e.g. acme/api), "
     "not 'acme'"),
    ({"workflow": "build"}, "services.api.ci.workflow: must be the workflow's file name "
     "(build.yml, as in .github/workflows/) or its numeric id, not 'build'"),
    ({"token_env": "ghp_abc123"}, "services.api.ci.token_env: must be the NAME of the "
     "environment variable holding the token (e.g. GITHUB_TOKEN), never the token itself"),
    ({"token": "ghp_abc123"}, "services.api.ci: token: never write the token in shipbot.yml; "
     "export it and name the variable in token_env (e.g. token_env: GITHUB_TOKEN)"),
    ({"ref": "release/{verison}"}, "services.api.ci.ref: unknown placeholder {verison} "
     "(allowed: {service}, {env}, {version})"),
    ({"inputs": {"shipbot_id": "x"}}, "services.api.ci: inputs: shipbot_id is the correlation "
     "input, which Shipbot fills itself"),
    ({"base_url": "ftp://ghe.example.com"}, "services.api.ci.base_url: url must be http:// "
     "or https:// with a host"),
    ({"latest_version": {"branch": "main", "tag_pattern": "v*"}},
     "services.api.ci.latest_version: set exactly one of branch or tag_pattern"),
])
def test_bad_github_settings_say_what_to_fix(change: dict[str, Any], problem: str) -> None:
    found = problems(config({**GH, **change}))
    assert found == [problem]
    assert "ghp_abc123" not in json.dumps(found)


def test_a_bot_setting_is_refused_as_the_token_variable() -> None:
    [problem] = problems(config({**GH, "token_env": "SLACK_BOT_TOKEN"}))
    assert problem.startswith("services.api.ci.token_env: SLACK_BOT_TOKEN is one of "
                              "Shipbot's own settings")


def test_missing_settings_are_each_named() -> None:
    assert problems(config({"provider": "github_actions"})) == [
        "services.api.ci.repository: required setting is missing",
        "services.api.ci.workflow: required setting is missing",
        "services.api.ci.ref: required setting is missing"]


def test_a_canary_on_a_target_without_traffic_is_refused_by_asking_the_config() -> None:
    data = config(deploy=GH, strategy={"kind": "canary", "steps": [50, 100]})
    assert problems(data) == [
        "services.api.strategy: canary needs a deploy target that can split traffic (the "
        "github_actions provider cannot; use the rolling strategy)"]
    data = config(strategy={"kind": "canary", "steps": [50, 100]})
    assert problems(data) == [
        "services.api.strategy: canary needs a deploy target that can split traffic (for the "
        "command provider: set_weight_argv, promote_argv and abort_argv)"]


def test_the_schema_has_every_registered_provider(capsys) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    ci = json.dumps(schema["$defs"]["ServiceConfig"]["properties"]["ci"])
    assert "CommandConfig" in ci and "GitHubActionsConfig" in ci
    github = schema["$defs"]["GitHubActionsConfig"]["properties"]
    assert github["provider"]["const"] == "github_actions"
    assert {"repository", "workflow", "ref", "inputs", "token_env", "base_url",
            "latest_version"} <= set(github)


def test_the_token_variables_value_is_redacted_everywhere() -> None:
    """token_env marks its variable secret, like secret_env: its value never reaches
    Slack, the logs or the audit trail, whatever shape it has."""
    parsed = parse_config(config({**GH, "token_env": "CI_TOKEN"}))
    assert "CI_TOKEN" in secret_env_names(parsed)
    default = parse_config(config(copy.deepcopy(GH)))
    assert "GITHUB_TOKEN" in secret_env_names(default)
    settings = Settings(SLACK_BOT_TOKEN="xoxb-test")  # type: ignore[arg-type]
    redactor = Redactor.for_bot(settings, parsed, {"CI_TOKEN": "plain-looking-value-42"})
    assert redactor.text("GitHub said: plain-looking-value-42 is bad") == \
        f"GitHub said: {REDACTED} is bad"
