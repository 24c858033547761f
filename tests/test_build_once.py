"""Build once, promote the artifact: the next environment gets the build that ran before.

A version built for dev is not rebuilt for staging (a rebuild can differ: a moved tag, a
newer base image); the deploy step is given the same artifact, and the thread says where
the build came from. `build: per_environment` builds again; a rollback deploys the build
of the version it goes back to.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tests.conftest import STEP, make_config, step
from tests.test_deploy_flow import deployments, finished


def config(tmp_path: Path, **service: Any) -> Any:
    ci = step(tmp_path / "ci.log", STEP_ARTIFACT="registry.example/api@")
    deploy = {**step(tmp_path / "deploy.log"),
              "argv": [sys.executable, STEP, "{service}", "{env}", "{version}", "{artifact}"]}
    cfg = make_config(tmp_path, ci=ci, deploy=deploy)
    data = cfg.model_dump(mode="json", exclude_none=True)
    data["services"]["api"].update(service)
    return type(cfg).model_validate(data)


def lines(path: Path) -> list[list[str]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def thread(bot: Any, index: int) -> list[str]:
    return [r["text"] for r in bot.slack.messages("#deploys-api")[index]["replies"]]


async def test_staging_deploys_the_build_that_ran_for_dev(launch, tmp_path: Path) -> None:
    bot = await launch(config(tmp_path))
    await bot.driver.command("api dev v2.0.0")
    [dev] = await finished(bot, 1)
    assert dev.state == "succeeded" and dev.built_by == dev.id
    artifact = dev.artifact
    assert artifact is not None and artifact.startswith("registry.example/api@v2.0.0-")
    await bot.driver.command("api staging v2.0.0")
    deps = await finished(bot, 2)
    staging = next(d for d in deps if d.env == "staging")
    assert staging.state == "succeeded", staging.detail
    assert len(lines(tmp_path / "ci.log")) == 1  # built once
    assert lines(tmp_path / "deploy.log") == [["api", "dev", "v2.0.0", artifact],
                                              ["api", "staging", "v2.0.0", artifact]]
    assert (staging.artifact, staging.built_by, staging.commit_sha) == (
        artifact, dev.id, dev.commit_sha)
    said = await bot_said(bot, "Using the build")
    assert said == (f":package: Using the build of `v2.0.0` from dev (#{dev.id}) "
                    f"(`{artifact}`): not built again.")


async def bot_said(bot: Any, words: str) -> str:
    from tests.conftest import eventually

    async def found() -> str | None:
        roots = bot.slack.messages("#deploys-api")
        return next((r["text"] for root in roots for r in root.get("replies", [])
                     if words in r["text"]), None)
    return await eventually(found)


async def test_per_environment_builds_again(launch, tmp_path: Path) -> None:
    bot = await launch(config(tmp_path, build="per_environment"))
    await bot.driver.command("api dev v2.0.0")
    await finished(bot, 1)
    await bot.driver.command("api staging v2.0.0")
    deps = await finished(bot, 2)
    assert [d.state for d in deps] == ["succeeded", "succeeded"]
    assert [b[:3] for b in lines(tmp_path / "ci.log")] == [["api", "dev", "v2.0.0"],
                                                           ["api", "staging", "v2.0.0"]]
    dev, staging = sorted(deps, key=lambda d: d.id)
    assert staging.built_by == staging.id and staging.artifact != dev.artifact
    assert lines(tmp_path / "deploy.log")[-1] == ["api", "staging", "v2.0.0", staging.artifact]


async def test_a_new_version_is_built(launch, tmp_path: Path) -> None:
    bot = await launch(config(tmp_path))
    await bot.driver.command("api dev v2.0.0")
    await finished(bot, 1)
    await bot.driver.command("api dev v2.0.1")
    deps = await finished(bot, 2)
    assert [d.state for d in deps] == ["succeeded", "succeeded"]
    assert [b[2] for b in lines(tmp_path / "ci.log")] == ["v2.0.0", "v2.0.1"]


async def test_a_failed_build_is_not_reused(launch, tmp_path: Path) -> None:
    failing = config(tmp_path)
    data = failing.model_dump(mode="json", exclude_none=True)
    data["services"]["api"]["ci"]["env"]["STEP_EXIT"] = "1"
    bot = await launch(type(failing).model_validate(data))
    await bot.driver.command("api dev v2.0.0")
    [dep] = await finished(bot, 1)
    assert dep.state == "failed" and dep.built_by is None and dep.artifact is None
    await bot.driver.command("api staging v2.0.0")
    await finished(bot, 2)
    assert len(lines(tmp_path / "ci.log")) == 2  # tried to build again: nothing to reuse
    assert not (tmp_path / "deploy.log").exists()
    assert [d.state for d in await deployments(bot)] == ["failed", "failed"]


async def test_a_rollback_deploys_the_build_of_the_version_it_returns_to(
        launch, tmp_path: Path) -> None:
    bot = await launch(config(tmp_path))
    await bot.driver.command("api dev v2.0.0")
    [first] = await finished(bot, 1)
    await bot.driver.command("api dev v2.0.1")
    await finished(bot, 2)
    await bot.driver.command("rollback api dev")
    deps = await finished(bot, 3)
    back = deps[-1] if deps[-1].kind == "rollback" else next(d for d in deps
                                                              if d.kind == "rollback")
    assert (back.state, back.version) == ("succeeded", "v2.0.0"), back.detail
    assert len(lines(tmp_path / "ci.log")) == 2  # the rollback built nothing
    assert lines(tmp_path / "deploy.log")[-1] == ["api", "dev", "v2.0.0", first.artifact]
    assert back.artifact == first.artifact and back.built_by == first.id
