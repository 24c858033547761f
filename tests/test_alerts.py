"""Alert webhook parsing (payloads shaped like the Alertmanager and Grafana docs), the
service/env mapping, and one end-to-end run against a real Alertmanager."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from aiohttp import web

from integrations.alerts import (
    Alert,
    AlertMapping,
    AlertPayloadError,
    label_fingerprint,
    parse_alertmanager,
    parse_grafana,
)
from tests.alertmanager_fixture import (  # noqa: F401  (fixture import registers it)
    AlertmanagerFactory,
    alertmanager_config,
    alertmanager_factory,
    find_binary,
)

ZERO = "0001-01-01T00:00:00Z"

# Shaped as in Alertmanager's configuration docs (webhook_config), values our own.
AM_PAYLOAD: dict[str, Any] = {
    "version": "4",
    "groupKey": '{}:{alertname="HighErrorRate", env="prod", service="api"}',
    "truncatedAlerts": 0,
    "status": "firing",
    "receiver": "shipbot",
    "groupLabels": {"alertname": "HighErrorRate", "service": "api", "env": "prod"},
    "commonLabels": {"alertname": "HighErrorRate", "service": "api", "env": "prod",
                     "severity": "critical"},
    "commonAnnotations": {"summary": "5xx above 5%"},
    "externalURL": "http://alertmanager.example:9093",
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "HighErrorRate", "service": "api", "env": "prod",
                   "severity": "critical", "instance": "10.0.0.1:8080"},
        "annotations": {"summary": "5xx above 5%", "description": "api 5xx ratio is 7%",
                        "runbook_url": "https://runbooks.example/api-5xx",
                        "dashboard": "https://grafana.example/d/api"},
        "startsAt": "2024-05-01T10:00:00.123456789+02:00",
        "endsAt": ZERO,
        "generatorURL": "http://prometheus.example:9090/graph?g0.expr=rate",
        "fingerprint": "1a30ba71cca2921f",
    }],
}

# Shaped as in Grafana's webhook notifier docs (unified alerting), values our own.
GRAFANA_PAYLOAD: dict[str, Any] = {
    "receiver": "shipbot", "status": "firing", "orgId": 1,
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "Latency p99", "app": "web", "namespace": "web-prod"},
        "annotations": {"summary": "p99 over 2s", "description": "web p99 is 2.4s"},
        "startsAt": "2024-05-01T10:00:03.157076+02:00", "endsAt": ZERO,
        "generatorURL": "https://grafana.example/alerting/grafana/abc/view",
        "fingerprint": "c6eadffa33fcdf37",
        "silenceURL": "https://grafana.example/alerting/silence/new?matchers=alertname%3DX",
        "dashboardURL": "https://grafana.example/d/web-overview",
        "panelURL": "https://grafana.example/d/web-overview?viewPanel=2",
        "values": {"B": 2.4, "C": 1},
    }],
    "groupLabels": {}, "commonLabels": {"app": "web"}, "commonAnnotations": {},
    "externalURL": "https://grafana.example/", "version": "1", "groupKey": "{}:{}",
    "truncatedAlerts": 0, "title": "[FIRING:1]  (web)", "state": "alerting",
    "message": "**Firing**\n\nLabels:\n - alertname = Latency p99\n",
}


def body(payload: dict[str, Any], **changes: Any) -> bytes:
    data = copy.deepcopy(payload)
    data.update(changes)
    return json.dumps(data).encode()


def test_alertmanager_firing() -> None:
    [alert] = parse_alertmanager(body(AM_PAYLOAD))
    assert alert.source == "alertmanager" and alert.status == "firing" and alert.firing
    assert alert.name == "HighErrorRate" and alert.severity == "critical"
    assert alert.fingerprint == "1a30ba71cca2921f"
    assert alert.group_key == AM_PAYLOAD["groupKey"]
    assert alert.summary == "5xx above 5%" and alert.description == "api 5xx ratio is 7%"
    assert alert.labels["instance"] == "10.0.0.1:8080"
    assert alert.starts_at.year == 2024 and alert.starts_at.utcoffset() is not None
    assert alert.ends_at is None  # Go's zero time means "not ended"
    assert alert.generator_url.startswith("http://prometheus.example")
    assert alert.runbook_url == "https://runbooks.example/api-5xx"
    assert alert.dashboard_url == "https://grafana.example/d/api"
    assert alert.silence_url is not None
    assert alert.silence_url.startswith("http://alertmanager.example:9093/#/silences/new?filter=")
    assert "alertname%3D%22HighErrorRate%22" in alert.silence_url


def test_alertmanager_resolved_and_multiple() -> None:
    first = copy.deepcopy(AM_PAYLOAD["alerts"][0])
    first |= {"status": "resolved", "endsAt": "2024-05-01T10:05:00Z"}
    second = copy.deepcopy(AM_PAYLOAD["alerts"][0])
    second["labels"]["instance"] = "10.0.0.2:8080"
    second["fingerprint"] = "2b41cb82ddb3a32e"
    alerts = parse_alertmanager(body(AM_PAYLOAD, status="firing", alerts=[first, second]))
    assert [a.status for a in alerts] == ["resolved", "firing"]
    assert alerts[0].ends_at == datetime(2024, 5, 1, 10, 5, tzinfo=UTC)
    assert alerts[1].ends_at is None
    assert len({a.fingerprint for a in alerts}) == 2


def test_grafana_firing() -> None:
    [alert] = parse_grafana(body(GRAFANA_PAYLOAD))
    assert alert.source == "grafana" and alert.status == "firing"
    assert alert.name == "Latency p99" and alert.severity is None
    assert alert.fingerprint == "c6eadffa33fcdf37" and alert.group_key == "{}:{}"
    assert alert.dashboard_url == "https://grafana.example/d/web-overview"
    assert alert.silence_url == GRAFANA_PAYLOAD["alerts"][0]["silenceURL"]
    assert alert.ends_at is None and alert.runbook_url is None


def test_grafana_resolved_multiple_and_old_fields() -> None:
    resolved = copy.deepcopy(GRAFANA_PAYLOAD["alerts"][0])
    resolved |= {"status": "resolved", "endsAt": "2024-05-01T10:09:03+02:00",
                 "dashboardURL": "", "values": None, "imageURL": "https://img.example/1.png"}
    resolved["annotations"]["dashboard_url"] = "https://grafana.example/d/fallback"
    old = copy.deepcopy(GRAFANA_PAYLOAD["alerts"][0])
    del old["values"]
    old |= {"valueString": "[ metric='' labels={} value=2.4 ]", "fingerprint": "bc97ff14869b13e3"}
    alerts = parse_grafana(body(GRAFANA_PAYLOAD, status="resolved", alerts=[resolved, old]))
    assert [a.status for a in alerts] == ["resolved", "firing"]
    assert alerts[0].ends_at is not None and alerts[0].ends_at.hour == 10
    assert alerts[0].dashboard_url == "https://grafana.example/d/fallback"


def test_missing_alertname_and_fingerprint_fall_back() -> None:
    raw = copy.deepcopy(AM_PAYLOAD["alerts"][0])
    del raw["labels"]["alertname"], raw["fingerprint"]
    [alert] = parse_alertmanager(body(AM_PAYLOAD, alerts=[raw]))
    assert alert.fingerprint == label_fingerprint(raw["labels"])
    assert alert.name == f"alert {alert.fingerprint}"


def test_label_fingerprint_matches_alertmanager() -> None:
    # FNV-1a 64 of nothing is the offset basis, as in prometheus/common's signature.go.
    assert label_fingerprint({}) == "cbf29ce484222325"
    assert label_fingerprint({"b": "2", "a": "1"}) == label_fingerprint({"a": "1", "b": "2"})
    assert label_fingerprint({"a": "1"}) != label_fingerprint({"a": "2"})


def test_huge_label_values_are_fine() -> None:
    raw = copy.deepcopy(AM_PAYLOAD["alerts"][0])
    raw["labels"]["stack"] = "x" * 200_000
    [alert] = parse_alertmanager(body(AM_PAYLOAD, alerts=[raw]))
    assert len(alert.labels["stack"]) == 200_000


def test_extra_fields_are_ignored() -> None:
    raw = copy.deepcopy(GRAFANA_PAYLOAD["alerts"][0]) | {"newField": {"x": [1]}}
    [alert] = parse_grafana(body(GRAFANA_PAYLOAD, alerts=[raw], futureTopLevel=True))
    assert alert.name == "Latency p99"


def test_empty_alerts_list_is_no_alerts() -> None:
    assert parse_alertmanager(body(AM_PAYLOAD, alerts=[])) == []


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{not json", "invalid JSON"),
    (b"", "invalid JSON"),
    (b"\xff\xfe", "invalid JSON"),
    (b"[]", "body: expected a JSON object, got array"),
    (body(AM_PAYLOAD, version="3"), "version: unsupported version '3', expected '4'"),
    (body(GRAFANA_PAYLOAD), "looks like a Grafana payload"),
    (body({k: v for k, v in AM_PAYLOAD.items() if k != "alerts"}), "alerts: Field required"),
    (body({k: v for k, v in AM_PAYLOAD.items() if k != "version"}), "version: Field required"),
    (body(AM_PAYLOAD, alerts={"0": AM_PAYLOAD["alerts"][0]}),
     "alerts: Input should be a valid array, got object"),
    (body(AM_PAYLOAD, status="pending"),
     "status: Input should be 'firing' or 'resolved', got \"pending\""),
    (body(AM_PAYLOAD, truncatedAlerts="0"),
     "truncatedAlerts: Input should be a valid integer, got string"),
])
def test_alertmanager_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(AlertPayloadError, match=r"^Alertmanager webhook: ") as info:
        parse_alertmanager(raw)
    assert reason in str(info.value)


def test_rejects_wrong_types_with_field_path() -> None:
    raw = copy.deepcopy(AM_PAYLOAD["alerts"][0])
    raw["labels"]["replicas"] = 3
    with pytest.raises(AlertPayloadError) as info:
        parse_alertmanager(body(AM_PAYLOAD, alerts=[raw]))
    assert "alerts[0].labels.replicas: Input should be a valid string, got number" in str(
        info.value)
    raw = copy.deepcopy(GRAFANA_PAYLOAD["alerts"][0]) | {"startsAt": "2024-05-01T10:00:00"}
    with pytest.raises(AlertPayloadError, match=r"alerts\[0\].startsAt: .*timezone"):
        parse_grafana(body(GRAFANA_PAYLOAD, alerts=[raw]))
    with pytest.raises(AlertPayloadError, match=r"orgId: Input should be a valid integer"):
        parse_grafana(body(GRAFANA_PAYLOAD, orgId="1"))
    with pytest.raises(AlertPayloadError, match="looks like an Alertmanager payload"):
        parse_grafana(body(AM_PAYLOAD))


SERVICES = {"api", "web", "worker"}
ENVS = {"dev", "staging", "production"}


def alert(**labels: str) -> Alert:
    return Alert(source="alertmanager", fingerprint="f", group_key="g", status="firing",
                 name="X", labels=labels, starts_at=datetime.now(UTC))


@pytest.mark.parametrize(("labels", "expected"), [
    ({"service": "api", "env": "production"}, ("api", "production")),
    ({"app": "web", "environment": "staging"}, ("web", "staging")),
    ({"service": "nope", "app": "worker", "env": "prod"}, ("worker", "production")),
    ({"app": "API", "namespace": "api-prod"}, ("api", "production")),
    ({"app": "web", "env": "blue", "namespace": "PROD"}, ("web", "production")),
    ({"service": "billing", "env": "qa"}, (None, None)),
    ({"instance": "10.0.0.1"}, (None, None)),
    ({"service": "api", "env": "orphan"}, ("api", None)),
])
def test_mapping(labels: dict[str, str], expected: tuple[str | None, str | None]) -> None:
    mapping = AlertMapping(env_aliases={"prod": "production", "api-prod": "production",
                                        "orphan": "no-such-env"})
    assert mapping.map(alert(**labels), SERVICES, ENVS) == expected


def test_mapping_custom_labels() -> None:
    mapping = AlertMapping(service_labels=["k8s_app"], env_labels=["cluster"])
    assert mapping.map(alert(k8s_app="api", cluster="dev", service="web"),
                       SERVICES, ENVS) == ("api", "dev")
    assert AlertMapping().env_aliases == {}


# --- end to end: a real Alertmanager posting to a tiny receiver -------------------------


def test_find_binary_skips_locally_and_fails_on_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y no-such-pkg"):
        find_binary("no-such-binary-shipbot", "no-such-pkg")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="no-such-binary-shipbot not found"):
        find_binary("no-such-binary-shipbot", "no-such-pkg")


def test_alertmanager_config_routes_everything_to_the_webhook() -> None:
    config = yaml.safe_load(alertmanager_config("http://127.0.0.1:1/webhooks/alertmanager", "t"))
    assert config["route"]["group_by"] == ["alertname", "service", "env"]
    [hook] = config["receivers"][0]["webhook_configs"]
    assert hook["send_resolved"] is True
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials": "t"}


@dataclass
class Receiver:
    url: str
    token: str
    bodies: list[bytes] = field(default_factory=list)
    bad_auth: list[str] = field(default_factory=list)

    async def next_body(self, seen: int, timeout: float = 10.0) -> bytes:
        """Poll until more than ``seen`` notifications arrived (delivery is asynchronous)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.bodies) <= seen:
            assert not self.bad_auth, f"unexpected Authorization headers: {self.bad_auth}"
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no notification #{seen + 1} within {timeout}s")
            await asyncio.sleep(0.05)
        return self.bodies[seen]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    token = "test-token-5e1f"
    rec = Receiver(url="", token=token)

    async def handle(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {token}":
            rec.bad_auth.append(request.headers.get("Authorization", "<none>"))
            return web.Response(status=401)
        rec.bodies.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhooks/alertmanager", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rec.url = f"http://{host}:{port}/webhooks/alertmanager"
    yield rec
    await runner.cleanup()


async def test_real_alertmanager_fire_and_resolve(
        alertmanager_factory: AlertmanagerFactory, receiver: Receiver) -> None:  # noqa: F811
    am = await alertmanager_factory(receiver.url, receiver.token)
    labels = {"alertname": "HighErrorRate", "service": "api", "env": "prod",
              "severity": "critical"}
    notes = {"summary": "5xx above 5%", "runbook_url": "https://runbooks.example/api"}
    await am.fire(labels, notes, generator_url="http://prometheus.example/graph")

    [fired] = parse_alertmanager(await receiver.next_body(0))
    assert fired.status == "firing" and fired.ends_at is None
    assert fired.labels == labels and fired.annotations == notes
    assert fired.fingerprint == label_fingerprint(labels)  # our fallback == Alertmanager's
    assert fired.group_key.endswith('{alertname="HighErrorRate", env="prod", service="api"}')
    assert fired.runbook_url == "https://runbooks.example/api"
    assert fired.generator_url == "http://prometheus.example/graph"
    assert fired.silence_url and fired.silence_url.startswith(am.base_url + "/#/silences/new")
    assert AlertMapping(env_aliases={"prod": "production"}).map(
        fired, SERVICES, ENVS) == ("api", "production")

    await am.resolve(labels)
    resolved_body = await receiver.next_body(1)
    payload = json.loads(resolved_body)
    assert payload["status"] == "resolved" and payload["version"] == "4"
    [resolved] = parse_alertmanager(resolved_body)
    assert resolved.status == "resolved" and resolved.fingerprint == fired.fingerprint
    assert resolved.ends_at is not None and resolved.starts_at == fired.starts_at
    assert resolved.annotations == notes  # resolve re-posts what fire posted
    assert not receiver.bad_auth
