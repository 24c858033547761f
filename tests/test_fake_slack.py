"""FakeSlack driven by the real slack_sdk client, so the fake stays honest about the wire format."""

from __future__ import annotations

import asyncio
import io
import json
import math
import re
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import yaml
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import builtin_async_handlers
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator
from slack_sdk.web.async_client import AsyncWebClient

from bot.devtools.driver import SlackDriver
from bot.devtools.fake_slack import FakeSlack
from bot.devtools.fake_slack_api import BOT_SCOPES
from bot.devtools.fake_slack_rates import METHOD_TIERS, SPECIAL_PER_CHANNEL, TIERS

TS_RE = re.compile(r"^\d{10}\.\d{6}$")
CHANNEL_ID_RE = re.compile(r"^C[A-Z0-9]{10}$")


class FakeClock:
    """Manually advanced monotonic clock so rate-limit tests never depend on wall time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(text: str = "Go", **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text}, **extra}


CHANNELS = ("C0", "C1", "C2", "#deploys-api", "#deploys-web")


def with_channels(fake: FakeSlack, *channels: str) -> FakeSlack:
    """The workspace's channels, the bot and U1 in each (the fake knows no others)."""
    for channel in channels or CHANNELS:
        fake.add_channel(channel, members=["U1"])
    return fake


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:  # every rate limit on: no test here comes near one
        yield with_channels(server)


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token="xoxb-test", base_url=fake.base_url)


async def expect_error(call: Any, error: str, status: int = 200) -> SlackApiError:
    with pytest.raises(SlackApiError) as info:
        await call
    assert info.value.response.status_code == status
    assert info.value.response["error"] == error
    return info.value


# -- lifecycle and basics --------------------------------------------------------------


