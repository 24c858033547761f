"""How Shipbot signs in to GitHub: a token from an environment variable, or a GitHub App.

A GitHub App (``app_id``, ``installation_id``, ``private_key_env``) signs a JSON Web Token
with its private key (RS256, issued 60 s in the past against clock drift, valid 9 minutes),
trades it for an installation token (``POST /app/installations/{id}/access_tokens``) and
uses that until shortly before it expires (``REFRESH_EARLY_SECONDS``). The key is read from
its environment variable at each signing, so a rotated key needs no restart; neither the
key nor any token is ever in a message or a log line (the names are, to say what to check).

RS256 is done here with the standard library (PKCS #1 v1.5 over SHA-256, RFC 8017): the
key is parsed from its PEM (``RSA PRIVATE KEY`` as GitHub hands it out, or PKCS #8
``PRIVATE KEY``), and only ever used to sign the App's own short-lived JWT.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from integrations.base import IntegrationError
from integrations.command_templates import ProviderEnvName
from integrations.http import HttpOptions, new_client, raise_for_status, send
from integrations.http_auth import check_http_url

GITHUB_API = "https://api.github.com"
API_VERSION = "2022-11-28"
JWT_BACKDATE_SECONDS = 60  # GitHub's advice: against clock drift
JWT_LIFETIME_SECONDS = 540  # GitHub refuses more than 10 minutes
REFRESH_EARLY_SECONDS = 300  # an installation token lives an hour; renewed 5 min early
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")


class GitHubAccess(BaseModel):
    """Where GitHub is and how to sign in: ``token_env``, or a GitHub App's three
    settings. Shared by every GitHub integration's config."""

    token_env: ProviderEnvName = Field(
        "GITHUB_TOKEN", description="NAME of the environment variable holding the token; "
        "or use a GitHub App (app_id, installation_id, private_key_env) instead")
    app_id: int | None = Field(None, gt=0, description="the GitHub App's id (its settings "
                               "page: App ID)")
    installation_id: int | None = Field(
        None, gt=0, description="the App's installation on the repository's owner "
        "(github.com/organizations/ORG/settings/installations/ID)")
    private_key_env: ProviderEnvName | None = Field(
        None, description="NAME of the environment variable holding the App's private "
        "key (the .pem file's contents)")
    base_url: str = Field(GITHUB_API, description="GitHub Enterprise Server: "
                                                  "https://HOST/api/v3")

    @property
    def label(self) -> str:
        """How messages name the server: "GitHub", or "GitHub at ghe.example.com"."""
        return "GitHub" if self.base_url == GITHUB_API else \
            f"GitHub at {httpx.URL(self.base_url).host}"

    @property
    def uses_app(self) -> bool:
        return self.app_id is not None

    @model_validator(mode="before")
    @classmethod
    def _no_secret_here(cls, data: object) -> object:
        if isinstance(data, dict):
            if "token" in data:
                raise ValueError("token: never write the token in shipbot.yml; export it and "
                                 "name the variable in token_env (e.g. token_env: "
                                 "GITHUB_TOKEN)")
            if "private_key" in data:
                raise ValueError("private_key: never write the key in shipbot.yml; export "
                                 "it and name the variable in private_key_env")
        return data

    @field_validator("token_env", "private_key_env", mode="before")
    @classmethod
    def _a_name(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str) and not _ENV_NAME.fullmatch(value):
            what, example = ("token", "GITHUB_TOKEN") if info.field_name == "token_env" \
                else ("key", "GITHUB_APP_KEY")
            raise ValueError(f"must be the NAME of the environment variable holding the "
                             f"{what} (e.g. {example}), never the {what} itself")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parsed = check_http_url(value)
        if parsed.query or parsed.fragment:
            raise ValueError("base_url must not have a ?query or #fragment")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_way_in(self) -> GitHubAccess:
        app = {"app_id": self.app_id, "installation_id": self.installation_id,
               "private_key_env": self.private_key_env}
        given = [name for name, value in app.items() if value is not None]
        if given and len(given) < len(app):
            missing = ", ".join(name for name in app if name not in given)
            raise ValueError(f"a GitHub App needs app_id, installation_id and "
                             f"private_key_env together; missing: {missing}")
        if given and "token_env" in self.model_fields_set:
            raise ValueError("set either token_env or a GitHub App (app_id, installation_id, "
                             "private_key_env), not both")
        return self

    def check_hint(self) -> str:
        """What to check when GitHub refuses the credential."""
        if self.uses_app:
            return (f"the GitHub App {self.app_id} (installation {self.installation_id}), "
                    f"its key in {self.private_key_env} and its permissions")
        return self.token_env


