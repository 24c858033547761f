"""Bounded inputs at the edge: body size without Content-Length, signature headers that
are not numbers, button values that are not plain ASCII numbers, versions that could
reach a provider's argv as an option or a path trick. Each is refused and changes nothing."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlmodel import func, select

from bot.devtools.local import LocalBot
from bot.engine.requests import UsageError
from bot.slack.blocks_alerts import ALERT_ACK_ACTION, ALERT_ROLLBACK_ACTION
from bot.store.models import Approval, AuditEvent, Deployment
from commands.actions import ActionId
from commands.catalog import Catalog
from commands.parser import parse
from tests.alert_helpers import alert_config
from tests.test_approvals import prod_request
from tests.test_buttons_and_queries import ephemerals_to

FORM = "application/x-www-form-urlencoded"
CHUNK = 64 * 1024
UPLOAD = 64 * 1024 * 1024  # far beyond every limit, so "not exhausted" means "not read"


@dataclass
class Answer:
    status: int
    body: str
    sent: int  # bytes of the upload written when the answer arrived


async def upload_chunked(url: str, headers: dict[str, str], total: int = UPLOAD) -> Answer:
    """POST a chunked body (no Content-Length) over a plain socket while reading the
    answer, as curl does: httpx would only read it once the whole upload is sent. Stops
    uploading as soon as the server answers, and says how much had been sent by then."""
    where = urlsplit(url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    head = [f"POST {where.path} HTTP/1.1", f"Host: {where.netloc}",
            "Transfer-Encoding: chunked", *(f"{k}: {v}" for k, v in headers.items())]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
    answered = asyncio.create_task(reader.readuntil(b"\r\n\r\n"))
    sent, chunk = 0, b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
    while sent < total and not answered.done():
        writer.write(chunk)
        await writer.drain()
        sent += CHUNK
        await asyncio.sleep(0)  # let the reader see an early answer
    if sent >= total:
        writer.write(b"0\r\n\r\n")
    status_line, *fields = (await asyncio.wait_for(answered, 60)).decode().split("\r\n")
    length = next(int(f.split(":")[1]) for f in fields if f.lower().startswith("content-length"))
    body = (await reader.readexactly(length)).decode()
    writer.close()
    return Answer(int(status_line.split()[1]), body, sent)


async def count(bot: LocalBot, model: type) -> int:
    async with bot.bot.sessions() as session:
        return (await session.exec(select(func.count()).select_from(model))).one()


def signed_looking(timestamp: str | bytes | None = None, signature: str | bytes = "v0=" + "0" * 64
                   ) -> dict[str, str | bytes]:
    """Headers shaped like Slack's (the signature is wrong: nobody here knows the secret)."""
    ts = str(int(time.time())) if timestamp is None else timestamp
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature,
            "Content-Type": FORM}


async def test_chunked_slack_body_is_413_at_the_limit_and_not_read_to_the_end(make_bot) -> None:
    bot = await make_bot()
    answer = await upload_chunked(bot.driver.url, signed_looking())  # type: ignore[arg-type]
    assert answer.status == 413 and "larger than 1000000 bytes" in answer.body
    assert answer.sent < UPLOAD // 4  # answered at the limit, long before the upload ended
    assert await count(bot, Deployment) == 0
    # The endpoint still serves the next (signed, small) request.
    assert "Deployment #1" in (await bot.driver.command("api staging v1.0.0")).json()["text"]


@pytest.mark.parametrize("source", ["alertmanager", "grafana"])
async def test_chunked_webhook_body_is_413_and_not_read_to_the_end(make_bot, tmp_path, quiet,
                                                                   source) -> None:
    bot = await make_bot(alert_config(tmp_path), fake_slack=quiet)
    answer = await upload_chunked(f"{bot.url}/webhooks/{source}",
                                  {"Authorization": f"Bearer {bot.webhook_token}"})
    assert answer.status == 413 and "larger than 1000000 bytes" in answer.body
    assert answer.sent < UPLOAD // 4


@pytest.mark.parametrize("timestamp, signature", [
    ("soon", "v0=" + "0" * 64),
    ("17e8", "v0=" + "0" * 64),
    ("0x6553f100", "v0=" + "0" * 64),
    ("", "v0=" + "0" * 64),
    (None, b"v0=\xe9\xe9"),  # a current timestamp and a signature that is not ASCII
])
async def test_malformed_signature_headers_are_401_not_500(make_bot, timestamp,
                                                            signature) -> None:
    bot = await make_bot()
    body = bot.driver.command_body("api staging v1.0.0")
    resp = await bot.driver.http.post(bot.driver.url, content=body,
                                      headers=signed_looking(timestamp, signature))
    assert resp.status_code == 401
    assert "Traceback" not in resp.text and "Internal Server Error" not in resp.text
    assert await count(bot, Deployment) == 0 and await count(bot, AuditEvent) == 0


