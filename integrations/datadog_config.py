"""Settings of the ``datadog`` metrics provider: which site, which keys, how patient.

The keys never live in the config: ``api_key_env`` and ``app_key_env`` name the
environment variables that hold them, read per request so a rotated key is picked up
without a restart.
"""

from __future__ import annotations

from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from integrations.command_templates import ProviderEnvName
from integrations.http_auth import check_http_url

# Datadog's sites (docs.datadoghq.com/getting_started/site): the API is api.<site>.
DatadogSite = Literal[
    "datadoghq.com", "us3.datadoghq.com", "us5.datadoghq.com", "datadoghq.eu",
    "ap1.datadoghq.com", "ap2.datadoghq.com", "uk1.datadoghq.com", "ddog-gov.com",
    "us2.ddog-gov.com",
]
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


class DatadogConfig(BaseModel):
    # Errors never echo the input: a pasted URL could hold a secret.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    provider: Literal["datadog"]
    site: DatadogSite | None = Field(
        None, description="Datadog site, e.g. datadoghq.eu (default datadoghq.com); the API "
        "is https://api.<site>")
    base_url: str | None = Field(
        None, description="API base URL instead of site, e.g. a proxy: https://dd-proxy.internal")
    api_key_env: ProviderEnvName = Field(
        "DD_API_KEY", description="NAME of the environment variable holding the API key")
    app_key_env: ProviderEnvName = Field(
        "DD_APP_KEY", description="NAME of the environment variable holding the application "
        "key (needs the timeseries_query permission)")
    timeout_seconds: float = Field(10.0, gt=0, le=300)
    instant_lookback_seconds: float = Field(
        300.0, ge=30, le=3600, description="query(): the last point of this many seconds")
    max_rate_limit_wait_seconds: float = Field(
        10.0, ge=0, le=120, description="On HTTP 429, wait for the limit's reset if it comes "
        "within this many seconds; else the check is inconclusive and retried later")

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parsed = check_http_url(url)
        if parsed.query or parsed.fragment:
            raise ValueError("base_url must not have a ?query or #fragment")
        if parsed.scheme != "https" and parsed.host not in _LOOPBACK:
            raise ValueError("base_url must be https:// (the keys travel in its headers); "
                             "plain http only to 127.0.0.1 or localhost")
        return url.rstrip("/")

    @model_validator(mode="after")
    def _one_place(self) -> DatadogConfig:
        if self.site is not None and self.base_url is not None:
            raise ValueError("give site or base_url, not both")
        return self

    @property
    def url(self) -> str:
        """The API base URL: ``base_url``, else ``https://api.<site>``."""
        return self.base_url or f"https://api.{self.site or 'datadoghq.com'}"

    @property
    def host(self) -> str:
        return httpx.URL(self.url).host
