"""The alert webhooks' edge: every bad input is refused with a reason, nothing is
recorded for it, and the bot keeps serving; unusable alerts are still shown, marked."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.settings import SettingsError, load_settings
from bot.store.models import AlertInstance, AlertThread, Outbox
from bot.web.webhooks import MAX_ALERT_BODY, authorized
from tests.alert_helpers import (
    alert_config,
    alert_roots,
    alert_thread,
    am_alert,
    am_payload,
    grafana_payload,
    post,
    texts,
    threads,
)
from tests.conftest import outbox_delivered
from tests.test_buttons_and_queries import buttons

GOOD = am_payload(am_alert({"alertname": "HighErrorRate", "service": "web", "env": "staging"}))


async def nothing_recorded(bot: LocalBot) -> None:
    async with bot.bot.sessions() as session:
        for table in (AlertThread, AlertInstance, Outbox):
            assert (await session.exec(select(table))).all() == [], table.__name__
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{bot.url}/healthz")).json() == {"ok": True, "database": "ok"}


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
async def test_missing_or_wrong_token_is_401(make_bot, tmp_path, quiet, source) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    payload = GOOD if source == "alertmanager" else grafana_payload({"service": "web"})
    missing = await post(bot, source, payload, token="")
    wrong = await post(bot, source, payload, token=bot.webhook_token[:-1] + "x")
    basic = await post(bot, source, payload, token="",
                       headers={"Authorization": f"Basic {bot.webhook_token}"})
    for resp in (missing, wrong, basic):
        assert resp.status_code == 401
        assert resp.json() == {"ok": False, "error": "missing or wrong bearer token"}
        assert resp.headers["www-authenticate"].startswith("Bearer")
    await nothing_recorded(bot)


async def test_webhooks_are_disabled_without_a_token(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet, webhook_token="")
    resp = await post(bot, "alertmanager", GOOD, token="anything-at-all-really")
    assert resp.status_code == 503
    assert resp.json()["error"] == "webhooks disabled: set SHIPBOT_WEBHOOK_TOKEN"
    await nothing_recorded(bot)


def test_short_tokens_are_refused_at_start() -> None:
    with pytest.raises(SettingsError, match="SHIPBOT_WEBHOOK_TOKEN: must be at least 16"):
        load_settings({"SHIPBOT_WEBHOOK_TOKEN": "hunter2"})
    assert load_settings({"SHIPBOT_WEBHOOK_TOKEN": ""}).SHIPBOT_WEBHOOK_TOKEN is None


def test_bearer_header_parsing() -> None:
    token = "t" * 32
    assert authorized(f"Bearer {token}", token) and authorized(f"bearer {token}", token)
    assert not authorized(None, token) and not authorized(token, token)
    assert not authorized(f"Bearer {token}x", token) and not authorized("Bearer ", token)


@pytest.mark.parametrize(("body", "reason"), [
    (b"{not json", "Alertmanager webhook: invalid JSON"),
    (b"", "Alertmanager webhook: invalid JSON"),
    (b"[1, 2]", "body: expected a JSON object, got array"),
    (json.dumps({**GOOD, "version": "3"}).encode(), "version: unsupported version '3'"),
    (json.dumps({**GOOD, "alerts": "many"}).encode(), "valid array, got string"),
    (json.dumps({**GOOD, "alerts": [{**GOOD["alerts"][0], "labels": {"service": 7}}]}).encode(),
     "alerts[0].labels.service: Input should be a valid string, got number"),
    (json.dumps({**GOOD, "alerts": [{**GOOD["alerts"][0], "startsAt": "yesterday"}]}).encode(),
     "alerts[0].startsAt"),
    (json.dumps(grafana_payload({"app": "web"})).encode(), "use the Grafana webhook"),
])
async def test_malformed_payloads_are_400_with_a_reason(make_bot, tmp_path, quiet, body,
                                                        reason) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    resp = await post(bot, "alertmanager", content=body)
    assert resp.status_code == 400
    assert reason in resp.json()["error"]
    await nothing_recorded(bot)


async def test_huge_bodies_are_413_by_header_and_while_reading(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    big = b'{"pad": "' + b"x" * MAX_ALERT_BODY + b'"}'
    resp = await post(bot, "alertmanager", content=big)
    assert resp.status_code == 413

    async def chunks():  # no Content-Length: the limit applies while reading
        for _ in range(20):
            yield b"x" * 100_000

    async with httpx.AsyncClient(timeout=10) as client:
        streamed = await client.post(
            f"{bot.url}/webhooks/grafana", content=chunks(),
            headers={"Authorization": f"Bearer {bot.webhook_token}"})
    assert streamed.status_code == 413 and "larger than 1000000 bytes" in streamed.text
    await nothing_recorded(bot)
    # ...and a good one right after is served.
    assert (await post(bot, "alertmanager", GOOD)).status_code == 200


async def test_alert_without_the_labels_we_need_is_shown_unmapped(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    resp = await post(bot, "alertmanager", am_payload(am_alert({"alertname": "DiskFull",
                                                               "instance": "db-1"})))
    assert resp.status_code == 200 and resp.json()["unmapped"] == 1
    root = await alert_thread(bot, "#alerts", replies=0)
    assert "DiskFull — unmapped" in texts(root) and "`instance=db-1`" in texts(root)
    assert "Unmapped" in texts(root)
    assert not root["replies"] and not buttons(root)


async def test_unknown_service_is_unmapped_and_unknown_env_offers_no_rollback(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "HighErrorRate", "service": "billing", "env": "staging"})))
    root = await alert_thread(bot, "#alerts", replies=0)
    assert "no service label (service, app) names a known service" in texts(root)
    assert "`service=billing`" in texts(root)
    # A known service in an environment it does not have (worker has no dev).
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "QueueStuck", "service": "worker", "env": "dev"}, fingerprint="2"),
        group_key="worker"))
    root = await alert_thread(bot, "#deploys-worker")
    assert "worker (env unknown)" in texts(root)
    assert "no environment label (env, environment, namespace)" in texts(root)
    reply = root["replies"][0]
    assert "cannot tell which environment of worker" in texts(reply)
    assert [b["text"]["text"] for b in buttons(reply)] == ["Acknowledge"]


async def test_without_a_default_channel_unmapped_alerts_are_recorded_not_posted(
        make_bot, tmp_path, quiet) -> None:
    config = alert_config(tmp_path, alerts={"default_channel": None})
    bot = await make_bot(config, fake_slack=quiet)
    resp = await post(bot, "alertmanager", am_payload(am_alert({"alertname": "Lost"})))
    assert resp.status_code == 200 and resp.json()["unmapped"] == 1
    [thread] = await threads(bot)
    assert thread.channel is None
    await outbox_delivered(bot)  # the notifier has dealt with the thread's messages
    assert not [c for c in quiet.calls_to("chat.postMessage")]


async def test_a_resolve_for_an_alert_never_seen_posts_nothing(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    done = am_alert({"alertname": "Old", "service": "web", "env": "staging"},
                    status="resolved", ends_at="2026-01-01T00:00:00Z",
                    starts_at="2025-12-31T23:00:00Z")
    resp = await post(bot, "alertmanager", am_payload(done))
    assert resp.json()["ignored"] == 1
    assert await threads(bot) == []
    assert alert_roots(bot, "#deploys-web") == []