async def test_base_url_and_auth_test(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/", fake.base_url)
    resp = await client.auth_test()
    assert (resp["user_id"], resp["bot_id"], resp["team_id"]) == ("UBOT", "BBOT", "T0001")
    assert resp["team"] == "Shipbot test"
    assert (await client.conversations_join(channel="C1"))["channel"]["id"] == "C1"


async def test_base_url_requires_start() -> None:
    with pytest.raises(RuntimeError):
        _ = FakeSlack().base_url


async def test_bad_or_missing_token() -> None:
    async with FakeSlack(tokens={"xoxb-good"}) as fake:
        good = AsyncWebClient(token="xoxb-good", base_url=fake.base_url)
        assert (await good.auth_test())["ok"]
        await expect_error(
            AsyncWebClient(token="xoxb-bad", base_url=fake.base_url).auth_test(), "invalid_auth"
        )
        await expect_error(AsyncWebClient(base_url=fake.base_url).auth_test(), "not_authed")
        assert [c.failed for c in fake.calls_to("auth.test")] == [False, True, True]


async def test_default_tokens_accept_only_bot_tokens(fake: FakeSlack) -> None:
    user_client = AsyncWebClient(token="xoxp-user", base_url=fake.base_url)
    await expect_error(user_client.auth_test(), "invalid_auth")


async def test_unknown_method(client: AsyncWebClient) -> None:
    await expect_error(client.api_call("nope.nothing"), "unknown_method")


async def test_invalid_json_body(fake: FakeSlack) -> None:
    headers = {"Authorization": "Bearer xoxb-x", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        url = fake.base_url + "chat.postMessage"
        async with session.post(url, data=b"{nope", headers=headers) as resp:
            assert (await resp.json())["error"] == "invalid_json"


# -- messages ------------------------------------------------------------------------------


async def test_post_message_records_json_call_and_stores(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    blocks = [section("*Deploy* api v1.2")]
    resp = await client.chat_postMessage(channel="C1", text="Deploy api", blocks=blocks)
    assert resp["channel"] == "C1"
    assert TS_RE.match(resp["ts"])
    assert resp["message"]["blocks"] == blocks
    (call,) = fake.calls_to("chat.postMessage")
    assert call.params == {"channel": "C1", "text": "Deploy api", "blocks": blocks}
    assert call.headers["Authorization"] == "Bearer xoxb-test"
    assert call.headers["Content-Type"].startswith("application/json")  # slack_sdk sends JSON
    assert not call.failed
    (stored,) = fake.messages("C1")
    assert (stored["ts"], stored["text"], stored["replies"]) == (resp["ts"], "Deploy api", [])


async def test_timestamps_are_unique_and_increasing(client: AsyncWebClient) -> None:
    stamps = [
        (await client.chat_postMessage(channel=f"C{i % 2}", text="x"))["ts"] for i in range(5)
    ]
    assert stamps == sorted(set(stamps), key=float)


async def test_form_encoded_post_decodes_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [section("from a form")]
    form = {"channel": "C1", "text": "t", "blocks": json.dumps(blocks)}
    await client.api_call("chat.postMessage", data=form)
    (call,) = fake.calls_to("chat.postMessage")
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert call.params["blocks"] == blocks
    assert fake.messages("C1")[0]["blocks"] == blocks


async def test_update_edits_message(fake: FakeSlack, client: AsyncWebClient) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="deploying"))["ts"]
    resp = await client.chat_update(channel="C1", ts=ts, text="deployed", blocks=[section("ok")])
    assert resp["ts"] == ts
    assert resp["text"] == "deployed"
    (msg,) = fake.messages("C1")
    assert msg["text"] == "deployed"
    assert msg["blocks"] == [section("ok")]
    assert "edited" in msg
    await expect_error(
        client.chat_update(channel="C1", ts="1.000001", text="x"), "message_not_found"
    )


async def test_thread_replies(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = (await client.chat_postMessage(channel="C1", text="root"))["ts"]
    r1 = await client.chat_postMessage(channel="C1", text="step 1", thread_ts=root)
    await client.chat_postMessage(channel="C1", text="step 2", thread_ts=r1["ts"])
    assert r1["message"]["thread_ts"] == root
    (msg,) = fake.messages("C1")
    assert [r["text"] for r in msg["replies"]] == ["step 1", "step 2"]
    assert msg["reply_count"] == 2
    assert [m["text"] for m in fake.thread("C1", root)] == ["root", "step 1", "step 2"]
    assert fake.thread("C1", "9.999999") == []


async def test_ephemeral_and_delete(fake: FakeSlack, client: AsyncWebClient) -> None:
    eph = await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    assert TS_RE.match(eph["message_ts"])
    assert fake.ephemerals[0]["user"] == "U1"
    assert fake.messages("C1") == []
    ts = (await client.chat_postMessage(channel="C1", text="bye"))["ts"]
    await client.chat_postMessage(channel="C1", text="reply", thread_ts=ts)
    assert (await client.chat_delete(channel="C1", ts=ts))["ts"] == ts
    assert fake.messages("C1") == []
    assert fake.calls_to("chat.delete")[0].params == {"channel": "C1", "ts": ts}  # query string
    await expect_error(client.chat_delete(channel="C1", ts=ts), "message_not_found")


# -- channel IDs ------------------------------------------------------------------------------


async def test_post_by_name_answers_with_the_channel_id(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    resp = await client.chat_postMessage(channel="#deploys-api", text="card")
    channel = resp["channel"]
    assert CHANNEL_ID_RE.match(channel)
    assert channel == fake.channel_id("#deploys-api") == fake.channel_id("deploys-api")
    assert fake.channel_name(channel) == "deploys-api"
    root = resp["ts"]
    again = await client.chat_postMessage(channel="deploys-api", text="no hash", thread_ts=root)
    by_id = await client.chat_postMessage(channel=channel, text="by id", thread_ts=root)
    assert again["channel"] == by_id["channel"] == channel
    assert fake.messages("#deploys-api") == fake.messages(channel)
    replies = fake.messages("#deploys-api")[0]["replies"]
    assert [r["text"] for r in replies] == ["no hash", "by id"]
    assert (await client.chat_update(channel=channel, ts=root, text="x"))["channel"] == channel
    assert fake.thread("#deploys-api", root)[0]["text"] == "x"


async def test_methods_that_take_only_ids_refuse_names(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    ts = (await client.chat_postMessage(channel="#deploys-api", text="card"))["ts"]
    await expect_error(client.chat_update(channel="#deploys-api", ts=ts, text="x"),
                       "channel_not_found")
    await expect_error(client.chat_update(channel="deploys-api", ts=ts, text="x"),
                       "channel_not_found")
    await expect_error(client.chat_delete(channel="#deploys-api", ts=ts), "channel_not_found")
    await expect_error(client.chat_getPermalink(channel="#deploys-api", message_ts=ts),
                       "channel_not_found")
    await expect_error(client.conversations_join(channel="#deploys-api"), "channel_not_found")
    got = await client.files_getUploadURLExternal(filename="a.txt", length=1)
    async with aiohttp.ClientSession() as session, session.post(got["upload_url"], data=b"x"):
        pass
    files = [{"id": got["file_id"]}]
    await expect_error(client.files_completeUploadExternal(files=files, channel_id="#deploys-api"),
                       "channel_not_found")
    assert fake.messages("#deploys-api")[0]["text"] == "card"  # untouched
    channel = fake.channel_id("#deploys-api")
    done = await client.files_completeUploadExternal(files=files, channel_id=channel)
    assert done["files"][0]["channels"] == [channel]
    joined = (await client.conversations_join(channel=channel))["channel"]
    assert (joined["id"], joined["name"]) == (channel, "deploys-api")


async def test_the_same_name_always_maps_to_the_same_id(client: AsyncWebClient) -> None:
    async with FakeSlack() as other:
        with_channels(other)
        elsewhere = AsyncWebClient(token="xoxb-test", base_url=other.base_url)
        first = (await client.chat_postMessage(channel="#deploys-web", text="a"))["channel"]
        second = (await client.chat_postMessage(channel="#deploys-web", text="b"))["channel"]
        fresh = (await elsewhere.chat_postMessage(channel="#deploys-web", text="c"))["channel"]
    assert first == second == fresh == FakeSlack().channel_id("#deploys-web")
    assert FakeSlack().channel_id("#deploys-api") != first
    assert FakeSlack().channel_id("C0123ABCD") == "C0123ABCD"  # IDs pass through


async def test_post_to_a_user_goes_to_the_apps_dm(fake: FakeSlack, client: AsyncWebClient) -> None:
    resp = await client.chat_postMessage(channel="U0BOB", text="psst")
    assert re.fullmatch(r"D[A-Z0-9]{10}", resp["channel"])
    assert resp["channel"] == fake.channel_id("U0BOB")
    assert fake.channels.user_of(resp["channel"]) == "U0BOB"
    assert [m["text"] for m in fake.messages("U0BOB")] == ["psst"]
    await client.chat_update(channel=resp["channel"], ts=resp["ts"], text="edited")
    assert fake.messages(resp["channel"])[0]["text"] == "edited"
    await expect_error(client.chat_update(channel="U0BOB", ts=resp["ts"], text="x"),
                       "channel_not_found")


async def test_ephemeral_by_name_and_permalinks(fake: FakeSlack, client: AsyncWebClient) -> None:
    """chat.postEphemeral is documented to take "an encoded ID, or a name"."""
    await client.chat_postEphemeral(channel="#deploys-api", user="U1", text="only you")
    assert fake.ephemerals[0]["channel"] == fake.channel_id("#deploys-api")
    await expect_error(client.chat_postEphemeral(channel="#Not a name", user="U1", text="x"),
                       "channel_not_found")
    root = await client.chat_postMessage(channel="#deploys-api", text="root")
    reply = await client.chat_postMessage(channel=root["channel"], text="r", thread_ts=root["ts"])
    link = (await client.chat_getPermalink(channel=root["channel"], message_ts=root["ts"]))
    assert link["permalink"].endswith(f"/archives/{root['channel']}/p{root['ts'].replace('.', '')}")
    threaded = await client.chat_getPermalink(channel=root["channel"], message_ts=reply["ts"])
    assert f"?thread_ts={root['ts']}&cid={root['channel']}" in threaded["permalink"]


async def test_rate_limit_is_per_channel_whatever_it_is_called() -> None:
    clock = FakeClock()
    async with FakeSlack(post_burst=2, clock=clock) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        await client.chat_postMessage(channel="#deploys-api", text="1")
        await client.chat_postMessage(channel=fake.channel_id("#deploys-api"), text="2")
        await expect_error(client.chat_postMessage(channel="deploys-api", text="3"),
                           "ratelimited", 429)


def test_driver_payloads_carry_channel_ids() -> None:
    fake = FakeSlack()
    driver = SlackDriver("http://127.0.0.1:1", "secret", channels=fake.channels)
    api = fake.channel_id("#deploys-api")
    fake.add_channel("#deploys-api")
    click = driver.action_payload("deploy_cancel", "1", channel="#deploys-api")
    assert click["channel"] == {"id": api, "name": "deploys-api"}
    assert click["container"]["channel_id"] == api
    default = driver.action_payload("deploy_cancel", "1")
    assert CHANNEL_ID_RE.match(default["channel"]["id"])
    assert default["channel"]["name"] == "deploys"
    assert driver.action_payload("x", "1", channel="C0123ABCD")["channel"]["id"] == "C0123ABCD"
    command = driver.command_body("status", channel="#deploys-web")
    assert f"channel_id={fake.channel_id('#deploys-web')}&channel_name=deploys-web" in command


# -- Block Kit limits ------------------------------------------------------------------------


async def test_too_many_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    err = await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=[section("b")] * 51),
        "invalid_blocks",
    )
    assert err.response["errors"] == ["no more than 50 items allowed [json-pointer:/blocks]"]
    assert err.response["response_metadata"]["messages"][0].startswith("[ERROR] no more than 50")
    assert fake.calls_to("chat.postMessage")[0].failed
    assert fake.messages("C1") == []
    assert (await client.chat_postMessage(channel="C1", text="x", blocks=[section("b")] * 50))["ok"]


async def test_long_section_text(client: AsyncWebClient) -> None:
    err = await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=[section("a" * 3001)]),
        "invalid_blocks",
    )
    assert err.response["errors"] == [
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]"
    ]
    assert (await client.chat_postMessage(channel="C1", text="x", blocks=[section("a" * 3000)]))[
        "ok"
    ]


