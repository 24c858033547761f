"""Process settings from the environment (secrets never come from the config file)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SLACK_API_DEFAULT = "https://slack.com/api/"


class SettingsError(Exception):
    """A setting is missing or invalid; the message names the variable and the fix."""


class Settings(BaseSettings):
    """Everything the process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=True, extra="ignore")

    SLACK_BOT_TOKEN: SecretStr | None = None
    SLACK_SIGNING_SECRET: SecretStr | None = None
    SLACK_APP_TOKEN: SecretStr | None = None
    SLACK_API_URL: str = SLACK_API_DEFAULT
    DATABASE_URL: str = "sqlite:///shipbot.db"
    SHIPBOT_CONFIG: Path = Path("shipbot.yml")
    SHIPBOT_STATE_DIR: Path = Field(default=Path(".shipbot"))
    SHIPBOT_TICK_SECONDS: float = Field(default=1.0, gt=0)
    # How long a replica's claim on a deployment, and its heartbeat, last unless renewed
    # (both are renewed every third of it): a replica that dies is taken over after this.
    SHIPBOT_LEASE_SECONDS: float = Field(default=60.0, gt=0, le=3600)
    # On SIGTERM: how long in-flight steps get to finish before they are handed back to
    # the other replicas (keep it below Kubernetes' terminationGracePeriodSeconds, 30).
    SHIPBOT_SHUTDOWN_GRACE_SECONDS: float = Field(default=20.0, ge=0, le=600)
    # Bearer token alert webhooks must send; unset: /webhooks/* answer 503 (never open).
    SHIPBOT_WEBHOOK_TOKEN: SecretStr | None = None

    @field_validator("SHIPBOT_WEBHOOK_TOKEN")
    @classmethod
    def _webhook_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or not v.get_secret_value():
            return None
        if len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (e.g. `openssl rand -hex 32`)")
        return v

    @field_validator("SLACK_BOT_TOKEN")
    @classmethod
    def _bot_token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xoxb-"):
            raise ValueError("must be a bot token starting with 'xoxb-'")
        return v

    @field_validator("SLACK_APP_TOKEN")
    @classmethod
    def _app_token_shape(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value().startswith("xapp-"):
            raise ValueError("must be an app-level token starting with 'xapp-'")
        return v

    @field_validator("SLACK_API_URL")
    @classmethod
    def _api_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://slack.com/api/")
        return v if v.endswith("/") else v + "/"

    @field_validator("DATABASE_URL")
    @classmethod
    def _db_url(cls, v: str) -> str:
        async_database_url(v)
        return v

    @property
    def socket_mode(self) -> bool:
        return self.SLACK_APP_TOKEN is not None

    def require_slack(self) -> None:
        """Serving real Slack needs both secrets; say which one is missing."""
        names = ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")
        missing = [n for n in names if getattr(self, n) is None]
        if self.socket_mode and "SLACK_SIGNING_SECRET" in missing:
            missing.remove("SLACK_SIGNING_SECRET")
        if missing:
            raise SettingsError(
                f"{', '.join(missing)} not set: export the value from your Slack app's "
                "'OAuth & Permissions' (bot token) and 'Basic Information' (signing secret) pages."
            )


def async_database_url(url: str) -> str:
    """Accept the ordinary URL forms and pick the async driver ourselves."""
    if url.startswith("sqlite+aiosqlite://") or url.startswith("postgresql+asyncpg://"):
        return url
    if url.startswith("sqlite://"):
        return "sqlite+aiosqlite://" + url.removeprefix("sqlite://")
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    raise ValueError("use sqlite:///path/to/file.db or postgresql://user:pass@host/db")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings, turning validation errors into one readable message."""
    try:
        if environ is None:
            return Settings()
        given: dict[str, Any] = {k: v for k, v in environ.items() if k in Settings.model_fields}
        return Settings(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            name = ".".join(str(p) for p in err["loc"])
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
        raise SettingsError("Invalid environment settings: " + "; ".join(problems)) from None
