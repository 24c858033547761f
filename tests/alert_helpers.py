"""Helpers for alert-thread tests: payloads as Alertmanager's and Grafana's docs show them,
posting them with the bearer token, deploying versions, and finding the alert thread."""

from __future__ import annotations

import copy
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select

from bot.config import ShipbotConfig, parse_config
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.local import LocalBot
from bot.store.models import AlertThread, Deployment
from tests.conftest import eventually, make_config
from tests.test_deploy_flow import deployments

ZERO = "0001-01-01T00:00:00Z"


@pytest.fixture
async def quiet(fake_slacks: Callable[..., Awaitable[FakeSlack]]) -> FakeSlack:
    """A fake Slack without rate limits (import it to use it). Why: alert threads and
    rollouts post a dozen replies to one channel within seconds; at Slack's 1 post/s the
    bot's retry handler copes, but six of these tests then outlast their 15 s waits (tried
    on 14 files: 6 failed, the slowest that passed took 25 s). The limits have their own
    tests (test_fake_slack), and the deploy, approval and restart tests run with them on."""
    return await fake_slacks(rate_limits=False)


def iso(when: datetime | None = None) -> str:
    return (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def am_alert(labels: dict[str, str], *, status: str = "firing", starts_at: str | None = None,
             ends_at: str = ZERO, annotations: dict[str, str] | None = None,
             fingerprint: str = "1a30ba71cca2921f") -> dict[str, Any]:
    """One entry of alerts[] as in Alertmanager's webhook_config docs."""
    return {"status": status, "labels": labels,
            "annotations": annotations if annotations is not None else {
                "summary": "5xx above 5%", "description": "api 5xx ratio is 7%",
                "runbook_url": "https://runbooks.example/api-5xx"},
            "startsAt": starts_at or iso(), "endsAt": ends_at,
            "generatorURL": "http://prometheus.example:9090/graph?g0.expr=rate",
            "fingerprint": fingerprint}


def am_payload(*alerts: dict[str, Any], group_key: str = '{}:{alertname="HighErrorRate"}',
               status: str | None = None) -> dict[str, Any]:
    """Alertmanager's webhook body (version 4), around ``alerts``."""
    common = alerts[0]["labels"] if alerts else {}
    return {
        "version": "4", "groupKey": group_key, "truncatedAlerts": 0,
        "status": status or ("firing" if any(a["status"] == "firing" for a in alerts)
                             else "resolved"),
        "receiver": "shipbot", "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093", "alerts": list(alerts),
    }


# Shaped exactly as the example body in Grafana's webhook notifier docs (unified alerting).
GRAFANA_DOCS_PAYLOAD: dict[str, Any] = {
    "receiver": "My Super Webhook", "status": "firing", "orgId": 1,
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
        "annotations": {"description": "The system has high memory usage",
                        "runbook_url": "https://myrunbook.com/runbook/1234",
                        "summary": "This alert was triggered for zone us-1"},
        "startsAt": "2021-10-12T09:51:03.157076+02:00", "endsAt": ZERO,
        "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
        "fingerprint": "c6eadffa33fcdf37",
        "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&"
                      "matchers=alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
        "dashboardURL": "", "panelURL": "", "values": {"B": 44.23943737541908, "C": 1},
    }, {
        "status": "firing",
        "labels": {"alertname": "High CPU usage", "team": "blue", "zone": "eu-1"},
        "annotations": {"description": "The system has high CPU usage",
                        "runbook_url": "https://myrunbook.com/runbook/1234",
                        "summary": "This alert was triggered for zone eu-1"},
        "startsAt": "2021-10-12T09:56:03.157076+02:00", "endsAt": ZERO,
        "generatorURL": "https://play.grafana.org/alerting/d1rdpdv7k/edit",
        "fingerprint": "bc97ff14869b13e3",
        "silenceURL": "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&"
                      "matchers=alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1",
        "dashboardURL": "", "panelURL": "", "values": {"B": 44.23943737541908, "C": 1},
    }],
    "groupLabels": {}, "commonLabels": {"team": "blue"}, "commonAnnotations": {},
    "externalURL": "https://play.grafana.org/", "version": "1", "groupKey": "{}:{}",
    "truncatedAlerts": 0, "title": "[FIRING:2]  (blue)", "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = T2\n - team = blue\n - zone = us-1\n",
}


def grafana_payload(labels: dict[str, str], *, status: str = "firing",
                    starts_at: str | None = None, ends_at: str = ZERO,
                    fingerprint: str = "c6eadffa33fcdf37") -> dict[str, Any]:
    """The docs' body with one alert of ours (same fields, our labels and times)."""
    data = copy.deepcopy(GRAFANA_DOCS_PAYLOAD)
    alert = data["alerts"][0]
    alert.update(status=status, labels=labels, startsAt=starts_at or iso(), endsAt=ends_at,
                 fingerprint=fingerprint, dashboardURL="https://grafana.example/d/web")
    data.update(alerts=[alert], status=status, commonLabels=labels)
    return data


def alert_config(tmp_path: Path, services: dict[str, Any] | None = None,
                 **top: Any) -> ShipbotConfig:
    """The test config plus an ``alerts:`` section and per-service changes."""
    data = make_config(tmp_path).model_dump(mode="json")
    data["alerts"] = {"default_channel": "#alerts", "env_aliases": {"stg": "staging"},
                      **top.pop("alerts", {})}
    for name, changes in (services or {}).items():
        data["services"][name].update(changes)
    data.update(top)
    return parse_config(data)


async def post(bot: LocalBot, source: str, payload: Any = None, *, token: str | None = None,
               content: bytes | None = None, headers: dict[str, str] | None = None
               ) -> httpx.Response:
    token = bot.webhook_token if token is None else token
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    body = content if content is not None else json.dumps(payload).encode()
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{bot.url}/webhooks/{source}", content=body, headers=sent)


async def deploy(bot: LocalBot, text: str) -> Deployment:
    """Run `/deploy <text>` and wait until it has finished; returns the deployment."""
    before = len(await deployments(bot))
    await bot.driver.command(text)

    async def done() -> Deployment | None:
        deps = await deployments(bot)
        return deps[before] if len(deps) > before and deps[before].finished_at else None

    return await eventually(done)


async def threads(bot: LocalBot) -> list[AlertThread]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(AlertThread).order_by(AlertThread.id))).all())


def alert_roots(bot: LocalBot, channel: str, name: str = "") -> list[dict[str, Any]]:
    """Alert root messages in ``channel`` (their header names the alert)."""
    return [m for m in bot.slack.messages(channel)
            if m.get("blocks") and m["blocks"][0]["type"] == "header"
            and m["blocks"][0]["text"]["text"].startswith(("🔥", "✅"))
            and name in m["blocks"][0]["text"]["text"]]


async def alert_thread(bot: LocalBot, channel: str, replies: int = 1,
                       name: str = "") -> dict[str, Any]:
    """Wait for one alert root in ``channel`` with at least ``replies`` replies."""
    async def check() -> dict[str, Any] | None:
        roots = alert_roots(bot, channel, name)
        return roots[0] if roots and len(roots[0]["replies"]) >= replies else None

    return await eventually(check)


def texts(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks", []), ensure_ascii=False) + message.get("text", "")


def card_of(bot: LocalBot, channel: str, dep_id: int) -> dict[str, Any]:
    """The status card of deployment ``dep_id``."""
    return next(m for m in bot.slack.messages(channel)
                if f"Deployment #{dep_id}" in texts(m))