FIELD = {"type": "mrkdwn", "text": "f"}
BAD_BLOCKS: dict[str, tuple[dict[str, Any], str]] = {
    "fields": ({"type": "section", "fields": [FIELD] * 11}, "/blocks/0/fields"),
    "field_text": (
        {"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]},
        "/blocks/0/fields/0/text",
    ),
    "header": ({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}, "text/text"),
    "actions": ({"type": "actions", "elements": [button()] * 26}, "/blocks/0/elements"),
    "button_text": ({"type": "actions", "elements": [button("b" * 76)]}, "elements/0/text/text"),
    "button_value": ({"type": "actions", "elements": [button(value="v" * 2001)]}, "0/value"),
    "action_id": ({"type": "actions", "elements": [button(action_id="a" * 256)]}, "0/action_id"),
    "block_id": ({**section("s"), "block_id": "b" * 256}, "/blocks/0/block_id"),
    "context": ({"type": "context", "elements": [FIELD] * 11}, "/blocks/0/elements"),
    "accessory": ({**section("s"), "accessory": button("b" * 76)}, "accessory/text/text"),
}


@pytest.mark.parametrize("case", sorted(BAD_BLOCKS))
async def test_block_kit_limits(client: AsyncWebClient, case: str) -> None:
    block, pointer = BAD_BLOCKS[case]
    err = await expect_error(
        client.chat_postMessage(channel="C1", text="x", blocks=[block]), "invalid_blocks"
    )
    (message,) = err.response["errors"]
    assert pointer in message


async def test_limits_on_update_and_ephemeral(client: AsyncWebClient) -> None:
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    too_long = [section("a" * 3001)]
    update = client.chat_update(channel="C1", ts=ts, text="x", blocks=too_long)
    await expect_error(update, "invalid_blocks")
    ephemeral = client.chat_postEphemeral(channel="C1", user="U1", text="x", blocks=too_long)
    await expect_error(ephemeral, "invalid_blocks")


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_no_text_and_msg_too_long(client: AsyncWebClient) -> None:
    await expect_error(client.chat_postMessage(channel="C1"), "no_text")
    await expect_error(client.chat_postMessage(channel="C1", text="x" * 40_001), "msg_too_long")
    assert (await client.chat_postMessage(channel="C1", text="x" * 40_000))["ok"]


# -- rate limits and failure injection ---------------------------------------------------------


async def test_rate_limit_returns_429_with_retry_after() -> None:
    clock = FakeClock()
    async with FakeSlack(post_burst=2, clock=clock) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        for _ in range(2):
            await client.chat_postMessage(channel="C1", text="burst")
        err = await expect_error(
            client.chat_postMessage(channel="C1", text="x"), "ratelimited", 429
        )
        assert err.response.headers["Retry-After"] == "1"
        assert (await client.chat_postMessage(channel="C2", text="other channel"))["ok"]
        clock.advance(1.0)
        assert (await client.chat_postMessage(channel="C1", text="refilled"))["ok"]
        assert [c.status for c in fake.calls_to("chat.postMessage")] == [200, 200, 429, 200, 200]
        assert len(fake.messages("C1")) == 3


async def test_rate_limit_retry_after_grows_with_slow_rate() -> None:
    clock = FakeClock()
    async with FakeSlack(post_burst=1, post_rate_per_channel=0.25, clock=clock) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        await client.chat_postMessage(channel="C1", text="one")
        err = await expect_error(
            client.chat_postMessage(channel="C1", text="x"), "ratelimited", 429
        )
        assert err.response.headers["Retry-After"] == "4"


async def test_rate_limit_retry_handler_eventually_succeeds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        """The handler sleeps Retry-After + jitter; move the fake's clock instead of waiting."""
        slept.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    monkeypatch.setattr(builtin_async_handlers, "asyncio", SimpleNamespace(sleep=fake_sleep))
    async with FakeSlack(post_burst=1, clock=clock) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
        await client.chat_postMessage(channel="C1", text="first")
        resp = await client.chat_postMessage(channel="C1", text="second")
        assert resp["ok"]
        assert [c.status for c in fake.calls_to("chat.postMessage")] == [200, 429, 200]
        assert len(slept) == 1
        assert 1.0 <= slept[0] < 2.0
        assert [m["text"] for m in fake.messages("C1")] == ["first", "second"]


async def test_fail_next_server_error(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("chat.postMessage", error="fatal_error", status=500, times=2)
    for _ in range(2):
        await expect_error(client.chat_postMessage(channel="C1", text="x"), "fatal_error", 500)
    assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]
    assert [c.failed for c in fake.calls_to("chat.postMessage")] == [True, True, False]
    assert len(fake.messages("C1")) == 1


async def test_fail_next_with_server_error_retry_handler(fake: FakeSlack) -> None:
    handler = AsyncServerErrorRetryHandler(
        max_retry_count=1, interval_calculator=FixedValueRetryIntervalCalculator(0.01)
    )
    client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url, retry_handlers=[handler])
    fake.fail_next("chat.update", status=503)
    ts = (await client.chat_postMessage(channel="C1", text="x"))["ts"]
    assert (await client.chat_update(channel="C1", ts=ts, text="y"))["ok"]
    assert [c.status for c in fake.calls_to("chat.update")] == [503, 200]


