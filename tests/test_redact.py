"""The one redaction step: what counts as a secret, what does not, and that it keeps the
structure of what it cleans (Block Kit, JSON strings, log records)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator

import pytest

from bot.config import parse_config
from bot.logs import protect_logs
from bot.redact import REDACTED, RedactingFilter, Redactor, secret_env_names
from bot.settings import Settings

GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
KEY_BLOCK = ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
             "bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----")


@pytest.mark.parametrize(("text", "secret"), [
    ("SLACK_BOT_TOKEN=xoxb-1234-5678-AbCdEfGh", "xoxb-1234-5678-AbCdEfGh"),
    ("user token xoxp-99-88-77-abcdef in a paste", "xoxp-99-88-77-abcdef"),
    ("legacy xoxa-2-abcdef and xoxr-abc-def", "xoxa-2-abcdef"),
    ("socket mode: xapp-1-A0123-456-abcdef0123", "xapp-1-A0123-456-abcdef0123"),
    (f"git push https://{GHP}@github.com/acme/api", GHP),
    ("gho_0123456789abcdefghij0123456789ABCDEF oauth", "gho_0123456789abcdefghij"),
    ("ghs_0123456789abcdefghijABCD server", "ghs_0123456789abcdefghijABCD"),
    ("ghu_0123456789abcdefghijABCD ghr_0123456789abcdefghijABCD", "ghr_0123456789abcdef"),
    ("github_pat_11ABCDEFG0_abcdefghijklmnopqrstuvwxyz0123", "github_pat_11ABCDEFG0"),
    ("aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("session ASIAY34FZKBOKMUTVV7A expires", "ASIAY34FZKBOKMUTVV7A"),
    (f"key:\n{KEY_BLOCK}\nafter", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75v", "MIIEpAIBAAKCAQEA75v"),  # cut off
    ("bm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n-----END RSA PRIVATE KEY-----", "bm9uZQAAAAAAAAAB"),
    ("connecting with password=hunter2!!", "hunter2!!"),
    ("PASSWORD: 'correct horse'", "correct horse"),
    ('{"client_secret": "s3cr3t-value"}', "s3cr3t-value"),
    ("export DEPLOY_TOKEN=abc123def456", "abc123def456"),
    ("curl https://ci/api?token=q1w2e3r4&page=2", "q1w2e3r4"),
    ("db at postgresql://shipbot:Pa55-w0rd@db:5432/shipbot", "Pa55-w0rd"),
    # Every Slack ``xox?-`` shape: rotating refresh tokens, client and cookie tokens.
    ("refreshed with xoxe-1-My0xLTEyMzQ1Njc4OTAtYWJjZGVm", "My0xLTEyMzQ1Njc4OTAtYWJjZGVm"),
    ("browser session xoxc-1234-5678-abcdef0123", "xoxc-1234-5678-abcdef0123"),
    ("cookie d=xoxd-AbCdEf0123456789 in a curl", "xoxd-AbCdEf0123456789"),
    # A quoted value holding the other quote character is still one value.
    ("export DB_PASSWORD=\"it's-my-s3cret\"", "s3cret"),
    ("password: 'say \"friend\" and enter'", "friend"),
])
def test_token_shapes_and_assignments_are_redacted(text: str, secret: str) -> None:
    cleaned = Redactor().text(text)
    assert secret not in cleaned
    assert REDACTED in cleaned


def test_redaction_keeps_the_surrounding_words() -> None:
    r = Redactor()
    assert r.text("curl https://ci/api?token=q1w2e3r4&page=2") == \
        "curl https://ci/api?token=[redacted]&page=2"
    assert r.text('"password": "x"') == '"password": "[redacted]"'
    assert r.text("SLACK_BOT_TOKEN=xoxb-1-2-abc") == "SLACK_BOT_TOKEN=[redacted]"
    assert r.text(f"key:\n{KEY_BLOCK}\nafter") == "key:\n[redacted]\nafter"
    assert r.text(r.text("token=abcdef")) == "token=[redacted]"  # idempotent


@pytest.mark.parametrize("text", [
    "Deployment #12 of api `v1.4.2` to staging is on its way",
    "the token expired; a secret meeting; passwords are hard to remember",
    "max 3 tokens per request, secrets live in the environment",
    "Build passed (exited with code 0) in 2m 3s — <@U0ALICE> deployed xoxb-",
    "ghp_short and AKIA12 are not keys; github_pat_ alone is not either",
    "-----BEGIN PUBLIC KEY----- is not private",
    "https://grafana.example.com/d/abc?orgId=1&from=now-1h",
    "ASIAN markets and AKIAIOSFODNN7EXAMPLEX are not key ids",
])
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert Redactor(["dev", "prod", "abc12"]).text(text) == text


def test_known_values_are_redacted_but_short_or_empty_ones_are_ignored() -> None:
    r = Redactor(["", "1", "dev", "abc12", "Zq8-pLx2dK9w", "Zq8-pLx2dK9w-longer"])
    assert r.text("v1 to dev by abc12") == "v1 to dev by abc12"
    assert r.text("saw Zq8-pLx2dK9w-longer and Zq8-pLx2dK9w") == "saw [redacted] and [redacted]"


def test_bot_settings_and_secret_env_values_are_known_secrets() -> None:
    settings = Settings(
        SLACK_BOT_TOKEN="xoxb-plain-words-here",  # type: ignore[arg-type]
        SLACK_SIGNING_SECRET="8f1e0c2b9a7d6e5f",  # type: ignore[arg-type]
        SHIPBOT_WEBHOOK_TOKEN="webhook-0123456789abcdef",  # type: ignore[arg-type]
        DATABASE_URL="postgresql://shipbot:p%40ss-w0rd-x@db/shipbot",
    )
    config = parse_config({
        "environments": {"dev": {}},
        "services": {"api": {"channel": "#deploys", "deploy": {
            "provider": "command", "argv": ["deploy"], "secret_env": ["DEPLOY_KEY"]}}},
        "metrics": {"url": "http://prometheus:9090", "bearer_token_env": "PROM_TOKEN"},
    })
    assert secret_env_names(config) == {"DEPLOY_KEY", "PROM_TOKEN"}
    r = Redactor.for_bot(settings, config, {"DEPLOY_KEY": "kv9-Mm2-Qa7", "PROM_TOKEN": "pt-88-ZZ-1",
                                            "OTHER": "not-a-secret-1"})
    text = ("8f1e0c2b9a7d6e5f webhook-0123456789abcdef p@ss-w0rd-x p%40ss-w0rd-x "
            "kv9-Mm2-Qa7 pt-88-ZZ-1 not-a-secret-1")
    assert r.text(text) == " ".join([REDACTED] * 6 + ["not-a-secret-1"])


def test_nested_block_kit_keeps_its_structure() -> None:
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "token=abcdef123"},
         "fields": [{"type": "mrkdwn", "text": "*Version*\nv1"}]},
        {"type": "actions", "elements": [{"type": "button", "action_id": "approve",
                                          "value": "12", "text": {"type": "plain_text",
                                                                  "text": "Approve"}}]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": GHP}]},
    ]
    cleaned = Redactor().value({"channel": "C1", "blocks": blocks, "unfurl": False, "n": 3})
    assert cleaned["blocks"][0]["text"]["text"] == "token=[redacted]"
    assert cleaned["blocks"][2]["elements"][0]["text"] == REDACTED
    assert cleaned["blocks"][1] == blocks[1]
    assert (cleaned["unfurl"], cleaned["n"], cleaned["channel"]) == (False, 3, "C1")


def test_json_inside_a_string_is_redacted_value_by_value() -> None:
    """slack_sdk sends blocks and upload titles as JSON strings: still valid JSON after."""
    sent = json.dumps([{"id": "F1", "title": 'chart "token=abc123def"', "n": 1}])
    cleaned = json.loads(Redactor().value(sent))
    assert cleaned == [{"id": "F1", "title": 'chart "token=[redacted]"', "n": 1}]
    assert Redactor().value("[not json] token=abcdef") == "[not json] token=[redacted]"


def test_web_api_credentials_are_not_redacted() -> None:
    """The token a call authenticates with goes to Slack, not into a message."""
    args = {"token": "xapp-1-A1-2-abcdef", "text": "xapp-1-A1-2-abcdef"}
    assert Redactor(["xapp-1-A1-2-abcdef"]).api_args(args) == {
        "token": "xapp-1-A1-2-abcdef", "text": REDACTED}


@pytest.fixture
def redacted_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO)
    protect_logs(Redactor(["signing-secret-0123"]))
    yield caplog
    for logger in [logging.getLogger(), *logging.root.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", []):
            for f in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
                handler.removeFilter(f)


def test_log_records_never_carry_a_secret(redacted_logs: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("bot.engine.runner")
    log.warning("deployment %s: step %s failed: %s", 7, "building",
                RuntimeError("exited 1: password=hunter2hunter2"))
    log.info("signature made with signing-secret-0123 (%d tries)", 3)
    try:
        raise ValueError(f"bad header {GHP}")
    except ValueError:
        log.exception("could not post")
    text = redacted_logs.text
    for secret in ("hunter2hunter2", "signing-secret-0123", GHP):
        assert secret not in text
    assert "step building failed: exited 1: password=[redacted]" in text
    assert "signature made with [redacted] (3 tries)" in text
    assert f"ValueError: bad header {REDACTED}" in text


def test_log_arguments_stay_a_tuple_for_formatters_that_unpack_them(
        redacted_logs: pytest.LogCaptureFixture) -> None:
    """uvicorn's access formatter unpacks (client, method, path, version, status)."""
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1,
                               '%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "GET",
                               "/hooks/xoxb-1-2-abc", "1.1", 200), None)
    RedactingFilter(Redactor()).filter(record)
    assert record.args == ("1.2.3.4:5", "GET", f"/hooks/{REDACTED}", "1.1", 200)


