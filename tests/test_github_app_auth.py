"""Signing in to GitHub as a GitHub App: the RS256 JWT, the installation token and its
refresh before expiry, the settings' validation, errors that name what to check, and the
key and tokens kept out of everything Shipbot shows."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.config import ConfigError, parse_config
from bot.redact import REDACTED, Redactor, secret_env_names
from bot.settings import Settings
from integrations.base import IntegrationError
from integrations.github_actions import GitHubActionsProvider
from integrations.github_actions_config import GitHubActionsConfig
from integrations.github_auth import RsaKey, app_jwt
from integrations.http import HttpOptions, NotFound, TokenRefused
from tests.conftest import make_config, serving
from tests.fake_github import FakeGitHub
from tests.rsa_keys import public_pem, rsa_key
from tests.test_deploy_flow import finished
from tests.test_github_actions import JOB, NOW, TOKEN, Clock
from tests.test_github_deploy_flow import github_ci

APP_ID, INSTALLATION = 123456, 7890123
APP = {"app_id": APP_ID, "installation_id": INSTALLATION, "private_key_env": "GH_APP_KEY"}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> FakeGitHub:
    _, _, n, e = rsa_key()
    return FakeGitHub(token="not-used-" + "x" * 20, clock=clock,
                      github_app=(APP_ID, INSTALLATION, (n, e)))


def key_pem() -> str:
    return rsa_key()[0]


def make(gh: FakeGitHub, clock: Clock, environ: dict[str, str] | None = None,
         **config: Any) -> GitHubActionsProvider:
    settings = {"repository": "acme/api", "workflow": "build.yml", "ref": "main", **APP,
                **config}
    return GitHubActionsProvider(
        GitHubActionsConfig(**settings),
        options=HttpOptions(transport=httpx.MockTransport(gh.handler)),
        environ={"GH_APP_KEY": key_pem()} if environ is None else environ, clock=clock)


def test_the_jwt_is_rs256_backdated_a_minute_and_short_lived() -> None:
    key = RsaKey.from_pem(key_pem())
    token = app_jwt(APP_ID, key, NOW)
    head, body, _ = token.split(".")
    unb64 = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    assert unb64(head) == {"alg": "RS256", "typ": "JWT"}
    claims = unb64(body)
    assert claims == {"iat": int(NOW) - 60, "exp": int(NOW) + 540, "iss": str(APP_ID)}
    assert claims["exp"] - claims["iat"] <= 600


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl program")
def test_openssl_verifies_the_signature_and_its_keys_are_read(tmp_path: Path) -> None:
    pkcs1, pkcs8, n, e = rsa_key()
    assert RsaKey.from_pem(pkcs1) == RsaKey.from_pem(pkcs8)
    head_body, _, signature = app_jwt(APP_ID, RsaKey.from_pem(pkcs8), NOW).rpartition(".")
    (tmp_path / "pub.pem").write_text(public_pem(n, e))
    (tmp_path / "sig").write_bytes(base64.urlsafe_b64decode(signature + "=="))
    (tmp_path / "msg").write_text(head_body)
    verified = subprocess.run(["openssl", "dgst", "-sha256", "-verify", "pub.pem",
                               "-signature", "sig", "msg"], cwd=tmp_path,
                              capture_output=True, text=True, check=False)
    assert verified.stdout.strip() == "Verified OK"
    made = subprocess.run(["openssl", "genrsa", "2048"], capture_output=True, text=True,
                          check=True).stdout
    assert RsaKey.from_pem(made).n.bit_length() == 2048


@pytest.mark.parametrize(("pem", "problem"), [
    ("", "no -----BEGIN RSA PRIVATE KEY----- block"),
    ("-----BEGIN RSA PRIVATE KEY-----\n%%%\n-----END RSA PRIVATE KEY-----", "not base64"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----",
     "not a two-prime RSA private key"),
])
def test_a_bad_key_is_said_without_showing_it(pem: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        RsaKey.from_pem(pem)
    assert "bits" in repr(RsaKey.from_pem(key_pem()))  # never the numbers


def test_a_key_with_its_newlines_written_out_is_read() -> None:
    assert RsaKey.from_pem(key_pem().replace("\n", "\\n")) == RsaKey.from_pem(key_pem())


async def test_the_installation_token_is_fetched_once_and_used(gh, clock) -> None:
    provider = make(gh, clock)
    await provider.start(JOB)
    await provider.poll("30433642")
    assert [p for _, p in gh.sent("POST")] == [
        f"/app/installations/{INSTALLATION}/access_tokens",
        "/repos/acme/api/actions/workflows/build.yml/dispatches"]
    [claims] = gh.jwts
    assert claims["iss"] == str(APP_ID) and claims["iat"] == int(NOW) - 60
    used = {r.headers["authorization"] for r in gh.requests[1:]}
    assert used == {"Bearer ghs_" + "0" * 35 + "1"}
    assert gh.requests[0].headers["accept"] == "application/vnd.github+json"


async def test_the_token_is_refreshed_five_minutes_before_it_expires(gh, clock) -> None:
    provider = make(gh, clock)
    gh.add_commits("one", tag="v1")
    await provider.compare("v1", "v1")
    clock.now += 3600 - 301  # the token has 5 min and 1 s left: still used
    await provider.compare("v1", "v1")
    assert len(gh.jwts) == 1
    clock.now += 2  # 4 min 59 s left: a new one first
    await provider.compare("v1", "v1")
    assert len(gh.jwts) == 2
    assert gh.requests[-1].headers["authorization"] == "Bearer ghs_" + "0" * 35 + "2"


async def test_a_refused_key_names_the_app_and_the_variable(gh, clock) -> None:
    other = rsa_key(seed=1)  # another App's key
    with pytest.raises(TokenRefused) as caught:
        await make(gh, clock, environ={"GH_APP_KEY": other[0]}).start(JOB)
    message = str(caught.value)
    assert message.startswith("the token for GitHub was refused (HTTP 401: A JSON web token "
                              "could not be decoded): check the GitHub App 123456 "
                              "(installation 7890123), its key in GH_APP_KEY")
    assert "BEGIN" not in message and gh.dispatches() == []


async def test_a_wrong_installation_is_named(gh, clock) -> None:
    with pytest.raises(NotFound) as caught:
        await make(gh, clock, installation_id=42).start(JOB)
    assert str(caught.value).startswith("GitHub has no installation 42 of the GitHub App "
                                        "123456 (HTTP 404)")


@pytest.mark.parametrize(("environ", "problem"), [
    ({}, "the environment variable GH_APP_KEY (private_key_env) is not set: it must hold "
         "the GitHub App's private key (.pem)"),
    ({"GH_APP_KEY": "ghp_oops"}, "the environment variable GH_APP_KEY (private_key_env) does "
     "not hold an RSA private key in PEM: no -----BEGIN RSA PRIVATE KEY----- block"),
])
async def test_a_missing_or_wrong_key_variable_is_said(gh, clock, environ: dict[str, str],
                                                       problem: str) -> None:
    with pytest.raises(IntegrationError) as caught:
        await make(gh, clock, environ=environ).start(JOB)
    assert str(caught.value) == problem
    assert gh.requests == []


@pytest.mark.parametrize(("settings", "problem"), [
    ({"app_id": 1}, "a GitHub App needs app_id, installation_id and private_key_env "
     "together; missing: installation_id, private_key_env"),
    ({**APP, "token_env": "GITHUB_TOKEN"}, "set either token_env or a GitHub App (app_id, "
     "installation_id, private_key_env), not both"),
    ({**APP, "private_key_env": "-----BEGIN"}, "must be the NAME of the environment variable "
     "holding the key (e.g. GITHUB_APP_KEY), never the key itself"),
    ({"private_key": "-----BEGIN RSA PRIVATE KEY-----"}, "private_key: never write the key in "
     "shipbot.yml"),
    ({**APP, "app_id": 0}, "greater than 0"),
])
def test_the_app_settings_are_checked_with_clear_errors(settings: dict[str, Any],
                                                        problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(_config({"provider": "github_actions", "repository": "acme/api",
                              "workflow": "build.yml", "ref": "main", **settings}))
    assert any(problem in p for p in caught.value.problems), caught.value.problems
    assert all("BEGIN RSA" not in p for p in caught.value.problems)


def _config(ci: dict[str, Any]) -> dict[str, Any]:
    return {"environments": {"staging": {}},
            "services": {"api": {"channel": "#deploys", "ci": ci,
                                 "deploy": {"provider": "command", "argv": ["true"]}}}}


def test_the_key_and_each_of_its_lines_are_redacted() -> None:
    config = parse_config(_config({"provider": "github_actions", "repository": "acme/api",
                                   "workflow": "build.yml", "ref": "main", **APP}))
    assert "GH_APP_KEY" in secret_env_names(config)
    pem = key_pem()
    redactor = Redactor.for_bot(Settings(), config, {"GH_APP_KEY": pem})
    line = pem.splitlines()[3]
    assert redactor.text(f"oops: {line}") == f"oops: {REDACTED}"
    assert redactor.text(pem).strip() == REDACTED
    assert line not in redactor.text(pem.replace("\n", "\\n"))
    assert redactor.text("ghs_" + "A" * 36) == REDACTED  # an installation token's shape


async def test_a_deploy_through_the_app_signs_in_as_the_app(
        make_bot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    _, _, n, e = rsa_key()
    gh = FakeGitHub(token="unused-" + "x" * 20, auto_advance=True,
                    github_app=(APP_ID, INSTALLATION, (n, e)))
    monkeypatch.setenv("GH_APP_KEY", key_pem())
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    async with serving(gh.app()) as port:
        ci = {**github_ci(f"http://127.0.0.1:{port}"), **APP}
        bot = await make_bot(make_config(tmp_path, ci=ci))
        await bot.driver.command("api staging v1.4.2")
        [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert len(gh.jwts) == 1 and len(gh.dispatches()) == 1
    assert key_pem().splitlines()[2] not in json.dumps(
        [c.params for c in bot.slack.calls_to("chat.postMessage")])
    assert TOKEN not in json.dumps(gh.sent())


@pytest.mark.parametrize(("argv", "problem"), [
    (["openssl", "genrsa", "1024"], "at least 2048 bits"),  # too short to trust
    (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
     "not an RSA key"),  # GitHub Apps sign with RSA keys only
])
def test_a_key_github_would_not_take_is_refused_before_any_request(
        argv: list[str], problem: str) -> None:
    made = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    with pytest.raises(ValueError, match=problem):
        RsaKey.from_pem(made)


def test_a_truncated_key_is_said_to_be_truncated() -> None:
    whole = key_pem()
    body = "".join(whole.splitlines()[1:-1])
    cut = base64.b64encode(base64.b64decode(body)[:200]).decode()
    with pytest.raises(ValueError, match="truncated key"):
        RsaKey.from_pem(f"-----BEGIN RSA PRIVATE KEY-----\n{cut}\n-----END RSA PRIVATE KEY-----")