async def test_fail_next_ratelimited(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.fail_next("users.info", error="ratelimited", retry_after=30)
    err = await expect_error(client.users_info(user="U1"), "ratelimited", 429)
    assert err.response.headers["Retry-After"] == "30"
    assert (await client.users_info(user="U1"))["ok"]


# -- users, groups, views ---------------------------------------------------------------


async def test_users_info_strict_and_lenient() -> None:
    async with FakeSlack(strict_users=True) as fake:
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        fake.add_user("U1", "alice", real_name="Alice A", deleted=True)
        user = (await client.users_info(user="U1"))["user"]
        assert (user["name"], user["real_name"], user["tz"], user["deleted"]) == (
            "alice",
            "Alice A",
            "UTC",
            True,
        )
        await expect_error(client.users_info(user="U404"), "user_not_found")
    async with FakeSlack() as lenient:
        client = AsyncWebClient(token="xoxb-test", base_url=lenient.base_url)
        assert (await client.users_info(user="U777"))["user"]["id"] == "U777"
        await expect_error(client.users_info(user="nobody"), "user_not_found")


async def test_usergroups(fake: FakeSlack, client: AsyncWebClient) -> None:
    fake.add_usergroup("S1", "oncall", ["U1", "U2"], name="On call")
    plain = (await client.usergroups_list())["usergroups"]
    assert plain == [
        {"id": "S1", "team_id": "T0001", "handle": "oncall", "name": "On call", "user_count": 2}
    ]
    with_users = (await client.usergroups_list(include_users=True))["usergroups"]
    assert with_users[0]["users"] == ["U1", "U2"]
    assert (await client.usergroups_users_list(usergroup="S1"))["users"] == ["U1", "U2"]
    await expect_error(client.usergroups_users_list(usergroup="S404"), "no_such_subteam")


def modal(title: str = "Deploy", blocks: int = 1) -> dict[str, Any]:
    return {
        "type": "modal",
        "title": {"type": "plain_text", "text": title},
        "blocks": [section("b")] * blocks,
    }


async def test_views_open_and_update(fake: FakeSlack, client: AsyncWebClient) -> None:
    err = await expect_error(client.views_open(view=modal()), "invalid_arguments")
    assert "trigger_id" in err.response["response_metadata"]["messages"][0]
    trigger = fake.issue_trigger()
    await expect_error(client.views_open(trigger_id=trigger, view=modal("x" * 25)),
                       "invalid_arguments")
    await expect_error(
        client.views_open(trigger_id=trigger, view=modal(blocks=101)), "invalid_arguments"
    )
    view = (await client.views_open(trigger_id=trigger, view=modal(blocks=100)))["view"]
    assert view["id"].startswith("V")
    assert view["title"]["text"] == "Deploy"
    updated = (await client.views_update(view_id=view["id"], view=modal("Done")))["view"]
    assert (updated["id"], updated["title"]["text"]) == (view["id"], "Done")
    assert fake.views[view["id"]]["title"]["text"] == "Done"
    await expect_error(client.views_update(view_id="V404", view=modal()), "not_found")


# -- files ----------------------------------------------------------------------------------


async def test_files_upload_v2_flow(fake: FakeSlack, client: AsyncWebClient) -> None:
    root = (await client.chat_postMessage(channel="C1", text="deploy log"))["ts"]
    resp = await client.files_upload_v2(
        channel="C1",
        thread_ts=root,
        content=b"line 1\nline 2\n",
        filename="deploy.log",
        title="Deploy log",
        initial_comment="full log",
    )
    assert resp["file"]["title"] == "Deploy log"
    (upload,) = fake.uploads
    assert upload["bytes"] == b"line 1\nline 2\n"
    assert (upload["filename"], upload["title"]) == ("deploy.log", "Deploy log")
    assert (upload["channel"], upload["thread_ts"]) == ("C1", root)
    (share,) = fake.messages("C1")[0]["replies"]
    assert share["files"][0]["id"] == upload["file_id"]
    assert share["text"] == "full log"
    get_url = fake.calls_to("files.getUploadURLExternal")[0]
    assert get_url.params["length"] == "14"  # query-string params arrive as strings


async def test_complete_upload_without_bytes_fails(client: AsyncWebClient) -> None:
    got = await client.files_getUploadURLExternal(filename="a.txt", length=3)
    await expect_error(
        client.files_completeUploadExternal(files=[{"id": got["file_id"]}], channel_id="C1"),
        "file_not_found",
    )


# -- waiting -----------------------------------------------------------------------------------


async def test_wait_for_background_calls(fake: FakeSlack, client: AsyncWebClient) -> None:
    async def later() -> None:
        await asyncio.sleep(0.01)
        for i in range(3):
            await client.chat_postMessage(channel="C1", text=f"m{i}")

    task = asyncio.create_task(later())
    calls = await fake.wait_for("chat.postMessage", count=3, timeout=2.0)
    assert [c.params["text"] for c in calls] == ["m0", "m1", "m2"]
    await task
    texts = await fake.wait_for(lambda c: c.params.get("text") == "m1")
    assert len(texts) == 1
    with pytest.raises(TimeoutError, match=r"chat\.update"):
        await fake.wait_for("chat.update", timeout=0.05)
    fake.clear()
    assert fake.calls == []
    assert len(fake.messages("C1")) == 3


async def test_multipart_bodies(fake: FakeSlack, client: AsyncWebClient) -> None:
    await client.api_call(
        "chat.postMessage", data={"channel": "C1", "text": "hi"}, files={"file": io.BytesIO(b"abc")}
    )
    (call,) = fake.calls_to("chat.postMessage")
    assert call.headers["Content-Type"].startswith("multipart/form-data")
    assert (call.params["text"], call.params["file"]) == ("hi", b"abc")
    got = await client.files_getUploadURLExternal(filename="a.bin", length=3)
    form = aiohttp.FormData()
    form.add_field("file", b"xyz", filename="a.bin")
    async with aiohttp.ClientSession() as session, session.post(got["upload_url"], data=form) as r:
        assert (r.status, await r.text()) == (200, "OK - 3")
    done = await client.files_completeUploadExternal(files=[{"id": got["file_id"]}])
    assert done["files"][0]["title"] == "a.bin"
    assert (fake.uploads[0]["bytes"], fake.uploads[0]["channel"]) == (b"xyz", None)


# -- refusals: channels, members, users ---------------------------------------------------------


async def test_unknown_channels_are_not_found(fake: FakeSlack, client: AsyncWebClient) -> None:
    """Slack knows only the workspace's channels: a name or ID nobody created is not found."""
    for channel in ("#nowhere", "nowhere", "C0NOPE1234"):
        await expect_error(client.chat_postMessage(channel=channel, text="x"), "channel_not_found")
        await expect_error(client.chat_postEphemeral(channel=channel, user="U1", text="x"),
                           "channel_not_found")
    await expect_error(client.chat_update(channel="C0NOPE1234", ts="1.000001", text="x"),
                       "channel_not_found")
    await expect_error(client.conversations_join(channel="C0NOPE1234"), "channel_not_found")
    assert fake.messages("#nowhere") == []
    fake.add_channel("#nowhere")
    assert (await client.chat_postMessage(channel="#nowhere", text="x"))["ok"]


async def test_private_channel_without_the_bot_is_not_found(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    fake.add_channel("#secret", private=True, bot_member=False, members=["U1"])
    await expect_error(client.chat_postMessage(channel="#secret", text="x"), "channel_not_found")
    fake.add_channel("#secret", private=True, members=["U1"])  # the bot is invited
    assert (await client.chat_postMessage(channel="#secret", text="x"))["ok"]


async def test_not_in_channel_unless_chat_write_public_or_joined() -> None:
    async with FakeSlack(scopes=("chat:write",)) as fake:
        fake.add_channel("#ops", bot_member=False)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        await expect_error(client.chat_postMessage(channel="#ops", text="x"), "not_in_channel")
        await client.conversations_join(channel=fake.channel_id("#ops"))
        assert (await client.chat_postMessage(channel="#ops", text="x"))["ok"]
    async with FakeSlack() as public:  # manifest.yml grants chat:write.public
        public.add_channel("#ops", bot_member=False)
        client = AsyncWebClient(token="xoxb-test", base_url=public.base_url)
        assert (await client.chat_postMessage(channel="#ops", text="x"))["ok"]


def test_the_fakes_scopes_are_the_manifests() -> None:
    manifest = yaml.safe_load((Path(__file__).parents[1] / "manifest.yml").read_text())
    assert sorted(manifest["oauth_config"]["scopes"]["bot"]) == sorted(BOT_SCOPES)


async def test_ephemeral_to_a_user_not_in_the_channel(
    fake: FakeSlack, client: AsyncWebClient
) -> None:
    await expect_error(client.chat_postEphemeral(channel="C1", user="U2", text="x"),
                       "user_not_in_channel")
    await expect_error(client.chat_postEphemeral(channel="C1", user="", text="x"),
                       "user_not_in_channel")
    assert fake.ephemerals == []
    fake.add_channel("C1", members=["U2"])
    assert (await client.chat_postEphemeral(channel="C1", user="U2", text="x"))["ok"]


async def test_strict_users_refuse_unknown_users() -> None:
    async with FakeSlack(strict_users=True) as fake:
        fake.add_channel("C1", members=["U1", "U404"])
        fake.add_user("U1", "alice")
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        assert (await client.chat_postEphemeral(channel="C1", user="U1", text="x"))["ok"]
        await expect_error(client.chat_postEphemeral(channel="C1", user="U404", text="x"),
                           "user_not_in_channel")
        await expect_error(client.users_info(user="U404"), "user_not_found")
        await expect_error(client.chat_postMessage(channel="U404", text="x"), "channel_not_found")
        assert (await client.chat_postMessage(channel="U1", text="x"))["ok"]


# -- refusals: trigger ids ---------------------------------------------------------------------


async def test_trigger_ids_work_once_within_three_seconds() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock) as fake:
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        await expect_error(client.views_open(trigger_id="12.34.abc", view=modal()),
                           "invalid_trigger_id")
        trigger = fake.issue_trigger()
        clock.advance(2.9)
        assert (await client.views_open(trigger_id=trigger, view=modal()))["ok"]
        await expect_error(client.views_open(trigger_id=trigger, view=modal()),
                           "exchanged_trigger_id")
        late = fake.issue_trigger()
        clock.advance(3.1)
        await expect_error(client.views_open(trigger_id=late, view=modal()), "expired_trigger_id")
        assert len(fake.views) == 1


# -- refusals: Block Kit -------------------------------------------------------------------------


def actions(*elements: dict[str, Any]) -> dict[str, Any]:
    return {"type": "actions", "elements": list(elements)}


BAD_SHAPES: dict[str, tuple[list[dict[str, Any]], str]] = {
    "string_text": ([{"type": "section", "text": "plain"}],
                    "must provide an object [json-pointer:/blocks/0/text]"),
    "string_field": ([{"type": "section", "fields": ["f"]}],
                     "must provide an object [json-pointer:/blocks/0/fields/0]"),
    "string_button": ([actions({"type": "button", "text": "Go", "action_id": "go"})],
                      "must provide an object [json-pointer:/blocks/0/elements/0/text]"),
    "string_context": ([{"type": "context", "elements": ["note"]}],
                       "must provide an object [json-pointer:/blocks/0/elements/0]"),
    "mrkdwn_header": ([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}],
                      "must be a valid enum value [json-pointer:/blocks/0/text/type]"),
    "mrkdwn_button": ([actions({"type": "button", "action_id": "go",
                                "text": {"type": "mrkdwn", "text": "*Go*"}})],
                      "must be a valid enum value [json-pointer:/blocks/0/elements/0/text/type]"),
    "empty_section": ([{"type": "section", "accessory": button(action_id="go")}],
                      "must define either `text` or `fields` [json-pointer:/blocks/0/type]"),
    "empty_text": ([section("")],
                   "must be more than 0 characters [json-pointer:/blocks/0/text/text]"),
    "mrkdwn_confirm_title": (
        [actions(button(action_id="go", confirm={
            "title": {"type": "mrkdwn", "text": "Sure?"}, "text": FIELD,
            "confirm": {"type": "plain_text", "text": "Yes"},
            "deny": {"type": "plain_text", "text": "No"}}))],
        "must be a valid enum value [json-pointer:/blocks/0/elements/0/confirm/title/type]"),
    "block_id": ([{**section("a"), "block_id": "card"}, {**section("b"), "block_id": "card"}],
                 "[json-pointer:/blocks/1/block_id]"),
    "action_id": ([actions(button(action_id="go"), button("Again", action_id="go"))],
                  "[json-pointer:/blocks/0/elements/1/action_id]"),
}


