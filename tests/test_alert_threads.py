"""Alert threads end to end: a real Alertmanager posting to the bot's webhook, Grafana
payloads as Grafana's docs show them, one thread per alert or group, the suspect
deployment, the rollback button, resolution, and the links between the threads."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from sqlmodel import select

from bot.clock import as_utc
from bot.slack.blocks_alerts import ALERT_ACK_ACTION, ALERT_DISMISS_ACTION, ALERT_ROLLBACK_ACTION
from bot.store.models import AlertInstance, Deployment
from tests.alert_helpers import (
    GRAFANA_DOCS_PAYLOAD,
    alert_config,
    alert_roots,
    alert_thread,
    am_alert,
    am_payload,
    card_of,
    deploy,
    grafana_payload,
    iso,
    post,
    texts,
    threads,
)
from tests.conftest import eventually
from tests.test_buttons_and_queries import buttons, ephemerals_to
from tests.test_deploy_flow import deployments

API = {"alertname": "HighErrorRate", "service": "api", "env": "staging", "severity": "critical"}


async def test_real_alertmanager_thread_rollback_and_resolve(
        make_bot, tmp_path, quiet, alertmanager_factory) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "api staging v1.4.1")
    suspect = await deploy(bot, "api staging v1.4.2")
    am = await alertmanager_factory(f"{bot.url}/webhooks/alertmanager", bot.webhook_token)
    await am.fire(API, {"summary": "5xx above 5%", "description": "api 5xx ratio is 7%",
                        "runbook_url": "https://runbooks.example/api-5xx"},
                  generator_url="http://prometheus.example:9090/graph")

    root = await alert_thread(bot, "#deploys-api", replies=1)
    head = texts(root)
    assert "🔥 HighErrorRate — api staging" in head and "critical" in head
    assert "5xx above 5%" in head and "api 5xx ratio is 7%" in head
    assert "<https://runbooks.example/api-5xx|Runbook>" in head
    assert "<http://prometheus.example:9090/graph|Source>" in head
    assert "Silence" in head  # Alertmanager's own silence link, built from externalURL
    reply = root["replies"][0]
    assert f"Suspect deployment*: #{suspect.id} `v1.4.2` (was `v1.4.1`) by <@U0ALICE>" \
        in texts(reply)
    assert "before the alert started" in texts(reply)
    labels = [b["text"]["text"] for b in buttons(reply)]
    assert labels == ["Roll back to v1.4.1", "Not the deploy", "Acknowledge"]

    # The deployment's own thread links to the alert thread.
    async def linked() -> bool:
        card = card_of(bot, "#deploys-api", suspect.id)
        return any("alert thread" in r["text"] and root["ts"].replace(".", "") in r["text"]
                   for r in card["replies"])

    await eventually(linked)

    rollback = buttons(reply)[0]
    resp = await bot.driver.click(ALERT_ROLLBACK_ACTION, rollback["value"], user="U0BOB",
                                  channel="#deploys-api", message_ts=reply["ts"])
    assert resp.status_code == 200
    [told] = await ephemerals_to(bot, "U0BOB")
    assert told.startswith(":rewind: Rollback #3 of api staging to `v1.4.1` started")

    async def rolled_back() -> Deployment | None:
        deps = await deployments(bot)
        return deps[2] if len(deps) > 2 and deps[2].finished_at else None

    dep = await eventually(rolled_back, timeout=20)
    assert (dep.kind, dep.state, dep.version, dep.rollback_of) == (
        "rollback", "succeeded", "v1.4.1", suspect.id)
    assert dep.requester == "U0BOB" and dep.recovery_seconds is not None
    assert dep.recovery_seconds > 0
    ci = (tmp_path / "ci.log").read_text().splitlines()
    assert len(ci) == 2  # the rollback built nothing
    assert json.loads((tmp_path / "deploy.log").read_text().splitlines()[-1]) == \
        ["api", "staging", "v1.4.1"]

    async def reported() -> dict | None:
        thread = await alert_thread(bot, "#deploys-api")
        done = [r for r in thread["replies"] if "Rollback #3 done" in r["text"]]
        return thread if done else None

    thread = await eventually(reported)
    story = "\n".join(r["text"] for r in thread["replies"])
    assert "<@U0BOB> started rollback #3" in story
    assert "from the alert's start to the end of the rollback" in story
    # The suspect reply no longer offers the button, it shows the rollback instead.
    suspect_reply = thread["replies"][0]
    assert "Roll back to" not in texts(suspect_reply)
    assert "rollback #3 to `v1.4.1` by <@U0BOB>" in texts(suspect_reply)

    async def deployment_thread_told() -> bool:
        card = card_of(bot, "#deploys-api", suspect.id)
        return any("Rollback #3 done" in r["text"] for r in card["replies"])

    await eventually(deployment_thread_told)

    await am.resolve(API)

    async def resolved() -> dict | None:
        [root] = alert_roots(bot, "#deploys-api")
        return root if "Resolved after" in texts(root) and any(
            "Resolved after" in r["text"] for r in root["replies"]) else None

    root = await eventually(resolved, timeout=20)
    assert root["blocks"][0]["text"]["text"].startswith("✅ Resolved after")
    assert "edited" in root
    assert len(alert_roots(bot, "#deploys-api")) == 1  # never a second root
    [row] = await threads(bot)
    assert row.status == "resolved" and row.resolved_at is not None and row.open_key is None


async def test_grafana_payload_from_the_docs_opens_a_thread_and_resolves(
        make_bot, tmp_path, quiet) -> None:
    config = alert_config(tmp_path, alerts={"env_aliases": {"web-stg": "staging"}})
    bot = await make_bot(config, fake_slack=quiet)
    await deploy(bot, "web staging v2.0.0")
    suspect = await deploy(bot, "web staging v2.1.0")
    labels = {"alertname": "Latency p99", "app": "web", "namespace": "web-stg"}
    started = iso()
    resp = await post(bot, "grafana", grafana_payload(labels, starts_at=started))
    assert resp.status_code == 200, resp.text
    assert resp.json()["new_threads"] == [1]
    root = await alert_thread(bot, "#deploys-web")
    head = texts(root)
    assert "🔥 Latency p99 — web staging" in head
    assert "<https://grafana.example/d/web|Dashboard>" in head
    assert "<https://myrunbook.com/runbook/1234|Runbook>" in head
    assert f"#{suspect.id} `v2.1.0`" in texts(root["replies"][0])
    assert buttons(root["replies"][0])[0]["text"]["text"] == "Roll back to v2.0.0"

    ended = iso(datetime.now(UTC) + timedelta(minutes=14))
    resp = await post(bot, "grafana", grafana_payload(
        labels, status="resolved", starts_at=started, ends_at=ended))
    assert resp.json()["resolved_threads"] == [1]

    async def resolved() -> dict | None:  # the root's edit and the reply: two calls, any order
        [root] = alert_roots(bot, "#deploys-web")
        told = any("Resolved after 14m" in r["text"] for r in root["replies"])
        return root if told and "Resolved after 14m" in texts(root) else None

    await eventually(resolved)


async def test_grafana_docs_example_without_service_labels_goes_to_the_default_channel(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    resp = await post(bot, "grafana", GRAFANA_DOCS_PAYLOAD)
    assert resp.status_code == 200
    assert resp.json()["unmapped"] == 2 and len(resp.json()["new_threads"]) == 2

    async def both() -> list | None:
        roots = alert_roots(bot, "#alerts")
        return roots if len(roots) == 2 else None

    roots = sorted(await eventually(both), key=lambda r: "CPU" in r["text"])
    head = texts(roots[0])
    assert "High memory usage — unmapped" in head
    assert "*Unmapped*: no service label (service, app)" in head
    assert "`team=blue`" in head and "`zone=us-1`" in head
    assert all(not r["replies"] for r in roots)  # no suspect, no rollback offered


async def test_repeats_and_concurrent_deliveries_update_one_thread(
        make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    started = iso()
    first = am_alert({"alertname": "HighErrorRate", "service": "web", "env": "stg",
                      "instance": "a"}, starts_at=started, fingerprint="aaaa")
    payload = am_payload(first, group_key='{}:{alertname="HighErrorRate"}')
    replies = await asyncio.gather(*(post(bot, "alertmanager", payload) for _ in range(6)))
    assert {r.status_code for r in replies} == {200}
    await post(bot, "alertmanager", payload)  # Alertmanager's repeat_interval
    # The same group, one more alert: same thread, the root counts both.
    second = am_alert({"alertname": "HighErrorRate", "service": "web", "env": "stg",
                       "instance": "b"}, starts_at=started, fingerprint="bbbb")
    resp = await post(bot, "alertmanager", am_payload(first, second))
    assert resp.json()["threads"] == [1] and resp.json()["new_threads"] == []

    async def counted() -> dict | None:
        roots = alert_roots(bot, "#deploys-web")
        return roots[0] if roots and "Firing (2 alerts)" in texts(roots[0]) else None

    await eventually(counted)
    assert len(await threads(bot)) == 1
    assert len(alert_roots(bot, "#deploys-web")) == 1
    posts = [c for c in quiet.calls_to("chat.postMessage") if c.params.get("channel") ==
             "#deploys-web" and str(c.params.get("text")).startswith("🔥")]
    assert len(posts) == 1
    async with bot.bot.sessions() as session:
        assert len((await session.exec(select(AlertInstance))).all()) == 2

    # One resolves: still firing. Both resolve: resolved, once.
    done = dict(first, status="resolved", endsAt=iso())
    await post(bot, "alertmanager", am_payload(done, second))
    assert (await threads(bot))[0].status == "firing"
    both = am_payload(done, dict(second, status="resolved", endsAt=iso()))
    await asyncio.gather(*(post(bot, "alertmanager", both) for _ in range(3)))
    [thread] = await threads(bot)
    assert thread.status == "resolved"

    async def noted() -> list | None:
        root = alert_roots(bot, "#deploys-web")[0]
        notes = [r for r in root["replies"] if "Resolved after" in r["text"]]
        return notes or None

    assert len(await eventually(noted)) == 1
    # Firing again later is a new incident: a new thread.
    again = dict(first, startsAt=iso(datetime.now(UTC) + timedelta(minutes=1)))
    resp = await post(bot, "alertmanager", am_payload(again))
    assert resp.json()["new_threads"] == [2]


async def test_acknowledge_and_not_the_deploy(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await deploy(bot, "web staging v1")
    await deploy(bot, "web staging v2")
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "HighLatency", "service": "web", "env": "staging"})))
    root = await alert_thread(bot, "#deploys-web")
    value = buttons(root["replies"][0])[0]["value"]
    await bot.driver.click(ALERT_ACK_ACTION, value, user="U0BOB")
    await bot.driver.click(ALERT_DISMISS_ACTION, value, user="U0CAROL")
    await bot.driver.click(ALERT_ACK_ACTION, value, user="U0DAN")
    assert (await ephemerals_to(bot, "U0BOB"))[0] == "You acknowledged this alert."
    assert (await ephemerals_to(bot, "U0DAN"))[0] == \
        "<@U0BOB> already acknowledged this alert."

    async def updated() -> dict | None:
        root = alert_roots(bot, "#deploys-web")[0]
        reply = root["replies"][0]
        told = any("not caused by the deploy" in r["text"] for r in root["replies"])
        return root if "Acknowledged by <@U0BOB>" in texts(root) and not buttons(reply) \
            and "<@U0CAROL>: not the deploy" in texts(reply) and told else None

    await eventually(updated)
    [thread] = await threads(bot)
    assert (thread.acknowledged_by, thread.dismissed_by) == ("U0BOB", "U0CAROL")
    # A click on a stale copy of the button is refused: the decision is in the database.
    await bot.driver.click(ALERT_ROLLBACK_ACTION, value, user="U0ERIN")
    [stale] = await ephemerals_to(bot, "U0ERIN")
    assert stale.startswith("<@U0CAROL> marked this alert as not caused by the deploy")
    assert len(await deployments(bot)) == 2


async def test_service_never_deployed_says_so_and_offers_no_rollback(make_bot, tmp_path, quiet):
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    resp = await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "HighErrorRate", "service": "worker", "env": "production"})))
    assert resp.status_code == 200
    root = await alert_thread(bot, "#deploys-worker")
    reply = root["replies"][0]
    assert "No deployment of worker to production finished in the 2h 00m before this " \
           "alert" in texts(reply)
    assert [b["text"]["text"] for b in buttons(reply)] == ["Acknowledge"]


async def test_deployment_outside_the_window_is_not_a_suspect(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path, alerts={"suspect_window": "30m"}),
                         fake_slack=quiet)
    dep = await deploy(bot, "web staging v1")
    later = as_utc(dep.finished_at) + timedelta(minutes=31)  # type: ignore[arg-type]
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "X", "service": "web", "env": "staging"}, starts_at=iso(later))))
    root = await alert_thread(bot, "#deploys-web")
    assert "No deployment of web to staging finished in the 30m 00s" in \
        texts(root["replies"][0])
    # Within the window (and with an earlier version): a suspect with a rollback.
    await deploy(bot, "web staging v2")
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "Y", "service": "web", "env": "staging"}, fingerprint="ffff"),
        group_key="other"))
    root = await alert_thread(bot, "#deploys-web", name="Y")
    assert "Roll back to v1" in texts(root["replies"][0])


async def test_alert_text_is_escaped_and_bad_links_dropped(make_bot, tmp_path, quiet) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    notes = {"summary": "<!here> *boom*", "description": "<@U0BOSS> & friends",
             "runbook_url": "javascript:alert(1)", "dashboard": "https://x.example/|<!here>"}
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "<!channel>", "service": "web", "env": "staging"},
        annotations=notes)))
    root = await alert_thread(bot, "#deploys-web")
    raw = json.dumps(root, ensure_ascii=False)
    shown = [root["text"], *mrkdwn(root["blocks"]),
             *(t for r in root["replies"] for t in [r["text"], *mrkdwn(r["blocks"])])]
    assert not [t for t in shown if "<!" in t or "<@U0BOSS>" in t]  # nobody is pinged
    assert root["blocks"][0]["text"]["type"] == "plain_text"  # the header shows it as is
    assert "&lt;!here&gt;" in raw and "&lt;@U0BOSS&gt; &amp; friends" in raw
    assert "javascript:" not in raw and "Dashboard" not in raw


async def test_an_alert_whose_annotations_render_blank_still_opens_its_thread(
        make_bot, tmp_path, quiet) -> None:
    """A templated description that renders to whitespace (and no summary) is no text at
    all: Slack refuses a section whose text is empty, so the root must leave it out."""
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "DiskFull", "service": "web", "env": "staging"},
        annotations={"description": "\n  \n"})))
    root = await alert_thread(bot, "#deploys-web", name="DiskFull")
    assert root["text"] == "🔥 DiskFull — web staging"
    refused = [c for c in quiet.calls if c.failed and c.response.get("error") == "invalid_blocks"]
    assert refused == []


def mrkdwn(blocks: list[dict]) -> list[str]:
    """Every mrkdwn text in ``blocks`` (what Slack would parse for mentions and links)."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("type") == "mrkdwn":
                found.append(str(node.get("text", "")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(blocks)
    return found


async def test_a_rate_limited_channel_does_not_delay_alerts_elsewhere(make_bot, tmp_path):
    bot = await make_bot(alert_config(tmp_path))  # the fake Slack's 1 post/s per channel
    for i in range(8):  # 16 posts for #deploys-api: most wait for Slack's Retry-After
        await post(bot, "alertmanager", am_payload(am_alert(
            {"alertname": f"Noisy{i}", "service": "api", "env": "staging"},
            fingerprint=f"n{i}"), group_key=f"noisy{i}"))
    await post(bot, "alertmanager", am_payload(am_alert(
        {"alertname": "Elsewhere", "service": "web", "env": "staging"}, fingerprint="w"),
        group_key="web"))
    await alert_thread(bot, "#deploys-web", name="Elsewhere")
    # The later alert went first: posted while #deploys-api is still being throttled (how
    # long it took next to an idle Slack: bench/alert_elsewhere.py).
    assert len(alert_roots(bot, "#deploys-api")) < 8
    assert any(c.status == 429 for c in bot.slack.calls)
    await eventually(lambda: _async(len(alert_roots(bot, "#deploys-api")) == 8), timeout=30)


async def _async(value: bool) -> bool:
    return value
