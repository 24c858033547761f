"""The ``webhook`` deploy target's settings, checked when the config is loaded.

Secrets are never in the config: ``auth.token_env`` names the variable holding the value
of an auth header, ``signature.secret_env`` the one holding an HMAC key. Both are read
per request and redacted from everything Shipbot shows.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from integrations.base import Capability, ProviderConfig
from integrations.command_templates import ProviderEnvName, check_placeholders
from integrations.http_auth import check_http_url, is_loopback

BODY_PLACEHOLDERS = ("service", "env", "version", "artifact", "key")
URL_PLACEHOLDERS = ("service", "env")
DEFAULT_BODY: dict[str, Any] = {"service": "{service}", "env": "{env}", "version": "{version}",
                                "artifact": "{artifact}", "key": "{key}"}
_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"
_PATH = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"  # a dotted path into a JSON object


class WebhookAuth(BaseModel):
    """A header whose value (``scheme`` + the variable's value) authenticates us."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    token_env: ProviderEnvName = Field(description="NAME of the variable holding the token")
    header: str = Field("Authorization", pattern=_HEADER)
    scheme: str | None = Field("Bearer", pattern=r"^[A-Za-z0-9_-]+$",
                               description="put before the token (None: the bare token)")


class WebhookSignature(BaseModel):
    """An HMAC-SHA256 of each request, as ``sha256=<hex>``, and the time it was signed."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    secret_env: ProviderEnvName = Field(description="NAME of the variable holding the key")
    header: str = Field("X-Shipbot-Signature-256", pattern=_HEADER)
    timestamp_header: str = Field("X-Shipbot-Timestamp", pattern=_HEADER)
    signed: Literal["timestamp.body", "body"] = Field(
        "timestamp.body", description="what is signed: `<unix seconds>.<raw body>` (so a "
        "replay with a new timestamp fails) or the raw body alone, as GitHub does")


class WebhookConfig(ProviderConfig):
    """POSTs a JSON body to a deployer's URL, then polls the run it answers with."""

    CAPABILITIES: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.CANCEL, Capability.ROLLBACK, Capability.TRAFFIC})
    TURNED_ON_BY: ClassVar[dict[Capability, str]] = {
        Capability.CANCEL: "cancel_url", Capability.ROLLBACK: "rollback_url",
        Capability.TRAFFIC: "set_weight_url, promote_url and abort_url"}

    provider: Literal["webhook"] = "webhook"
    url: str = Field(description="where a deploy is POSTed; {service} {env}")
    body: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_BODY), description="the JSON body: a mapping "
        "whose string leaves are templated with {service} {env} {version} {artifact} {key}")
    weight_body: dict[str, Any] = Field(
        default_factory=lambda: {**DEFAULT_BODY, "weight": "{weight}"},
        description="the body POSTed to set_weight_url; {weight} too (a number when it "
        "is the whole leaf)")
    auth: WebhookAuth | None = None
    signature: WebhookSignature | None = None
    id_field: str | None = Field(None, pattern=_PATH, description="the run's id in the "
                                 "answer (for {id} in status_url and cancel_url)")
    status_url_field: str | None = Field(None, pattern=_PATH, description="the answer's "
                                         "field holding the URL to poll, e.g. links.status")
    status_url: str | None = Field(None, description="or the URL to poll as a template: "
                                   "{id} {service} {env}")
    status_field: str = Field("status", pattern=_PATH)
    success_values: list[str] = Field(default_factory=lambda: ["succeeded", "success"],
                                      min_length=1)
    failure_values: list[str] = Field(
        default_factory=lambda: ["failed", "failure", "error", "cancelled", "canceled"],
        min_length=1)
    message_field: str | None = Field(None, pattern=_PATH, description="why a run failed")
    link_field: str | None = Field(None, pattern=_PATH, description="the run's web page")
    started_field: str | None = Field(
        None, pattern=_PATH, description="when the run started (ISO 8601 or Unix seconds): "
        "a run still going timeout_seconds after it is failed and cancelled")
    rollback_url: str | None = Field(None, description="POSTed body for a native undo")
    set_weight_url: str | None = None
    promote_url: str | None = None
    abort_url: str | None = None
    cancel_url: str | None = Field(None, description="POSTed {id, key} to stop a run; {id}")
    timeout_seconds: float = Field(1800.0, gt=0, description="the whole run; the engine "
                                   "stops the step after it (plus a grace), cancel_url "
                                   "called")
    request_timeout_seconds: float = Field(30.0, gt=0, le=300)

    @field_validator("url", "rollback_url", "set_weight_url", "promote_url", "abort_url")
    @classmethod
    def _action_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_url(value, URL_PLACEHOLDERS, str(info.field_name))
        return value

    @field_validator("status_url", "cancel_url")
    @classmethod
    def _run_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_url(value, (*URL_PLACEHOLDERS, "id"), str(info.field_name))
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WebhookConfig:
        if (self.auth is None) == (self.signature is None):
            raise ValueError("set exactly one of auth (a token header) or signature (an "
                             "HMAC-SHA256 of each request)")
        if (self.status_url_field is None) == (self.status_url is None):
            raise ValueError("set exactly one of status_url_field (the answer's field with "
                             "the URL to poll) or status_url (a template with {id})")
        uses_id = [n for n in ("status_url", "cancel_url") if "{id}" in (getattr(self, n) or "")]
        if uses_id and self.id_field is None:
            raise ValueError(f"{uses_id[0]} uses {{id}}: set id_field, the answer's field "
                             "holding the run's id")
        if both := set(self.success_values) & set(self.failure_values):
            raise ValueError(f"{sorted(both)[0]!r} is in both success_values and failure_values")
        _check_body(self.body, BODY_PLACEHOLDERS)
        _check_body(self.weight_body, (*BODY_PLACEHOLDERS, "weight"))
        return self

    def capabilities(self) -> frozenset[Capability]:
        on = set()
        if self.cancel_url:
            on.add(Capability.CANCEL)
        if self.rollback_url:
            on.add(Capability.ROLLBACK)
        if self.set_weight_url and self.promote_url and self.abort_url:
            on.add(Capability.TRAFFIC)
        return frozenset(on)

    @property
    def secret_name(self) -> str:
        """The variable a refused request should make the user check."""
        if self.auth is not None:
            return self.auth.token_env
        assert self.signature is not None
        return self.signature.secret_env


def _check_url(value: str, allowed: tuple[str, ...], name: str) -> None:
    """http(s) with a literal host (the host decides what Shipbot may poll); https unless
    the host is loopback, since every request carries the auth header or signature."""
    parsed = check_http_url(value.replace("{", "").replace("}", ""))
    check_placeholders([value], allowed)
    if "{" in value.split("/")[2]:
        raise ValueError("placeholders are allowed in the path only, not in the host")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        raise ValueError(f"{name} must be https:// (plain http is allowed on loopback "
                         "only): every request carries the auth header or signature")


def _check_body(body: Any, allowed: tuple[str, ...]) -> None:
    """Typos like {verison} are refused at load, wherever the leaf is."""
    if isinstance(body, str):
        if "{weight}" in body and "weight" not in allowed:
            raise ValueError("{weight} is only allowed in weight_body")
        check_placeholders([body], allowed)
    elif isinstance(body, dict):
        for value in body.values():
            _check_body(value, allowed)
    elif isinstance(body, list):
        for value in body:
            _check_body(value, allowed)
