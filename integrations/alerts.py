"""Alert webhooks from Alertmanager and Grafana, normalised into one ``Alert`` type.

The bot opens a Slack thread per alert (keyed by fingerprint) and offers a rollback of
the service's last deploy, so all it needs is: which alert, firing or resolved, and
which service/env it is about. Both sources share Alertmanager's notification shape
(Grafana's alerting is a fork of it); Grafana adds a few URLs, ``values`` and ``orgId``.

Validation is strict on types (a label value that is a number is an error, never a
silent ``str()``) but ignores unknown fields, which both projects add over time.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

AlertStatus = Literal["firing", "resolved"]
AlertSource = Literal["alertmanager", "grafana"]

ALERTMANAGER_VERSION = "4"
GRAFANA_VERSION = "1"


class AlertPayloadError(ValueError):
    """A webhook body we cannot use; the message is short and safe to return as a 400."""


def _null_as_empty(value: Any) -> Any:
    """Go marshals a nil map as ``null``; treat it like ``{}`` rather than rejecting."""
    return {} if value is None else value


StrMap = Annotated[dict[str, str], BeforeValidator(_null_as_empty)]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True, frozen=True)


class AlertmanagerAlert(_Strict):
    """One entry of ``alerts[]`` as Alertmanager's webhook_config sends it."""

    status: AlertStatus
    labels: StrMap = Field(default_factory=dict)
    annotations: StrMap = Field(default_factory=dict)
    starts_at: AwareDatetime = Field(alias="startsAt")
    ends_at: AwareDatetime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = ""


class GrafanaAlert(AlertmanagerAlert):
    """Grafana's alert entry: Alertmanager's plus links and the query ``values``."""

    silence_url: str = Field(default="", alias="silenceURL")
    dashboard_url: str = Field(default="", alias="dashboardURL")
    panel_url: str = Field(default="", alias="panelURL")
    image_url: str = Field(default="", alias="imageURL")
    values: dict[str, float | None] | None = None
    value_string: str = Field(default="", alias="valueString")  # Grafana < 10


class _Payload(_Strict):
    receiver: str = ""
    status: AlertStatus
    group_labels: StrMap = Field(default_factory=dict, alias="groupLabels")
    common_labels: StrMap = Field(default_factory=dict, alias="commonLabels")
    common_annotations: StrMap = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    version: str
    group_key: str = Field(default="", alias="groupKey")
    truncated_alerts: int = Field(default=0, alias="truncatedAlerts")


class AlertmanagerPayload(_Payload):
    """Alertmanager's webhook body (``"version": "4"``)."""

    alerts: list[AlertmanagerAlert]

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v == ALERTMANAGER_VERSION:
            return v
        hint = " (this looks like a Grafana payload: use the Grafana webhook)" \
            if v == GRAFANA_VERSION else ""
        raise ValueError(f"unsupported version {v!r}, expected {ALERTMANAGER_VERSION!r}{hint}")

    def to_alerts(self) -> list[Alert]:
        return [_normalise(self, a, "alertmanager") for a in self.alerts]


class GrafanaPayload(_Payload):
    """Grafana unified alerting webhook contact point body (``"version": "1"``)."""

    alerts: list[GrafanaAlert]
    org_id: int | None = Field(default=None, alias="orgId")
    title: str = ""
    state: str = ""
    message: str = ""

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if v == GRAFANA_VERSION:
            return v
        hint = " (this looks like an Alertmanager payload: use the Alertmanager webhook)" \
            if v == ALERTMANAGER_VERSION else ""
        raise ValueError(f"unsupported version {v!r}, expected {GRAFANA_VERSION!r}{hint}")

    def to_alerts(self) -> list[Alert]:
        return [_normalise(self, a, "grafana") for a in self.alerts]


class Alert(BaseModel):
    """One alert instance, whatever sent it; what a Slack alert thread is built from."""

    model_config = ConfigDict(frozen=True)

    source: AlertSource
    fingerprint: str = Field(description="Stable per label set: the thread key")
    group_key: str
    status: AlertStatus
    name: str = Field(description="The alertname label, or a stand-in naming the fingerprint")
    severity: str | None = None
    summary: str = ""
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime
    ends_at: datetime | None = Field(default=None, description="None while firing")
    generator_url: str | None = None
    runbook_url: str | None = None
    dashboard_url: str | None = None
    silence_url: str | None = None

    @property
    def firing(self) -> bool:
        return self.status == "firing"


def label_fingerprint(labels: dict[str, str]) -> str:
    """Alertmanager's fingerprint of a label set (FNV-1a 64 over sorted name/value pairs).

    Used when a sender omits ``fingerprint``, so threads still key on the same value
    Alertmanager itself would have sent.
    """
    h = 0xCBF29CE484222325
    for name in sorted(labels):
        for part in (name, labels[name]):
            for byte in part.encode() + b"\xff":
                h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _first(*values: str | None) -> str | None:
    return next((v for v in values if v), None)


