"""Alert-thread Block Kit builders on their JSON, and the alerts/auto_rollback config."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bot.config import ConfigError
from bot.config_alerts import AutoRollbackConfig
from bot.devtools.fake_slack_blocks import block_errors
from bot.engine.requests import Rollback, UsageError
from bot.slack.blocks_alerts import (
    ALERT_ACK_ACTION,
    ALERT_DISMISS_ACTION,
    ALERT_REDEPLOY_ACTION,
    ALERT_ROLLBACK_ACTION,
    alert_root,
    safe_url,
    suspect_message,
)
from bot.store.models import AlertThread, Deployment
from commands.catalog import Catalog
from commands.parser import parse
from tests.alert_helpers import alert_config

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
WINDOW = timedelta(hours=2)


def thread(**changes: object) -> AlertThread:
    payload = {"summary": "5xx above 5%", "description": "api 5xx ratio is 7%",
               "generator_url": "http://prom.example/graph", "runbook_url": "https://rb/x",
               "dashboard_url": None, "silence_url": "http://am.example/#/silences/new",
               "labels": {"alertname": "HighErrorRate", "service": "api"}}
    base: dict[str, object] = dict(
        id=7, source="alertmanager", fingerprint="f", service="api", env="production",
        status="firing", name="HighErrorRate", severity="critical",
        payload=json.dumps(payload), started_at=T0, created_at=T0, updated_at=T0,
        channel="#deploys-api", rollback_to="v1.4.1", suspect_deployment_id=12)
    base.update(changes)
    return AlertThread(**base)


def dep(**changes: object) -> Deployment:
    base: dict[str, object] = dict(
        id=12, request_key="k", service="api", env="production", version="v1.4.2",
        previous_version="v1.4.1", requester="U0ALICE", state="succeeded", channel="#d",
        created_at=T0 - timedelta(minutes=10), updated_at=T0,
        finished_at=T0 - timedelta(minutes=4, seconds=10))
    base.update(changes)
    return Deployment(**base)


def labels_of(blocks: list[dict]) -> list[str]:
    return [e["text"]["text"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_root_of_a_firing_alert() -> None:
    text, blocks = alert_root(thread(), firing=1, now=T0)
    assert blocks[0] == {"type": "header", "text": {
        "type": "plain_text", "text": "🔥 HighErrorRate — api production"}}
    fields = [f["text"] for f in blocks[1]["fields"]]
    assert fields == ["*Severity*\ncritical", "*Started*\n2026-11-25 10:00:00 UTC",
                      "*Where*\napi production", "*Status*\nFiring"]
    assert blocks[2]["text"]["text"] == "*5xx above 5%*\napi 5xx ratio is 7%"
    assert blocks[3]["elements"][0]["text"] == (
        "<http://prom.example/graph|Source> · <https://rb/x|Runbook> · "
        "<http://am.example/#/silences/new|Silence>")
    assert text == "🔥 HighErrorRate — api production (critical): 5xx above 5%"
    assert block_errors(blocks) == []


def test_root_of_an_alert_whose_notes_are_blank() -> None:
    """Whitespace is no text: no empty section (Slack refuses it), no "name: " fallback."""
    for notes in ({"summary": " ", "description": "\n"}, {"description": "  "}):
        text, blocks = alert_root(thread(payload=json.dumps({**notes, "labels": {}})),
                                  firing=1, now=T0)
        assert block_errors(blocks) == []
        assert text == "🔥 HighErrorRate — api production (critical)"
        assert [b["type"] for b in blocks] == ["header", "section", "context"]


def test_root_when_resolved_and_acknowledged() -> None:
    resolved = thread(status="resolved", resolved_at=T0 + timedelta(minutes=14),
                      acknowledged_by="U0BOB")
    _, blocks = alert_root(resolved, firing=0, now=T0)
    assert blocks[0]["text"]["text"] == "✅ Resolved after 14m 00s — HighErrorRate"
    assert blocks[1]["fields"][3]["text"] == "*Status*\nResolved after 14m 00s"
    assert any("Acknowledged by <@U0BOB>" in json.dumps(b) for b in blocks)


def test_root_stays_within_slack_limits_with_huge_alert_text() -> None:
    payload = {"summary": "s" * 5000, "description": "<d>" * 5000, "labels": {
        f"l{i}": "v" * 200 for i in range(30)}}
    big = thread(name="N" * 255, payload=json.dumps(payload), service=None, env=None)
    text, blocks = alert_root(big, firing=3, now=T0)
    assert block_errors(blocks) == []
    assert len(blocks[0]["text"]["text"]) == 150 and len(text) <= 3000
    assert "&lt;d&gt;" in blocks[2]["text"]["text"]


@pytest.mark.parametrize(("url", "ok"), [
    ("https://grafana.example/d/x?from=now-1h", True),
    ("http://prom:9090/graph?g0.expr=rate(x%5B5m%5D)", True),
    ("javascript:alert(1)", False),
    ("https://x.example/|<!here>", False),
    ("https://x.example/a b", False),
    ("ftp://x.example/", False),
    (None, False),
])
def test_only_plain_http_links_are_shown(url: object, ok: bool) -> None:
    assert (safe_url(url) is not None) is ok


def test_suspect_offers_rollback_not_the_deploy_and_acknowledge() -> None:
    text, blocks = suspect_message(thread(), dep(), None, None, WINDOW, "https://slack/p1")
    assert text.startswith(":mag: *Suspect deployment*: #12 `v1.4.2` (was `v1.4.1`) by "
                           "<@U0ALICE>, finished 4m 10s before the alert started.")
    assert "<https://slack/p1|deployment thread>" in text
    actions = blocks[-1]
    assert actions["block_id"] == "alert:7"
    assert [(e["action_id"], e["text"]["text"], e["value"]) for e in actions["elements"]] == [
        (ALERT_ROLLBACK_ACTION, "Roll back to v1.4.1", "7"),
        (ALERT_DISMISS_ACTION, "Not the deploy", "7"),
        (ALERT_ACK_ACTION, "Acknowledge", "7")]
    confirm = actions["elements"][0]["confirm"]
    assert confirm["text"]["text"] == "production goes back from `v1.4.2` to `v1.4.1`."
    assert actions["elements"][0]["style"] == "danger"
    assert block_errors(blocks) == []


def test_suspect_after_rollback_dismissal_and_auto_rollback() -> None:
    rollback = dep(id=13, kind="rollback", version="v1.4.1", requester="U0BOB",
                   state="deploying", finished_at=None)
    _, blocks = suspect_message(thread(), dep(), rollback, None, WINDOW)
    assert labels_of(blocks) == ["Acknowledge"]
    assert "rollback #13 to `v1.4.1` by <@U0BOB>" in json.dumps(blocks)
    _, blocks = suspect_message(thread(dismissed_by="U0CAROL"), dep(), None, None, WINDOW)
    assert labels_of(blocks) == ["Acknowledge"] and "<@U0CAROL>: not the deploy" in \
        json.dumps(blocks)
    # Automatic: Redeploy once the rollback has finished, and not after a redeploy.
    auto = thread(auto_rollback=True, acknowledged_by="U0BOB")
    _, blocks = suspect_message(auto, dep(), rollback, None, WINDOW)
    assert labels_of(blocks) == []
    done = dep(id=13, kind="rollback", version="v1.4.1", state="succeeded")
    _, blocks = suspect_message(auto, dep(), done, None, WINDOW)
    assert labels_of(blocks) == ["Redeploy v1.4.2"]
    assert blocks[-1]["elements"][0]["action_id"] == ALERT_REDEPLOY_ACTION
    again = dep(id=14, kind="redeploy", state="deploying", finished_at=None)
    _, blocks = suspect_message(auto, dep(), done, again, WINDOW)
    assert labels_of(blocks) == [] and "redeploy #14 of `v1.4.2`" in json.dumps(blocks)


def test_suspect_without_a_deployment_or_an_earlier_version() -> None:
    text, blocks = suspect_message(thread(suspect_deployment_id=None), None, None, None, WINDOW)
    assert text == (":mag: No deployment of api to production finished in the 2h 00m before "
                    "this alert, so there is no suspect and no rollback to offer.")
    assert labels_of(blocks) == ["Acknowledge"]
    _, blocks = suspect_message(thread(rollback_to=None), dep(), None, None, WINDOW)
    assert labels_of(blocks) == ["Acknowledge"]
    assert "nothing to roll back to" in json.dumps(blocks)
    text, _ = suspect_message(thread(env=None), None, None, None, WINDOW)
    assert "cannot tell which environment of api" in text
    # A deploy that finished after the alert started was rolling out when it fired.
    text, _ = suspect_message(thread(), dep(finished_at=T0 + timedelta(seconds=20)), None,
                              None, WINDOW)
    assert "was still finishing when the alert started (20s earlier)" in text


def test_long_versions_keep_buttons_within_limits() -> None:
    long = "v" + "1" * 127
    _, blocks = suspect_message(thread(rollback_to=long), dep(version="v" + "2" * 127), None,
                                None, WINDOW)
    assert block_errors(blocks) == []
    assert len(labels_of(blocks)[0]) == 75


def test_auto_rollback_rule() -> None:
    rule = AutoRollbackConfig.model_validate(
        {"alerts": ["HighErrorRate"], "severity": "critical", "within": "30m"})
    assert rule.matches("HighErrorRate", "critical", timedelta(minutes=29))
    assert rule.matches("HighErrorRate", "page", timedelta(minutes=1))
    assert not rule.matches("HighErrorRate", "warning", timedelta(minutes=1))
    assert not rule.matches("HighErrorRate", None, timedelta(minutes=1))
    assert not rule.matches("HighErrorRate", "critical", timedelta(minutes=31))
    assert not rule.matches("DiskFull", "critical", timedelta(minutes=1))
    custom = AutoRollbackConfig.model_validate({"alerts": ["X"], "severity": "sev1"})
    assert custom.matches("X", "SEV1", timedelta(0)) and not custom.matches("X", "sev2",
                                                                           timedelta(0))
    assert custom.within == timedelta(minutes=30)


def test_alerts_config_errors_have_locations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        alert_config(tmp_path, alerts={"default_channel": "alerts!", "sevice_labels": []},
                     services={"web": {"auto_rollback": {"alerts": [], "within": "soon"}}})
    problems = "\n".join(err.value.problems)
    assert "alerts.default_channel: must be a channel ID like C0123ABCD" in problems
    assert "alerts.sevice_labels: unknown setting" in problems
    assert "services.web.auto_rollback.alerts: List should have at least 1 item" in problems
    assert "services.web.auto_rollback.within: 'soon' is not a duration" in problems
    config = alert_config(tmp_path, alerts={"service_labels": ["app"], "suspect_window": "45m"})
    assert config.alerts.service_labels == ["app"]
    assert config.alerts.suspect_window == timedelta(minutes=45)


def test_env_aliases_must_name_environments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "alerts.env_aliases.prod: unknown environment 'prodution' "
            "(did you mean 'production'?)")):
        alert_config(tmp_path, alerts={"env_aliases": {"prod": "prodution"}})


def test_rollback_commands_parse() -> None:
    catalog = Catalog({"api": ["staging", "production"]})
    now = datetime.now(UTC)
    assert parse("rollback api production", catalog, now) == Rollback(
        service="api", env="production")
    assert parse('rollback api staging v1.4.1 --reason "5xx"', catalog, now) == Rollback(
        service="api", env="staging", version="v1.4.1", reason="5xx")
    for bad, says in [("rollback api", "expected `/rollback <service> <env> [version]"),
                      ("rollback apu staging", "Unknown service 'apu'. Did you mean 'api'?"),
                      ("rollback api staging v1 --hotfix", "Unknown option '--hotfix'"),
                      ("rollback api staging <v1>", "contains characters")]:
        with pytest.raises(UsageError, match=re.escape(says)):
            parse(bad, catalog, now)