@pytest.mark.parametrize("case", sorted(BAD_SHAPES))
async def test_block_shapes_slack_refuses(fake: FakeSlack, client: AsyncWebClient,
                                          case: str) -> None:
    blocks, message = BAD_SHAPES[case]
    err = await expect_error(client.chat_postMessage(channel="C1", text="x", blocks=blocks),
                             "invalid_blocks")
    (found,) = err.response["errors"]
    assert found.endswith(message)
    assert err.response["response_metadata"]["messages"] == [f"[ERROR] {found}"]
    assert fake.messages("C1") == []


async def test_same_ids_in_other_blocks_are_fine(client: AsyncWebClient) -> None:
    """action_id is unique per containing block; block_id per message."""
    blocks = [actions(button(action_id="go")), actions(button(action_id="go")),
              {**section("a"), "block_id": "one"}, {**section("b"), "block_id": "two"},
              {"type": "section", "fields": [FIELD]}]
    assert (await client.chat_postMessage(channel="C1", text="x", blocks=blocks))["ok"]


async def test_modal_text_must_be_plain_text_objects(fake: FakeSlack,
                                                     client: AsyncWebClient) -> None:
    for view in ({**modal(), "title": {"type": "mrkdwn", "text": "Deploy"}},
                 {**modal(), "title": "Deploy"},
                 {**modal(), "submit": {"type": "mrkdwn", "text": "Go"}}):
        err = await expect_error(client.views_open(trigger_id=fake.issue_trigger(), view=view),
                                 "invalid_arguments")
        assert "[json-pointer:/view/" in err.response["response_metadata"]["messages"][0]
    assert fake.views == {}