def _github_headers(bearer: str) -> dict[str, str]:
    return {"Accept": "application/vnd.github+json", "Authorization": f"Bearer {bearer}",
            "X-GitHub-Api-Version": API_VERSION, "User-Agent": "shipbot"}


@dataclass
class _Token:
    value: str
    expires_at: float


class GitHubCredentials:
    """The Authorization header for each request, from ``token_env`` or the App."""

    def __init__(self, access: GitHubAccess, provider: str, *,
                 environ: Mapping[str, str], options: HttpOptions,
                 clock: Callable[[], float] = time.time,
                 request_timeout_seconds: float = 30.0) -> None:
        self._access, self._provider = access, provider
        self._environ, self._options, self._clock = environ, options, clock
        self._timeout = request_timeout_seconds
        self._token: _Token | None = None
        self._lock = asyncio.Lock()

    async def headers(self, what: str) -> dict[str, str]:
        """GitHub's headers with a current credential; ``what`` names the caller's use."""
        return _github_headers(await self.token(what))

    async def request(self, method: str, path: str, missing: str, what: str,
                      **kwargs: Any) -> httpx.Response:
        """One call to the API with a current credential, through the shared client and
        its error mapping; ``missing`` names what a 404 means, ``what`` the caller's use."""
        return await self._send(method, path, await self.headers(what), missing, **kwargs)

    async def _send(self, method: str, path: str, headers: dict[str, str], missing: str,
                    **kwargs: Any) -> httpx.Response:
        access = self._access
        async with new_client(self._provider, access.base_url, headers=headers,
                              timeout_seconds=self._timeout, options=self._options) as client:
            response = await send(client, self._provider, access.label, self._options,
                                  method, access.base_url + path, **kwargs)
        raise_for_status(response, label=access.label, token_env=access.check_hint(),
                         missing=missing, now=self._clock)
        return response

    async def token(self, what: str) -> str:
        access = self._access
        if not access.uses_app:
            token = self._environ.get(access.token_env)
            if not token:
                raise IntegrationError(f"the environment variable {access.token_env} "
                                       f"(token_env) is not set: {what} needs a token")
            return token
        async with self._lock:  # one refresh at a time; the others use its token
            now = self._clock()
            if self._token is None or now >= self._token.expires_at - REFRESH_EARLY_SECONDS:
                self._token = await self._installation_token(now)
            return self._token.value

    async def _installation_token(self, now: float) -> _Token:
        access = self._access
        assert access.app_id is not None and access.installation_id is not None
        jwt = app_jwt(access.app_id, self._private_key(), now)
        path = f"/app/installations/{access.installation_id}/access_tokens"
        response = await self._send(
            "POST", path, _github_headers(jwt), f"installation {access.installation_id} of "
            f"the GitHub App {access.app_id}")
        try:
            data = response.json()
            token, expires = data["token"], data["expires_at"]
            expires_at = datetime.fromisoformat(str(expires).replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError):
            raise IntegrationError(f"{access.label} answered the installation token request "
                                   "without a token and its expiry; is base_url the API's "
                                   "URL?") from None
        if not isinstance(token, str) or not token:
            raise IntegrationError(f"{access.label} sent an empty installation token")
        return _Token(token, expires_at.timestamp())

    def _private_key(self) -> RsaKey:
        name = self._access.private_key_env
        assert name is not None
        pem = self._environ.get(name)
        if not pem:
            raise IntegrationError(f"the environment variable {name} (private_key_env) is not "
                                   "set: it must hold the GitHub App's private key (.pem)")
        try:
            return RsaKey.from_pem(pem)
        except ValueError as exc:
            raise IntegrationError(f"the environment variable {name} (private_key_env) does "
                                   f"not hold an RSA private key in PEM: {exc}") from None


# -- RS256 -----------------------------------------------------------------------------

