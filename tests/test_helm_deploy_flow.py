"""`/deploy` and `/rollback` through the whole app with helm as the deploy target: the
stand-in helm records what the bot ran; the thread and the database say what users see."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlmodel import select

from bot.devtools.local import LocalBot
from bot.store.models import AuditEvent, Deployment, Outbox
from tests.conftest import eventually, make_config
from tests.helm_fixture import FakeHelm, install_fake_helm
from tests.scripts.fake_helm import SECRET_DATA, VALUES_SECRET
from tests.test_deploy_flow import deployments, finished


def helm_deploy(fake: FakeHelm, **extra: Any) -> dict[str, Any]:
    return {"provider": "helm", "release": "{service}-{env}", "chart": "./charts/api",
            "namespace": "apps", "binary": str(fake.binary),
            "kubeconfig": str(fake.kubeconfig), "timeout_seconds": 30, **extra}


async def replies(bot: LocalBot, count: int) -> list[str]:
    async def check() -> list[str] | None:
        roots = bot.slack.messages("#deploys-api")
        texts = [r["text"] for r in roots[0]["replies"]] if roots else []
        return texts if len(texts) >= count else None

    return list(await eventually(check))


async def test_deploy_and_rollback_with_helm(launch, tmp_path: Path) -> None:
    fake = install_fake_helm(tmp_path)
    bot = await launch(make_config(tmp_path, deploy=helm_deploy(fake, health=True)))
    for n, version in enumerate(("v1.4.1", "v1.4.2"), start=1):
        await bot.driver.command(f"api staging {version}")
        [*_, dep] = await finished(bot, n)
        assert dep.state == "succeeded", dep.detail
    upgrades = [c["argv"] for c in fake.calls("upgrade")]
    assert [a[a.index("--set-string") + 1] for a in upgrades] == [
        "image.tag=v1.4.1", "image.tag=v1.4.2"]
    assert upgrades[0][:5] == ["upgrade", "--install", "api-staging", "./charts/api",
                               "--namespace"]
    assert len(fake.calls("status")) == 2  # the health check after each deploy

    resp = await bot.driver.command("api staging", command="/rollback")
    assert resp.status_code == 200
    deps = await finished(bot, 3)
    assert (deps[2].kind, deps[2].version, deps[2].state) == ("rollback", "v1.4.1",
                                                             "succeeded")
    [rollback] = fake.calls("rollback")
    assert rollback["argv"][:3] == ["rollback", "api-staging", "1"]
    assert fake.history("api-staging")[-1]["description"] == "Rollback to 1"
    assert len(fake.calls("upgrade")) == 2  # the rollback ran no upgrade
    assert all("SLACK_BOT_TOKEN" not in c["env"] for c in fake.calls())


async def stored(bot: LocalBot) -> str:
    """Every deployment, audit and outbox row, as text."""
    async with bot.bot.sessions() as session:
        rows = [r.model_dump() for model in (Deployment, AuditEvent, Outbox)
                for r in (await session.exec(select(model))).all()]
    return json.dumps(rows, default=str)


async def test_helm_status_values_and_secrets_stay_out_of_thread_and_db(
        launch, tmp_path: Path) -> None:
    fake = install_fake_helm(tmp_path)
    bot = await launch(make_config(tmp_path, deploy=helm_deploy(fake, health=True)))
    await bot.driver.command("api staging v1.4.1")
    [dep] = await finished(bot)
    assert dep.state == "succeeded", dep.detail
    assert len(fake.calls("status")) == 1

    async def healthy() -> str | None:
        said = json.dumps(bot.slack.messages("#deploys-api"))
        return said if "reports `v1.4.1` healthy" in said else None

    thread = await eventually(healthy)
    assert "release api-staging, revision 1: deployed" in thread
    db = await stored(bot)
    for secret in (VALUES_SECRET, SECRET_DATA, "kind: Secret", "manifest"):
        assert secret not in thread, secret
        assert secret not in db, secret


async def test_a_failed_helm_upgrade_shows_helms_error(launch, tmp_path: Path) -> None:
    fake = install_fake_helm(tmp_path)
    bot = await launch(make_config(tmp_path, deploy=helm_deploy(fake)))
    await bot.driver.command("api staging fail-2.0")
    [dep] = await finished(bot)
    assert dep.state == "failed"
    said = ("Error: UPGRADE FAILED: release api-staging failed, and has been rolled back "
            "due to atomic being set: context deadline exceeded")
    assert said in (dep.detail or "")
    texts = await replies(bot, 4)
    assert any(said in t for t in texts), texts


async def test_a_rollback_with_no_earlier_revision_says_so(launch, tmp_path: Path) -> None:
    fake = install_fake_helm(tmp_path)
    bot = await launch(make_config(tmp_path, deploy=helm_deploy(fake)))
    await bot.driver.command("api staging v1")
    await finished(bot, 1)
    await bot.driver.command("api staging v2")
    await finished(bot, 2)
    fake.set_history("api-staging", fake.history("api-staging")[1:])  # v1 aged out
    await bot.driver.command("api staging", command="/rollback")

    async def ended() -> Any:
        deps = await deployments(bot)
        return len(deps) == 3 and deps[2].finished_at is not None and deps[2]

    dep = await eventually(ended, timeout=60)
    assert dep.state == "failed", dep.state  # nothing was touched: the release stays as is
    assert "no revision that ran v1 successfully" in (dep.detail or "")

    async def told() -> bool:
        roots = bot.slack.messages("#deploys-api")
        return "no revision that ran v1 successfully" in json.dumps(
            [r["replies"] for r in roots])

    await eventually(told)  # the thread says why, in helm's terms
    assert fake.calls("rollback") == []


async def test_a_restarted_bot_finds_the_helm_run(launch, tmp_path: Path) -> None:
    fake = install_fake_helm(tmp_path)
    config = make_config(tmp_path, deploy=helm_deploy(fake))
    first = await launch(config)
    await first.driver.command("api staging wait-1.0")
    await eventually(lambda: _async(bool(fake.calls("upgrade"))))  # helm is running

    async def recorded() -> Deployment | None:  # the step commits once helm has started
        [running] = await deployments(first)
        return running if running.state == "deploying" else None

    assert (await eventually(recorded)).finished_at is None
    await first.stop()  # the supervisor and helm go on without the bot
    second = await launch(config)
    [dep] = await finished(second)
    assert dep.state == "succeeded", dep.detail
    assert len(fake.calls("upgrade")) == 1  # found, not run again


async def _async(value: bool) -> bool:
    return value