# '²' is str.isdigit() but int() refuses it; Arabic-Indic and full-width 2 are digits int()
# reads as 2.
NOT_PLAIN_NUMBERS = ["²", "٢", "２", "+2", " 2", "2 ", "2_0", "-2", "2.0", "0x2", ""]


async def test_button_values_that_are_not_plain_ascii_numbers_are_refused(make_bot,
                                                                          tmp_path) -> None:
    bot, _ = await prod_request(make_bot, tmp_path)  # deployment #2 awaits an approval
    before = await count(bot, AuditEvent)
    clicks = [(action, value) for value in NOT_PLAIN_NUMBERS
              for action in (ActionId.APPROVE, ActionId.CANCEL, ActionId.PAUSE)]
    clicks += [(ActionId.REJECT, "²"), (ALERT_ROLLBACK_ACTION, "¹"), (ALERT_ACK_ACTION, "١")]
    for action, value in clicks:
        resp = await bot.driver.click(action, value, user="U0CAROL")
        assert resp.status_code == 200, (action, value)
    replies = await ephemerals_to(bot, "U0CAROL", count=len(clicks))
    assert len(replies) == len(clicks)
    for reply in replies:
        assert "That button is not valid any more. Use `/deploy status` instead." in reply
    deps = await _deployments(bot)
    assert [d.state for d in deps] == ["succeeded", "awaiting_approval"]
    assert await count(bot, Approval) == 0 and await count(bot, AuditEvent) == before
    assert bot.slack.calls_to("views.open") == []


async def _deployments(bot: LocalBot) -> list[Deployment]:
    async with bot.bot.sessions() as session:
        return list((await session.exec(select(Deployment).order_by(Deployment.id))).all())


@pytest.mark.parametrize("text, rule", [
    ("api dev -rf", "starts with '-': a deploy command would read it as an option"),
    ("api staging -oProxyCommand=x", "starts with '-'"),
    ("api staging ../../etc/passwd", "contains '..'"),
    ("api staging release//1", "contains '//'"),
    ("api staging main@{1}", "contains '@{'"),
    ("api staging /v1", "starts with '/'"),
    ("api staging .v1", "starts with '.'"),
    ("api staging v1/", "ends with '/'"),
    ("api staging v1.", "ends with '.'"),
    ("api staging v1.lock", "ends with '.lock'"),
    ("rollback api staging -rf", "starts with '-'"),
])
async def test_versions_breaking_ref_rules_are_refused_and_start_nothing(
        make_bot, tmp_path: Path, text: str, rule: str) -> None:
    bot = await make_bot()
    resp = await bot.driver.command(text)
    body = resp.json()
    assert body["response_type"] == "ephemeral"
    assert rule in body["text"] and "for example v1.4.2" in body["text"], body["text"]
    assert await count(bot, Deployment) == 0 and await count(bot, AuditEvent) == 0
    logs = [tmp_path / name for name in ("ci.log", "deploy.log", "web.log")]
    assert not any(map(Path.exists, logs))  # no provider ran


CATALOG = Catalog({"api": ["dev", "staging", "production"]})


@pytest.mark.parametrize("version", [
    "v1.4.2", "2026.11.26-3", "2026.11.26-3+build/7_rc", "3f2a9c1d8e", "sha-3f2a9c1",
    "release/2026-11", "1.0.0-rc.1+exp.sha.5114f85", "v" * 128, "a.b/c_d",
])
def test_valid_versions_are_kept(version: str) -> None:
    command = parse(f"api staging {version}", CATALOG, datetime.now(UTC))
    assert command.version == version  # type: ignore[union-attr]


def test_version_length_limit() -> None:
    with pytest.raises(UsageError, match="129 characters long; the limit is 128"):
        parse("api staging " + "v" * 129, CATALOG, datetime.now(UTC))


async def test_a_body_that_is_not_utf8_is_400_not_500(make_bot) -> None:
    bot = await make_bot()
    resp = await bot.driver.http.post(bot.driver.url, content=b"payload=\xff\xfe",
                                      headers=signed_looking())
    assert resp.status_code == 400 and resp.json()["error"] == "the request body is not UTF-8"


async def test_slacks_unsigned_ssl_check_is_still_answered(make_bot) -> None:
    """The header checks refuse malformed headers, not missing ones: Bolt answers Slack's
    certificate check (sent without a signature) and refuses everything else unsigned."""
    bot = await make_bot()
    check = await bot.driver.http.post(bot.driver.url, content="ssl_check=1&token=x",
                                       headers={"Content-Type": FORM})
    assert check.status_code == 200
    assert await count(bot, Deployment) == 0
