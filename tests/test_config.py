"""`shipbot.yml` validation and the `shipbot config` commands."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from bot.cli import main
from bot.config import ConfigError, load_config

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

ROOT = Path(__file__).parent.parent


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "shipbot.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path


def base() -> dict:
    return yaml.safe_load((ROOT / "shipbot.yml").read_text())


def test_example_config_is_valid_and_ordered() -> None:
    config = load_config(ROOT / "shipbot.yml")
    assert config.environment_order == ["dev", "staging", "production"]
    assert set(config.services) == {"api", "web", "worker"}
    assert config.environments_of("worker") == ["staging", "production"]


def test_check_reports_every_problem_with_location_and_suggestion(tmp_path: Path, capsys) -> None:
    data = base()
    data["services"]["api"]["deploy"]["provider"] = "comand"
    data["services"]["web"]["channel"] = "deploys web"
    data["services"]["worker"]["timeout"] = 3
    path = write(tmp_path, data)

    assert main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert ("services.api.deploy.provider: unknown provider 'comand' (did you mean 'command'?)"
            in out)
    assert "services.web.channel: must be a channel ID like C0123ABCD" in out
    assert "services.worker.timeout: unknown setting" in out


def test_check_names_unknown_environment_of_a_service(tmp_path: Path) -> None:
    data = base()
    data["services"]["worker"]["environments"] = ["stagin"]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert "unknown environment 'stagin' (did you mean 'staging'?)" in str(err.value)


def test_check_rejects_bad_placeholders_and_reserved_names(tmp_path: Path) -> None:
    data = base()
    data["services"]["api"]["deploy"]["argv"] = ["deploy.sh", "{verison}"]
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert "services.api.deploy.argv: unknown placeholder {verison}" in str(err.value)



def test_check_and_start_up_refuse_a_service_named_like_a_subcommand(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`/deploy status` could never mean the service: the config is refused, with where."""
    data = base()
    data["services"]["status"] = data["services"].pop("web")
    path = write(tmp_path, data)
    assert main(["config", "check", str(path)]) == 1
    assert "services.status: 'status' is a /deploy subcommand; choose another name" in \
        capsys.readouterr().out
    monkeypatch.setenv("SHIPBOT_CONFIG", str(path))
    assert main(["console", "--database", "sqlite:///:memory:"]) == 2
    assert "'status' is a /deploy subcommand" in capsys.readouterr().err


def test_check_reports_yaml_syntax_errors_with_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "services:\n  api: [unclosed\n"))
    assert "shipbot.yml:3:1: not valid YAML" in str(err.value)


def test_check_ok_and_schema(capsys) -> None:
    assert main(["config", "check", str(ROOT / "shipbot.yml")]) == 0
    assert "OK — 3 services, environments dev → staging → production" in capsys.readouterr().out
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "services" in schema["properties"]


async def test_check_names_unknown_user_groups_via_slack(tmp_path: Path) -> None:
    import asyncio
    import os
    import sys

    from bot.devtools.fake_slack import FakeSlack

    data = base()
    data["environments"]["production"]["approval"]["approvers"] = ["@sre-leadz", "U0CAROL"]
    path = write(tmp_path, data)
    async with FakeSlack() as slack:
        slack.add_usergroup("S0SRE", "sre-leads", ["U0BOB"])
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "config", "check", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "SLACK_BOT_TOKEN": "xoxb-check", "SLACK_API_URL": slack.base_url})
        out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()
    assert ("environments.production.approval.approvers: unknown user group @sre-leadz "
            "(did you mean @sre-leads?)") in out.decode()


def test_strategy_flag_picks_the_configured_kind_and_keeps_the_environments_gates(
        tmp_path: Path) -> None:
    data = base()
    web = data["services"]["web"]  # canary [10, 50, pause, 100] at service level
    web["strategies"] = {"production": {
        "kind": "rolling", "pause_timeout": "10m",
        "checks": [{"name": "prod-health", "url": "https://web.example.com/healthz"}]}}
    config = load_config(write(tmp_path, data))

    assert config.strategy_for("web", "production").kind == "rolling"
    canary = config.strategy_for("web", "production", "canary")
    assert canary.kind == "canary" and canary.steps == [10, 50, "pause", 100]
    assert [c.name for c in canary.checks] == ["prod-health"]  # never dropped by a flag
    assert canary.pause_timeout == timedelta(minutes=10)
    green = config.strategy_for("web", "production", "blue-green")
    assert green.kind == "blue-green" and [c.name for c in green.checks] == ["prod-health"]
    staging = config.strategy_for("web", "staging", "canary")
    assert staging == config.services["web"].strategy  # nothing to merge there