def _alertmanager_silence_url(external_url: str, labels: dict[str, str]) -> str | None:
    """The link the Alertmanager UI's own "Silence" button opens, prefilled with matchers."""
    if not external_url or not labels:
        return None
    matchers = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()))
    return f"{external_url.rstrip('/')}/#/silences/new?filter={quote('{' + matchers + '}')}"


def _normalise(payload: _Payload, raw: AlertmanagerAlert, source: AlertSource) -> Alert:
    labels, notes = dict(raw.labels), dict(raw.annotations)
    fingerprint = raw.fingerprint or label_fingerprint(labels)
    ends_at = raw.ends_at if raw.ends_at is not None and raw.ends_at.year > 1 else None
    if isinstance(raw, GrafanaAlert):
        dashboard = _first(raw.dashboard_url, notes.get("dashboard_url"), notes.get("dashboard"))
        silence = _first(raw.silence_url)
    else:
        dashboard = _first(notes.get("dashboard_url"), notes.get("dashboard"))
        silence = _alertmanager_silence_url(payload.external_url, labels)
    return Alert(
        source=source, fingerprint=fingerprint, group_key=payload.group_key,
        status=raw.status, name=labels.get("alertname") or f"alert {fingerprint}",
        severity=labels.get("severity") or None,
        summary=notes.get("summary", ""), description=notes.get("description", ""),
        labels=labels, annotations=notes, starts_at=raw.starts_at, ends_at=ends_at,
        generator_url=raw.generator_url or None,
        runbook_url=_first(notes.get("runbook_url")),
        dashboard_url=dashboard, silence_url=silence,
    )


def _path(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number",
               float: "number", bool: "boolean", type(None): "null"}


def _reason(source: str, exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"{source} webhook: invalid JSON ({first['ctx']['error']})"
    msg = first["msg"].removeprefix("Value error, ")
    got = _JSON_TYPES.get(type(first["input"]), type(first["input"]).__name__)
    if first["type"] == "model_type":
        msg = f"expected a JSON object, got {got}"
    elif first["type"] == "literal_error":
        msg = f"{msg}, got {json.dumps(first['input'])[:40]}"
    elif first["type"].endswith("_type"):
        msg = f"{msg}, got {got}"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source} webhook: {_path(first['loc'])}: {msg}{more}"


def parse_alertmanager(body: bytes) -> list[Alert]:
    """Parse an Alertmanager webhook_config POST body into alerts (in payload order)."""
    try:
        return AlertmanagerPayload.model_validate_json(body).to_alerts()
    except ValidationError as exc:
        raise AlertPayloadError(_reason("Alertmanager", exc)) from None


def parse_grafana(body: bytes) -> list[Alert]:
    """Parse a Grafana webhook contact point POST body into alerts (in payload order)."""
    try:
        return GrafanaPayload.model_validate_json(body).to_alerts()
    except ValidationError as exc:
        raise AlertPayloadError(_reason("Grafana", exc)) from None


def _lookup(value: str, table: Collection[str] | dict[str, str]) -> str | None:
    """Exact match first, then case-insensitive; returns the table's own spelling."""
    if value in table:
        return table[value] if isinstance(table, dict) else value
    folded = value.casefold()
    for key in table:
        if key.casefold() == folded:
            return table[key] if isinstance(table, dict) else key
    return None


class AlertMapping(BaseModel):
    """Which alert labels name Shipbot's service and environment (per-deployment config).

    Alerts carry whatever labels the monitoring stack uses (``app``, ``namespace``...),
    so the mapping is configurable; an unknown value maps to None rather than a guess,
    since a wrong guess would offer a rollback of the wrong thing.
    """

    service_labels: list[str] = Field(default_factory=lambda: ["service", "app"])
    env_labels: list[str] = Field(default_factory=lambda: ["env", "environment", "namespace"])
    env_aliases: dict[str, str] = Field(
        default_factory=dict, description='Label value -> env name, e.g. {"prod": "production"}')

    def map(self, alert: Alert, known_services: Collection[str],
            known_envs: Collection[str]) -> tuple[str | None, str | None]:
        """(service, env) for ``alert``; each part None when no label maps to a known one."""
        service = next((s for name in self.service_labels
                        if (v := alert.labels.get(name)) and (s := _lookup(v, known_services))),
                       None)
        return service, self._env(alert, known_envs)

    def _env(self, alert: Alert, known_envs: Collection[str]) -> str | None:
        for name in self.env_labels:
            value = alert.labels.get(name)
            if not value:
                continue
            if env := _lookup(value, known_envs):
                return env
            alias = _lookup(value, self.env_aliases)
            if alias and (env := _lookup(alias, known_envs)):
                return env
        return None
