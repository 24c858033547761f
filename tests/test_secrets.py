"""Secrets never leave the bot: provider environments, what Slack is sent, acks, audit
rows and logs, end to end over real HTTP against the fake Slack."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlmodel import select

from bot.config import ConfigError, parse_config
from bot.settings import Settings
from bot.store.models import AuditEvent
from integrations.base import JobSpec, RunState
from integrations.command import CommandConfig, CommandProvider
from tests.conftest import eventually, make_config
from tests.test_command_provider import finish
from tests.test_deploy_flow import finished

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

PY = sys.executable
GHP = "ghp_" + "Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2"
DB_URL = "postgresql://shipbot:Pa55-w0rd-xyz@db:5432/shipbot"
# Prints its environment like `env` does, then a token a careless script might echo.
PRINT_ENV = textwrap.dedent(f"""
    import os
    for name, value in sorted(os.environ.items()):
        print(f"{{name}}={{value}}")
    print("pushing with https://{GHP}@github.com/acme/api")
""")


def slack_saw(bot: Any) -> str:
    return json.dumps([c.params for c in bot.slack.calls], ensure_ascii=False)


def bot_secrets(bot: Any) -> list[str]:
    return [bot.signing_secret, "xoxb-local-test", bot.webhook_token, "Pa55-w0rd-xyz"]


def in_bot_env(monkeypatch: pytest.MonkeyPatch, bot: Any) -> None:
    """The variables a real deployment's bot process has."""
    for name, value in {"SLACK_BOT_TOKEN": "xoxb-local-test", "DATABASE_URL": DB_URL,
                        "SLACK_SIGNING_SECRET": bot.signing_secret,
                        "SHIPBOT_WEBHOOK_TOKEN": bot.webhook_token}.items():
        monkeypatch.setenv(name, value)


