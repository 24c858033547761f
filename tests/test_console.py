"""`shipbot console`: the text rendering of real Block Kit, and scripted sessions against
the real app (signed HTTP in, fake Slack out) read as transcripts."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from bot.devtools.console import Console, run_console
from bot.devtools.fake_slack import FakeSlack, RecordedCall
from bot.devtools.local import LocalBot
from bot.devtools.render_text import (
    EMOJI,
    TextStyle,
    buttons,
    format_reply,
    format_update,
    inputs,
    mrkdwn,
    render_blocks,
    render_view,
)
from bot.settings import Settings
from bot.slack.blocks import STATE_EMOJI, reject_modal, status_card, thread_note
from bot.store.models import Deployment
from commands.actions import ActionId
from tests.conftest import make_config, step

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2025, 3, 4, 10, 0, 12, tzinfo=UTC)


def deployment(**changes: Any) -> Deployment:
    fields: dict[str, Any] = {
        "id": 7, "request_key": "slash:t", "service": "api", "env": "staging",
        "version": "v1.4.2", "previous_version": "v1.4.1", "reason": "fix <login> & more",
        "requester": "U0ALICE", "state": "building", "channel": "#deploys-api",
        "created_at": NOW - timedelta(seconds=12), "updated_at": NOW,
    }  # fmt: skip
    return Deployment(**{**fields, **changes})


# -- rendering: on the JSON the real builders produce -----------------------------
def test_status_card_renders_as_readable_lines_with_its_button() -> None:
    _, blocks = status_card(deployment(), NOW)
    lines = render_blocks(blocks)
    assert lines[0] == "== api → staging =="
    assert "Version: `v1.4.2` (was `v1.4.1`)" in lines
    assert "State: 🛠️ Building" in lines
    assert "Requested by: @U0ALICE" in lines
    assert "Time: 12s so far" in lines
    assert "Reason: fix <login> & more" in lines  # Slack's &lt; &amp; escapes undone
    assert any(line.startswith("· Next: deploy to staging") for line in lines)
    assert lines[-1] == "[ Cancel ]"
    [cancel] = buttons(blocks)
    assert (cancel.label, cancel.action_id, cancel.value) == ("Cancel", ActionId.CANCEL, "7")
    assert cancel.block_id == "deployment:7"


def test_finished_card_has_no_button_and_an_update_shows_only_what_changed() -> None:
    _, before = status_card(deployment(), NOW)
    done = deployment(state="succeeded", finished_at=NOW, detail="staging runs v1.4.2 (took 12s).")
    _, after = status_card(done, NOW)
    assert buttons(after) == []
    update = format_update("#deploys-api", render_blocks(before), render_blocks(after))
    assert update[0] == "#deploys-api  (updated) api → staging"
    assert "  State: ✅ Succeeded" in update
    assert "  Outcome: staging runs v1.4.2 (took 12s)." in update
    assert "  [ Cancel ] (gone)" in update
    assert not any("Version" in line or "Requested by" in line for line in update)
    color = TextStyle(color=True)
    painted = format_update("#d", render_blocks(before, color), render_blocks(after, color))
    assert painted[-1].endswith("[ Cancel ]\x1b[0m (gone)")


def test_thread_note_with_link_and_long_output_renders_indented() -> None:
    output = "\n".join(f"[build] step {i} <ok>" for i in range(30))
    blocks = thread_note(":white_check_mark: Build passed (exited with code 0).",
                         detail=output, link="https://ci.example/runs/42")
    lines = format_reply(render_blocks(blocks, TextStyle(max_code_lines=3)))
    assert lines == [
        "  └ ✅ Build passed (exited with code 0).",
        "    · Open the run (https://ci.example/runs/42)",
        "        … 27 earlier lines",
        "        [build] step 27 <ok>",
        "        [build] step 28 <ok>",
        "        [build] step 29 <ok>",
    ]


def test_reject_modal_renders_its_input_and_buttons() -> None:
    view = reject_modal(7)
    assert render_view(view) == [
        "== Reject deployment ==", "Why reject deployment #7? [ … ]", "[ Reject ]  [ Back ]"]
    assert inputs(view) == [("reason", "reason", "plain_text_input")]


def test_every_emoji_shipbot_posts_has_a_unicode_form() -> None:
    for code in STATE_EMOJI.values():
        assert code.strip(":") in EMOJI, code
    assert mrkdwn(":rocket: :no_such_emoji:") == ["🚀 :no_such_emoji:"]
    assert mrkdwn(":rocket:", TextStyle(emoji=False)) == [":rocket:"]


def test_mrkdwn_links_mentions_escapes_and_formatting() -> None:
    text = ("*Bold* by <@U0BOB> in <#C123|deploys> <!here>: <https://x.io/r|the run>, "
            "<https://y.io>, `a_b*c*` and _it_ ~old~ &lt;tag&gt; &amp;lt;")
    assert mrkdwn(text) == [
        "Bold by @U0BOB in #deploys @here: the run (https://x.io/r), https://y.io, "
        "`a_b*c*` and it old <tag> &lt;"
    ]
    assert mrkdwn("a\n```x &lt; y```") == ["a", "    x < y"]
    assert "\x1b[1m" in mrkdwn("*b*", TextStyle(color=True))[0]


def test_console_says_where_each_message_goes(tmp_path: Path) -> None:
    """Interleaved threads get a heading; DMs, other people's ephemerals and files read well.
    Slack answers with conversation IDs (a DM's ``D...`` for a user); the console says names."""
    fake = FakeSlack()
    for name in ("#deploys-api", "#deploys-web"):
        fake.add_channel(name)  # as LocalBot does for the config's channels
    local = cast(LocalBot, SimpleNamespace(slack=fake))
    console = Console(local, make_config(tmp_path), io.StringIO(), TextStyle(), scripted=True,
                      quiet_seconds=1, settle_timeout=1)

    def show(method: str, params: dict[str, Any], response: dict[str, Any]) -> list[str]:
        lines, thread = console.describe(RecordedCall(method, params, {}, 0.0, response=response))
        console.last_thread = thread if lines else console.last_thread
        return lines

    def post(channel: str, ts: str, text: str, thread_ts: str | None = None) -> list[str]:
        message = {"text": text, "ts": ts, **({"thread_ts": thread_ts} if thread_ts else {})}
        channel_id = fake.channels.resolve(channel, names=True)  # what Slack answers with
        return show("chat.postMessage", {"channel": channel, "text": text},
                    {"channel": channel_id, "ts": ts, "message": message})

    assert post("#deploys-api", "1.1", "*card one*") == ["#deploys-api  [shipbot]", "  card one"]
    assert post("#deploys-web", "1.2", "card two") == ["#deploys-web  [shipbot]", "  card two"]
    assert post("#deploys-api", "1.3", "step", thread_ts="1.1") == [
        "#deploys-api  (thread of card one)", "  └ step"]
    assert post("#deploys-api", "1.4", "next step", thread_ts="1.1") == ["  └ next step"]
    assert post("U0ALICE", "1.5", "psst") == ["DM to you  [shipbot]", "  psst"]
    assert show("chat.postEphemeral", {"user": "U0BOB", "text": "hi\nthere"}, {"ok": True}) == [
        "(only @U0BOB) hi", "              there"]
    upload = {"channel_id": fake.channel_id("#deploys-api"), "thread_ts": "1.1",
              "initial_comment": "Canary"}
    assert show("files.completeUploadExternal", upload, {"files": [{"title": "chart.png"}]}) == [
        "#deploys-api  (thread of card one)", "  └ Canary", "    [file: chart.png]"]
    assert show("users.info", {"user": "U0BOB"}, {"ok": True}) == []


# -- scripted console sessions ----------------------------------------------------
async def session(tmp_path: Path, script: str, **kwargs: Any) -> tuple[int, str]:
    """Run the console on ``script``; return its exit code and transcript."""
    out = io.StringIO()
    config = kwargs.pop("config", None) or make_config(tmp_path)
    kwargs.setdefault("database", f"sqlite:///{tmp_path}/console.db")
    kwargs.setdefault("quiet_seconds", 0.6)  # the bot answers in milliseconds here
    code = await run_console(
        Settings(SHIPBOT_STATE_DIR=tmp_path / "shipbot"), config,  # type: ignore[call-arg]
        stdin=io.StringIO(script), stdout=out, **kwargs)
    return code, out.getvalue()


def in_order(transcript: str, *parts: str) -> None:
    """Each part appears, after the previous one."""
    at = 0
    for part in parts:
        found = transcript.find(part, at)
        assert found >= 0, f"{part!r} not found after position {at} in:\n{transcript}"
        at = found + len(part)


def turns(transcript: str, prompt: str) -> dict[str, str]:
    """What each typed line printed, by the line typed (the bot's timing varies, so tests
    check order only where Shipbot guarantees it: ack first, thread replies in order)."""
    pieces = transcript.split("\n" + prompt)[1:]
    return {piece.partition("\n")[0]: piece.partition("\n")[2] + "\n" for piece in pieces}


async def test_deploy_session_shows_ack_card_thread_and_result(tmp_path: Path) -> None:
    code, out = await session(tmp_path, (
        '/deploy api staging v1.4.2 --reason "fix login"\n'
        "/deploy status\n"
        "nope staging\n"
        "help\n"
        "/nope\n"
        "quit\n"
    ))
    assert code == 0
    in_order(out, "Slack is simulated", "database  sqlite:///", "Try: /deploy api staging")
    said = turns(out, "you@shipbot> ")
    deploy = said['/deploy api staging v1.4.2 --reason "fix login"']
    in_order(
        deploy,
        "(only you) 🚀 Deployment #1 of api `v1.4.2` to staging",
        "#deploys-api  [shipbot]\n  == api → staging ==\n  Version: `v1.4.2`\n",
        "  Requested by: @U0ALICE\n", "  Reason: fix login\n", "  [ Cancel ]\n",
        "  └ 🛠️ Build started for `v1.4.2`.\n",
        "  └ ✅ Build passed",
        "        done with code 0\n",  # the build's output, as a code block in the reply
        "  └ 🚀 Deploying `v1.4.2` to staging.\n",
        "  └ ✅ api v1.4.2 is live on staging",
    )
    assert deploy.count("#deploys-api  [shipbot]") == 1  # one card, edited in place
    assert "  [ Cancel ] (gone)\n" in deploy
    last_update = deploy[deploy.rindex("#deploys-api  (updated)"):]
    assert last_update.startswith("#deploys-api  (updated) api → staging\n  State: ✅ Succeeded")
    assert "output line 0" not in deploy  # long output keeps its last lines only
    assert said["/deploy status"].startswith("(only you) What runs where\n")
    assert "• api staging: `v1.4.2` since" in said["/deploy status"]
    assert said["nope staging"].startswith("(only you) ⚠️ Unknown service 'nope'.")
    in_order(said["help"], "/deploy history api staging", "Services: api (dev, staging",
             "Buttons on screen: none")
    assert said["/nope"].startswith("/nope is not a valid command.")
    assert said["quit"].startswith("Stopped.")


async def test_typing_a_button_label_clicks_it_newest_first(tmp_path: Path) -> None:
    slow_build = step(tmp_path / "ci.log", STEP_SLEEP=60)
    code, out = await session(tmp_path, (
        "as u0bob\n"
        "api dev v9\n"
        "/deploy api staging v9\n"
        "cancel\n"
        "click CANCEL\n"
        "click Cancel\n"
        "as nobody here\n"
    ), config=make_config(tmp_path, ci=slow_build), database=None, settle_timeout=1.5)
    assert code == 0  # the end of the input quits too
    assert f"database  sqlite:///{tmp_path / 'shipbot' / 'console.db'}" in out
    assert (tmp_path / "shipbot" / "console.db").exists()
    in_order(out, "you@shipbot> as u0bob\nYou are now U0BOB", "U0BOB@shipbot> api dev v9\n")
    said = turns(out, "U0BOB@shipbot> ")
    in_order(said["api dev v9"], "== api → dev ==", "Requested by: @U0BOB", "[ Cancel ]",
             "(still going after 1.5s: deployment #1 (api dev) is ")
    assert "== api → staging ==" in said["/deploy api staging v9"]
    newest = said["cancel"]
    assert newest.startswith(
        "→ U0BOB clicks [ Cancel ] on “api → staging” in #deploys-api "
        "(2 buttons say 'Cancel': pressing the newest)\n")
    assert "(only you) Cancelled deployment #2 of api to staging." in newest
    assert "#deploys-api  (updated) api → staging\n  State: ✖️ Cancelled\n" in newest
    assert "  └ ✖️ Cancelled by @U0BOB. Nothing was changed on staging." in newest
    other = said["click CANCEL"]
    assert other.startswith("→ U0BOB clicks [ Cancel ] on “api → dev” in #deploys-api\n")
    assert "(only you) Cancelled deployment #1 of api to dev." in other
    assert "#deploys-api  (updated) api → dev\n  State: ✖️ Cancelled\n" in other
    assert said["click Cancel"].startswith("No button labelled 'Cancel'. None shown.")
    assert said["as nobody here"].startswith("Usage: as <Slack user id>")
    assert said["(end of input)"].startswith("Stopped.")


async def test_approval_buttons_and_the_reject_modal(tmp_path: Path) -> None:
    code, out = await session(tmp_path, (
        "as U0BOB\n"
        "/deploy api production v1\n"
        "approve\n"
        "as U0CAROL\n"
        "reject\n"
        "submit\n"
        "submit not today\n"
        "quit\n"
    ))
    assert code == 0
    said = {**turns(out, "U0BOB@shipbot> "), **turns(out, "U0CAROL@shipbot> ")}
    asked = said["/deploy api production v1"]
    in_order(asked, "== api → production ==", "  └ ✋ Approval needed",
             "    [ Approve ]  [ Reject ]\n")
    # The card shows the wait, posted so or updated to it (the runner may be first).
    assert "  State: ✋ Awaiting approval (0 of 1)\n" in asked
    assert "(still going" not in out  # waiting for an approver is not the bot being busy
    assert "(only you) You requested deployment #1, so you cannot approve it" in said["approve"]
    assert said["reject"].startswith("→ U0CAROL clicks [ Reject ] on “✋ Approval needed")
    in_order(said["reject"], "(modal for you) == Reject deployment ==\n",
             "Why reject deployment #1? [ … ]", "[ Reject ]  [ Back ]",
             "(type `submit <answer>` to press Reject, or `close`)")
    assert said["submit"].startswith("(modal says) reason: Say why")
    rejected = said["submit not today"]
    assert "DM to you  [shipbot]\n  You rejected deployment #1." in rejected
    assert "#deploys-api  (updated) api → production\n  State: ⛔ Rejected\n" in rejected
    assert "    [ Approve ]  [ Reject ] (gone)\n" in rejected


def test_cli_console_runs_the_example_config_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "SHIPBOT_STATE_DIR": str(tmp_path / "state"), "PYTHONIOENCODING": "utf-8"}
    env.pop("SHIPBOT_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "console", "--database", f"sqlite:///{tmp_path}/cli.db"],
        input="/deploy api staging v1.4.2\nquit\n", capture_output=True, text=True,
        encoding="utf-8", cwd=REPO, env=env, timeout=90, check=False,
    )
    assert done.returncode == 0, done.stderr
    in_order(
        done.stdout,
        "config    shipbot.yml", "you@shipbot> /deploy api staging v1.4.2\n",
        "(only you) 🚀 Deployment #1 of api `v1.4.2` to staging",
        "== api → staging ==", "[build] pushed registry.example.com/api:v1.4.2",
        "  └ ✅ api v1.4.2 is live on staging", "State: ✅ Succeeded",
        "you@shipbot> quit\n", "Stopped.",
    )
    assert (tmp_path / "cli.db").exists()