@pytest.mark.timeout(20)
@pytest.mark.parametrize("run", ["A" * 100_000, ("QUJD" * 8 + "\n") * 3000])
def test_a_long_base64_run_without_a_key_end_is_passed_quickly(run: str) -> None:
    """A build log can print a long base64 blob; redaction must not hang on it."""
    text = f"artifact: {run} done"
    assert Redactor().text(text) == text
    key = f"{run}\n-----END RSA PRIVATE KEY-----"
    assert Redactor().text(key) == REDACTED


def test_a_secret_of_exactly_the_minimum_length_is_redacted() -> None:
    assert Redactor(["abc123"]).text("pin abc123 set") == f"pin {REDACTED} set"


def test_a_database_password_is_redacted_however_it_is_encoded() -> None:
    """Written in the URL partly encoded; a driver may print it decoded or fully encoded."""
    settings = Settings(DATABASE_URL="postgresql://shipbot:ab%2Fcd!efgh@db/shipbot")
    r = Redactor.for_bot(settings, None, {})
    for shown in ("ab%2Fcd!efgh", "ab/cd!efgh", "ab%2Fcd%21efgh"):
        assert r.text(f"login failed for {shown}") == f"login failed for {REDACTED}"


def test_a_json_object_string_stays_valid_json() -> None:
    """A cut-off key block swallows the rest of a text; inside JSON only its own value."""
    sent = json.dumps({"log": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA", "ok": True})
    assert json.loads(Redactor().value(sent)) == {"log": REDACTED, "ok": True}


def test_tracebacks_and_stacks_of_a_log_record_are_redacted() -> None:
    try:
        raise ValueError(f"bad header {GHP}")
    except ValueError:
        record = logging.LogRecord("bot", logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info(), sinfo=f"Stack:\n  call({GHP})")
    RedactingFilter(Redactor()).filter(record)
    assert record.exc_text is not None and GHP not in record.exc_text
    assert f"ValueError: bad header {REDACTED}" in record.exc_text
    assert record.stack_info == f"Stack:\n  call({REDACTED})"


@pytest.mark.parametrize("written", ["\n", "\\n"])  # real newlines, or written out
def test_each_line_of_a_multi_line_secret_is_a_secret_alone(written: str) -> None:
    """A build log or an error may quote one line of a secret (a key's line, one of two
    credentials in a file); the lines count alone, the PEM markers around them do not."""
    config = parse_config({
        "environments": {"dev": {}},
        "services": {"api": {"channel": "#deploys", "deploy": {
            "provider": "command", "argv": ["deploy"], "secret_env": ["CREDS", "PEM"]}}},
    })
    creds = "user-alpha-7f3k2" + written + "pass-omega-9q8w1"  # two lines, not base64 runs
    pem = written.join(["-----BEGIN TEST KEY-----", "line-one.x7-k2", "line-two.p9-q4",
                        "-----END TEST KEY-----"])
    r = Redactor.for_bot(Settings(), config, {"CREDS": creds, "PEM": pem, "ONE": "single"})
    assert r.text("failed at pass-omega-9q8w1 here") == f"failed at {REDACTED} here"
    assert r.text("user-alpha-7f3k2") == REDACTED
    assert r.text("saw line-two.p9-q4") == f"saw {REDACTED}"
    assert r.text("-----END TEST KEY----- is the marker") == "-----END TEST KEY----- is the marker"