# -- rate limits on every tier -------------------------------------------------------------------


def test_every_method_the_fake_answers_has_a_tier() -> None:
    answered = {name.removeprefix("_api_") for name in dir(FakeSlack) if name.startswith("_api_")}
    tiered = {m.replace(".", "_") for m in [*METHOD_TIERS, *SPECIAL_PER_CHANNEL]}
    assert answered == tiered


@pytest.mark.parametrize(("tier", "method", "kwargs"), [
    (2, "usergroups.list", {}),
    (3, "chat.update", {"channel": "C1", "ts": "1.000001", "text": "x"}),
    (4, "users.info", {"user": "U1"}),
])
async def test_each_tier_answers_429_past_its_documented_floor(
    tier: int, method: str, kwargs: dict[str, Any]
) -> None:
    """Real numbers, no override: Tier 2 gives 20 calls, Tier 3 50, Tier 4 100, then 429
    with Retry-After (the seconds one more call takes to be allowed)."""
    clock = FakeClock()
    per_minute, burst = TIERS[tier]
    async with FakeSlack(clock=clock) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        for _ in range(burst):
            assert await status_of(client.api_call(method, json=kwargs)) == 200
        err = await expect_error(client.api_call(method, json=kwargs), "ratelimited", 429)
        assert err.response.headers["Retry-After"] == str(math.ceil(60 / per_minute))
        clock.advance(60 / per_minute)
        assert await status_of(client.api_call(method, json=kwargs)) == 200
        assert METHOD_TIERS[method] == tier


async def status_of(call: Any) -> int:
    """HTTP status of a call, whether Slack accepted it (chat.update of a message that is not
    there is refused with 200: only the rate limit answers 429)."""
    try:
        return (await call).status_code
    except SlackApiError as err:
        return err.response.status_code


async def test_tiers_count_per_method_and_can_be_made_small() -> None:
    clock = FakeClock()
    async with FakeSlack(clock=clock, tiers={4: (6.0, 1)}) as fake:
        with_channels(fake)
        client = AsyncWebClient(token="xoxb-test", base_url=fake.base_url)
        assert (await client.users_info(user="U1"))["ok"]
        err = await expect_error(client.users_info(user="U1"), "ratelimited", 429)
        assert err.response.headers["Retry-After"] == "10"
        assert (await client.chat_postEphemeral(channel="C1", user="U1", text="x"))["ok"]
        assert (await client.chat_postMessage(channel="C1", text="x"))["ok"]
