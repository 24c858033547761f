"""`/deploy status` is right however long the history: every slot shows what runs there."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bot.slack.blocks_queries import status_text
from bot.store.models import Deployment
from tests.history_seed import insert_history


def succeeded(i: int, service: str, env: str, version: str, at: datetime) -> dict[str, object]:
    return {"id": i + 1, "request_key": f"seed-{i}", "service": service, "env": env,
            "version": version, "requester": "U0BOB", "state": "succeeded",
            "channel": "C0DEPLOYS", "kind": "deploy", "row_version": 1,
            "created_at": at, "updated_at": at, "finished_at": at}


async def test_a_quiet_service_is_not_hidden_by_a_busy_one(make_bot) -> None:
    bot = await make_bot()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [succeeded(0, "web", "dev", "v0.9.0", start)]  # long ago, and still running
    rows += [succeeded(i, "api", "staging", f"v1.{i}.0", start + timedelta(minutes=i))
             for i in range(1, 2101)]  # a busy service since
    await insert_history(bot.bot.sessions, rows)
    status = (await bot.driver.command("status")).json()["text"]
    assert "• *web* dev: `v0.9.0` since 2026-11-01 00:00 UTC" in status
    assert "• *api* staging: `v1.2100.0` since" in status
    assert "• *api* dev: nothing deployed by Shipbot yet" in status


@dataclass
class Slot:
    service: str
    env: str
    current: Deployment | None = None
    in_progress: Deployment | None = None


def deployment(i: int, service: str, env: str, state: str) -> Deployment:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    return Deployment(id=i, request_key=f"k{i}", service=service, env=env, version=f"v{i}",
                      requester="U0BOB", state=state, channel="C0", created_at=at,
                      updated_at=at, finished_at=at if state == "succeeded" else None)


def test_a_thousand_services_fit_one_message_busy_ones_and_guards_first() -> None:
    """Slack shows about 3,000 characters of a section; what matters in an incident (what is
    changing, what is locked) must be in it, and the reader told what was left out."""
    now = datetime(2026, 11, 2, tzinfo=UTC)
    slots = [Slot(f"svc{i:04}", env, current=deployment(i, f"svc{i:04}", env, "succeeded"))
             for i in range(1000) for env in ("dev", "staging", "production", "perf")]
    slots[3999].in_progress = deployment(9999, "svc0999", "perf", "deploying")
    text = status_text(slots, now, ":lock: production locked by <@U0CAROL>: incident")
    assert len(text) <= 3000
    assert text.endswith(":lock: production locked by <@U0CAROL>: incident")
    assert "• *svc0999* perf:" in text and "↳ :rocket: Deploying: `v9999`" in text
    shown = text.count("\n• ")
    left = re.search(r"… and (\d+) more slots with nothing in progress: "
                     r"`/deploy status <service>` shows one service\.", text)
    assert left is not None and shown + int(left.group(1)) == 4000
    assert shown > 10  # as many idle slots as fit, not none


def test_a_few_services_are_all_listed() -> None:
    now = datetime(2026, 11, 2, tzinfo=UTC)
    slots = [Slot("api", "dev"), Slot("api", "staging",
                                      current=deployment(1, "api", "staging", "succeeded"))]
    text = status_text(slots, now)
    assert text == ("*What runs where*\n• *api* dev: nothing deployed by Shipbot yet\n"
                    "• *api* staging: `v1` since 2026-11-01 00:00 UTC (24h 00m ago) by <@U0BOB>")