async def test_build_printing_its_environment_posts_no_secret(
        make_bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "build.py"
    script.write_text(PRINT_ENV)
    ci = {"provider": "command", "argv": [PY, str(script)], "output_lines": 200}
    bot = await make_bot(make_config(tmp_path, ci=ci))
    in_bot_env(monkeypatch, bot)
    await bot.driver.command("api staging v1.0.0")
    [dep] = await finished(bot)
    assert dep.state == "succeeded"
    card = await eventually(lambda: _card_with_replies(bot, 2))
    build = json.dumps(card["replies"][1]["blocks"])
    assert "PATH=" in build  # the environment was shown...
    assert f"pushing with https://{GHP}" not in build and "[redacted]" in build
    for secret in [*bot_secrets(bot), GHP]:  # ...without anything secret in it
        assert secret not in slack_saw(bot)


async def _card_with_replies(bot: Any, count: int) -> dict | None:
    roots = bot.slack.messages("#deploys-api")
    return roots[0] if roots and len(roots[0]["replies"]) >= count else None


async def test_program_environment_is_exactly_the_allowed_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SLACK_BOT_TOKEN": "xoxb-1-2-abc", "SLACK_SIGNING_SECRET": "sig-123456",
                        "SHIPBOT_WEBHOOK_TOKEN": "hook-1234567890abcdef", "DATABASE_URL": DB_URL,
                        "AWS_SECRET_ACCESS_KEY": "unlisted-secret", "LC_ALL": "C.UTF-8",
                        "LANG": "C.UTF-8", "TZ": "UTC", "HOME": str(tmp_path),
                        "DEPLOY_REGION": "eu-west-1", "DEPLOY_TOKEN": "tok-9f8e7d6c"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "env.json"
    dump = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    config = CommandConfig(argv=[PY, "-c", dump], env={"STEP": "1"},
                           pass_env=["DEPLOY_REGION", "UNSET_NAME"], secret_env=["DEPLOY_TOKEN"],
                           latest_version_argv=[PY, "-c", "import os; print(*sorted(os.environ))"])
    provider = CommandProvider(config, tmp_path / "state")
    run_id = await provider.start(JobSpec(key="k1", service="api", env="dev", version="1"))
    assert (await finish(provider, run_id)).state is RunState.SUCCEEDED
    seen = json.loads(out.read_text())
    allowed = {"PATH", "HOME", "LANG", "TZ", "STEP", "DEPLOY_REGION", "DEPLOY_TOKEN"} | {
        n for n in os.environ if n.startswith("LC_")}
    # and where to report what a build produced, inside its own run directory
    assert set(seen) == allowed | {"SHIPBOT_OUTPUT"}
    assert Path(seen["SHIPBOT_OUTPUT"]).parent == provider.run_dir(run_id)
    assert (seen["DEPLOY_REGION"], seen["DEPLOY_TOKEN"], seen["STEP"]) == (
        "eu-west-1", "tok-9f8e7d6c", "1")
    assert set((await provider.latest_version("api") or "").split()) == allowed


async def test_secret_env_reaches_the_build_and_is_redacted_in_slack(
        make_bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "q7Zr2dK9pLx4")  # no known shape: only the config says
    monkeypatch.setenv("DEPLOY_REGION", "eu-west-1")
    got = tmp_path / "got.txt"
    script = tmp_path / "build.py"
    script.write_text("import os, sys\nopen(sys.argv[1], 'w').write(os.environ['DEPLOY_TOKEN'])\n"
                      "print('region', os.environ['DEPLOY_REGION'])\n"
                      "print('using', os.environ['DEPLOY_TOKEN'])\n")
    ci = {"provider": "command", "argv": [PY, str(script), str(got)],
          "pass_env": ["DEPLOY_REGION"], "secret_env": ["DEPLOY_TOKEN"]}
    bot = await make_bot(make_config(tmp_path, ci=ci))
    await bot.driver.command("api staging v1.0.1")
    [dep] = await finished(bot)
    assert dep.state == "succeeded"
    assert got.read_text() == "q7Zr2dK9pLx4"
    card = await eventually(lambda: _card_with_replies(bot, 2))
    build = json.dumps(card["replies"][1]["blocks"])
    assert "region eu-west-1" in build and "using [redacted]" in build
    assert "q7Zr2dK9pLx4" not in slack_saw(bot)


def _config_with(deploy: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"environments": {"dev": {}}, **extra, "services": {"api": {
        "channel": "#deploys", "deploy": {"provider": "command", "argv": ["d"], **(deploy or {})},
        **({"strategy": extra.pop("strategy")} if "strategy" in extra else {})}}}


@pytest.mark.parametrize(("data", "problem"), [
    (_config_with({"pass_env": ["SLACK_BOT_TOKEN"]}),
     "services.api.deploy.pass_env.0: SLACK_BOT_TOKEN is one of Shipbot's own settings"),
    (_config_with({"secret_env": ["OK_NAME", "DATABASE_URL"]}),
     "services.api.deploy.secret_env.1: DATABASE_URL is one of Shipbot's own settings"),
    (_config_with({"pass_env": ["SHIPBOT_WEBHOOK_TOKEN"]}), "SHIPBOT_WEBHOOK_TOKEN is one of"),
    (_config_with({"pass_env": ["deploy_token"]}), "services.api.deploy.pass_env.0: String "
                                                    "should match pattern"),
    (_config_with({"pass_env": ["TOKEN_A"], "secret_env": ["TOKEN_A"]}),
     "TOKEN_A is also in pass_env; list a secret in secret_env only"),
    (_config_with({"env": {"REGION": "x"}, "pass_env": ["REGION"]}),
     "REGION is also passed from the bot's environment"),
    (_config_with(metrics={"url": "http://prom:9090", "bearer_token_env": "SLACK_APP_TOKEN"}),
     "metrics.bearer_token_env: SLACK_APP_TOKEN is one of Shipbot's own settings"),
])
def test_config_refuses_passing_the_bots_own_settings(data: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert any(problem in p for p in info.value.problems), info.value.problems


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_bot_setting_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="one of Shipbot's own settings"):
        parse_config(_config_with({"pass_env": [name]}))


async def test_secret_in_a_reason_is_redacted_in_the_ack_and_the_audit_trail(make_bot) -> None:
    bot = await make_bot()
    reason = f"rotating token=Zq8pLx2dK9 and {bot.webhook_token}"
    assert (await bot.driver.command(f'lock staging --reason "{reason}"')).status_code == 200
    resp = await bot.driver.command("api staging v1.0.0", user="U0CAROL")
    ack = resp.text  # the refusal quotes the lock's reason
    assert "token=[redacted] and [redacted]" in ack
    assert "Zq8pLx2dK9" not in ack and bot.webhook_token not in ack
    async with bot.bot.sessions() as session:
        [event] = (await session.exec(select(AuditEvent).where(AuditEvent.action == "lock"))).all()
    assert "token=[redacted] and [redacted]" in event.detail
    assert "Zq8pLx2dK9" not in event.detail and bot.webhook_token not in event.detail
    assert "Zq8pLx2dK9" not in slack_saw(bot)


async def test_bad_signature_body_is_not_logged(make_bot, caplog: pytest.LogCaptureFixture) -> None:
    bot = await make_bot()
    caplog.set_level(logging.DEBUG)
    body = bot.driver.command_body("api production v9 --reason MARKER-unverified-body")
    headers = {"X-Slack-Request-Timestamp": "1700000000", "X-Slack-Signature": "v0=00",
               "Content-Type": "application/x-www-form-urlencoded"}
    resp = await bot.driver.http.post(bot.driver.url, content=body, headers=headers)
    assert resp.status_code == 401
    assert "Invalid request signature detected" in caplog.text
    assert "MARKER-unverified-body" not in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_served_logs_have_no_query_strings_or_unverified_bodies(tmp_path: Path) -> None:
    """`shipbot serve` as users run it: its stdout and stderr are what ends up in log storage."""
    config = tmp_path / "shipbot.yml"
    config.write_text(yaml.safe_dump(_config_with()))
    hook = "hook-0123456789abcdef0123"
    env = {"PATH": os.environ["PATH"], "SHIPBOT_CONFIG": str(config),
           "SLACK_BOT_TOKEN": "xoxb-serve-test-1", "SLACK_SIGNING_SECRET": "signing-0123456789",
           "SHIPBOT_WEBHOOK_TOKEN": hook, "SLACK_API_URL": "http://127.0.0.1:9/api/",
           "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "SHIPBOT_STATE_DIR": str(tmp_path)}
    port = _free_port()
    proc = await asyncio.create_subprocess_exec(
        PY, "-m", "bot.cli", "serve", "--host", "127.0.0.1", "--port", str(port), env=env,
        cwd=Path(__file__).parent.parent, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            async def up() -> bool:
                try:
                    return (await http.get(f"{base}/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(up, timeout=30)
            assert (await http.get(f"{base}/healthz?token=QUERY-{hook}")).status_code == 200
            bad = await http.post(f"{base}/slack/events", content=f"text=BODY-{hook}",
                                  headers={"X-Slack-Request-Timestamp": "1",
                                           "X-Slack-Signature": "v0=00"})
            assert bad.status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    logs = out.decode() + err.decode()
    assert '"GET /healthz HTTP/1.1" 200' in logs
    assert "QUERY-" not in logs and "BODY-" not in logs and hook not in logs


async def test_every_web_api_call_is_redacted_views_and_file_titles_too() -> None:
    """The client is the one choke point: modals and upload titles pass it like messages."""
    from bot.devtools.fake_slack import FakeSlack
    from bot.redact import Redactor
    from bot.slack.app import build_web_client

    async with FakeSlack() as fake:
        fake.add_channel("C1")
        client = build_web_client("xoxb-test", fake.base_url, Redactor(["sekret-value-1"]))
        root = (await client.chat_postMessage(channel="C1", text="token=abc123456"))["ts"]
        resp = await client.files_upload_v2(channel="C1", thread_ts=root, content=b"png",
                                            filename="chart.png", title=f"chart {GHP}")
        await client.views_open(trigger_id=fake.issue_trigger(), view={
            "type": "modal", "title": {"type": "plain_text", "text": "Reject"},
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "sekret-value-1"}}]})
        assert resp["file"]["title"] == "chart [redacted]"
        [view] = fake.calls_to("views.open")
        assert "[redacted]" in json.dumps(view.params) and "sekret" not in json.dumps(view.params)
        assert fake.messages("C1")[0]["text"] == "token=[redacted]"
        assert GHP not in json.dumps([c.params for c in fake.calls])
