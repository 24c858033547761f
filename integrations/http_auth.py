"""URLs, headers and bearer tokens for the HTTP integrations, secrets kept out of config.

Config may carry plain headers only; credentials (Authorization, Cookie...) are refused
there and come from the environment variable that ``bearer_token_env`` names, read at
request time so a rotated secret is picked up without a restart.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Annotated

import httpx
from pydantic import AfterValidator

from integrations.command_templates import EnvName

_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def _plain_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name[:40]!r}")
        if name.lower() in _SECRET_HEADERS:
            raise ValueError(f"{name} is a secret: put it in an env var (bearer_token_env)")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header {name} must be a single line")
    return headers


PlainHeaders = Annotated[dict[str, str], AfterValidator(_plain_headers)]


def with_bearer(headers: Mapping[str, str], token_env: EnvName | None,
                environ: Mapping[str, str]) -> dict[str, str] | str:
    """``headers`` plus ``Authorization: Bearer`` from ``token_env``; or, when that
    variable is unset or empty, the sentence explaining it (callers raise or report)."""
    result = dict(headers)
    if token_env:
        token = environ.get(token_env)
        if not token:
            return f"the environment variable {token_env} (bearer_token_env) is not set"
        result["Authorization"] = f"Bearer {token}"
    return result


def check_http_url(url: str) -> httpx.URL:
    """An http(s) URL with a host and no credentials in it (those go in bearer_token_env)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError("url is not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError("url must be http:// or https:// with a host")
    if parsed.userinfo:
        raise ValueError("url must not contain credentials; use bearer_token_env")
    return parsed


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1): where plain http may carry
    a credential, since it never leaves the machine."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
