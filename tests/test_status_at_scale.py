"""`/deploy status` is right however long the history: every slot shows what runs there."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import insert

from bot.store.models import Deployment


def succeeded(i: int, service: str, env: str, version: str, at: datetime) -> dict[str, object]:
    return {"request_key": f"seed-{i}", "service": service, "env": env, "version": version,
            "requester": "U0BOB", "state": "succeeded", "channel": "C0DEPLOYS", "kind": "deploy",
            "row_version": 1,
            "created_at": at, "updated_at": at, "finished_at": at}


async def test_a_quiet_service_is_not_hidden_by_a_busy_one(make_bot) -> None:
    bot = await make_bot()
    start = datetime(2026, 11, 1, tzinfo=UTC)
    rows = [succeeded(0, "web", "dev", "v0.9.0", start)]  # long ago, and still running
    rows += [succeeded(i, "api", "staging", f"v1.{i}.0", start + timedelta(minutes=i))
             for i in range(1, 2101)]  # a busy service since
    async with bot.bot.sessions() as session:
        await session.exec(insert(Deployment).values(rows))  # type: ignore[call-overload]
        await session.commit()
    status = (await bot.driver.command("status")).json()["text"]
    assert "• *web* dev: `v0.9.0` since 2026-11-01 00:00 UTC" in status
    assert "• *api* staging: `v1.2100.0` since" in status
    assert "• *api* dev: nothing deployed by Shipbot yet" in status