# DER of DigestInfo(sha256, ...) before the 32-byte hash (RFC 8017, section 9.2, note 1).
_SHA256_PREFIX = bytes.fromhex("3031300d060960864801650304020105000420")
_RSA_OID = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_PEM = re.compile(r"-----BEGIN (RSA )?PRIVATE KEY-----(.*?)-----END \1?PRIVATE KEY-----",
                  re.DOTALL)


@dataclass(frozen=True)
class RsaKey:
    """An RSA private key's numbers: enough to sign (with the CRT, as RFC 8017 does)."""

    n: int
    e: int
    d: int
    p: int
    q: int
    dp: int
    dq: int
    qinv: int

    def __repr__(self) -> str:  # never the numbers, should a key end up in a traceback
        return f"RsaKey({self.n.bit_length()} bits)"

    @classmethod
    def from_pem(cls, pem: str) -> RsaKey:
        """PKCS #1 (``BEGIN RSA PRIVATE KEY``) or PKCS #8 (``BEGIN PRIVATE KEY``); the
        newlines may be written as ``\\n`` (a key pasted into a one-line variable)."""
        match = _PEM.search(pem.replace("\\n", "\n"))
        if match is None:
            raise ValueError("no -----BEGIN RSA PRIVATE KEY----- block")
        try:
            der = base64.b64decode("".join(match.group(2).split()), validate=True)
        except ValueError:
            raise ValueError("the block is not base64") from None
        if match.group(1) is None:  # PKCS #8: version, algorithm, OCTET STRING(PKCS #1)
            version, algorithm, wrapped = _sequence(der)[:3]
            if _integer(version) != 0 or _RSA_OID not in algorithm:
                raise ValueError("not an RSA key")
            der = _value(wrapped, 0x04)
        numbers = [_integer(item) for item in _sequence(der)[:9]]
        if len(numbers) < 9 or numbers[0] != 0:
            raise ValueError("not a two-prime RSA private key")
        key = cls(*numbers[1:])
        if key.n != key.p * key.q or key.n.bit_length() < 2048:
            raise ValueError("the key must be RSA with at least 2048 bits")
        return key

    def sign(self, message: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 (RS256)."""
        size = (self.n.bit_length() + 7) // 8
        digest = _SHA256_PREFIX + hashlib.sha256(message).digest()
        encoded = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
        m = int.from_bytes(encoded, "big")
        s1, s2 = pow(m, self.dp, self.p), pow(m, self.dq, self.q)
        s = s2 + self.q * ((self.qinv * (s1 - s2)) % self.p)
        if pow(s, self.e, self.n) != m:  # a fault or an inconsistent key: never send it
            raise ValueError("the key's numbers do not agree")
        return s.to_bytes(size, "big")


def app_jwt(app_id: int, key: RsaKey, now: float) -> str:
    """The App's JWT: issued a minute ago, expiring within 10 minutes, issuer = App id."""
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {"iat": int(now) - JWT_BACKDATE_SECONDS,
              "exp": int(now) + JWT_LIFETIME_SECONDS, "iss": str(app_id)}
    signing_input = f"{_b64(json.dumps(header, separators=(',', ':')).encode())}." \
                    f"{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode()))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _read(der: bytes, at: int) -> tuple[int, bytes, int]:
    """(tag, contents, next offset) of the DER element at ``at``."""
    if at + 2 > len(der):
        raise ValueError("truncated key")
    tag, length, at = der[at], der[at + 1], at + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or at + count > len(der):
            raise ValueError("bad length in key")
        length, at = int.from_bytes(der[at:at + count], "big"), at + count
    if at + length > len(der):
        raise ValueError("truncated key")
    return tag, der[at:at + length], at + length


def _value(der: bytes, tag: int) -> bytes:
    found, contents, _ = _read(der, 0)
    if found != tag:
        raise ValueError("unexpected structure in key")
    return contents


def _sequence(der: bytes) -> list[bytes]:
    """The elements (whole, tag included) of the SEQUENCE that ``der`` is."""
    body, items, at = _value(der, 0x30), [], 0
    while at < len(body):
        _, _, end = _read(body, at)
        items.append(body[at:end])
        at = end
    return items


def _integer(der: bytes) -> int:
    return int.from_bytes(_value(der, 0x02), "big", signed=True)
