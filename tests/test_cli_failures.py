"""Start-up failures (a database that cannot be used, bad settings, a broken config) are
short messages naming what to fix, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.postgres_fixture import free_port

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

ROOT = Path(__file__).resolve().parent.parent


def shipbot(tmp_path: Path, *args: str,
            **env: str | None) -> subprocess.CompletedProcess[str]:
    """``python -m bot.cli ARGS`` with working settings, changed by ``env`` (None: unset)."""
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("SLACK_", "SHIPBOT_", "DATABASE_URL"))}
    settings: dict[str, str | None] = {
        "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s" * 32,
        "SHIPBOT_CONFIG": str(ROOT / "shipbot.yml"),
        "SHIPBOT_STATE_DIR": str(tmp_path / "state"), **env}
    environ.update({k: v for k, v in settings.items() if v is not None})
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], cwd=tmp_path, env=environ,
                          capture_output=True, text=True, timeout=60, check=False)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [("serve", "--port", "0"), ("db", "upgrade")])
def test_a_host_that_does_not_resolve(tmp_path, command) -> None:
    line = one_line(shipbot(tmp_path, *command,
                            DATABASE_URL="postgres://shipbot:hunter2secret@nope/shipbot"))
    assert line == ("shipbot: cannot use the PostgreSQL server nope:5432/shipbot: its host name "
                    "does not resolve: check the host in DATABASE_URL.")


def test_a_refused_port(tmp_path) -> None:
    port = free_port()
    line = one_line(shipbot(tmp_path, "serve", "--port", "0",
                            DATABASE_URL=f"postgresql://shipbot@127.0.0.1:{port}/shipbot"))
    assert line == (f"shipbot: cannot use the PostgreSQL server 127.0.0.1:{port}/shipbot: the "
                    "connection was refused: is the server running, and on that port?")


def test_audit_export_of_a_database_never_migrated(tmp_path) -> None:
    line = one_line(shipbot(tmp_path, "audit", "export", "--since", "2026-01-01",
                            DATABASE_URL=f"sqlite:///{tmp_path}/empty.db"))
    assert line == (f"shipbot: the SQLite database {tmp_path}/empty.db has no Shipbot tables "
                    "yet: run `shipbot db upgrade` (or start `shipbot serve` once) with this "
                    "DATABASE_URL first.")


def test_audit_export_after_db_upgrade_works(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/ok.db"
    assert shipbot(tmp_path, "db", "upgrade", DATABASE_URL=url).returncode == 0
    result = shipbot(tmp_path, "audit", "export", "--since", "2026-01-01", DATABASE_URL=url)
    assert result.returncode == 0 and result.stdout == "", result.stderr


# --- bad settings: one line naming the setting, before anything starts ------------------


def test_serve_without_the_signing_secret_names_it(tmp_path) -> None:
    line = one_line(shipbot(tmp_path, "serve", "--port", "0", SLACK_SIGNING_SECRET=None))
    assert line == ("shipbot: SLACK_SIGNING_SECRET not set: export the value from your Slack "
                    "app's 'OAuth & Permissions' (bot token) and 'Basic Information' (signing "
                    "secret) pages.")


def test_a_setting_that_is_not_a_number(tmp_path) -> None:
    line = one_line(shipbot(tmp_path, "serve", "--port", "0", SHIPBOT_TICK_SECONDS="soon"))
    assert line == ("shipbot: Invalid environment settings: SHIPBOT_TICK_SECONDS: Input should "
                    "be a valid number, unable to parse string as a number")


def test_a_config_file_with_problems_lists_them(tmp_path) -> None:
    bad = tmp_path / "shipbot.yml"
    bad.write_text("services:\n  api:\n    channel: 42\n")
    result = shipbot(tmp_path, "serve", "--port", "0", SHIPBOT_CONFIG=str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-4:] == [
        "shipbot: the config has problems:",
        "  environments: required setting is missing",
        "  services.api.channel: Input should be a valid string",
        "  services.api.deploy: required setting is missing"]
