"""The command provider against small real programs: no mocks, real processes and signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from integrations.base import IntegrationError, JobSpec, RunState, RunStatus
from integrations.command import RUNNER_LOST, CommandConfig, CommandProvider, run_id_for
from integrations.command_wrapper import process_fingerprint, read_pid

pytestmark = pytest.mark.measure_subprocesses  # its shipbot processes count for coverage

PY = sys.executable

# Records its argv and one line per start, prints numbered lines, then sleeps / exits.
PROGRAM = textwrap.dedent("""
    import json, os, sys, time
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "argv.json"), "w") as fh:
        json.dump(sys.argv[1:], fh)
    with open(os.path.join(here, "starts.log"), "a") as fh:
        fh.write("started\\n")
    with open(os.path.join(here, "program.pid.tmp"), "w") as fh:
        fh.write(str(os.getpid()))
    os.replace(os.path.join(here, "program.pid.tmp"), os.path.join(here, "program.pid"))
    for i in range(int(os.environ.get("LINES", "3"))):
        print(f"line {i}", flush=True)
    print("to stderr", file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    sys.exit(int(os.environ.get("EXIT", "0")))
""")


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "program.py"
    path.write_text(PROGRAM)
    return path


def make(tmp_path: Path, program: Path, **overrides: Any) -> CommandProvider:
    config = CommandConfig(**{"argv": [PY, str(program), "{service}", "{env}", "{version}"],
                              **overrides})
    return CommandProvider(config, tmp_path / "state")


def job(key: str = "deploy-1", version: str = "1.2.3") -> JobSpec:
    return JobSpec(key=key, service="api", env="staging", version=version)


async def finish(provider: CommandProvider, run_id: str, deadline: float = 10.0) -> RunStatus:
    """Poll like the engine does until the run is no longer RUNNING."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while (status := await provider.poll(run_id)).state is RunState.RUNNING:
        assert loop.time() < end, f"still running after {deadline} s"
        await asyncio.sleep(0.05)
    return status


async def wait_for(check: Any, deadline: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    while not check():
        assert loop.time() < end, "condition not met in time"
        await asyncio.sleep(0.02)


def program_pid(tmp_path: Path) -> int:
    return int((tmp_path / "program.pid").read_text())


async def test_success_with_output_tail(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"LINES": "50"}, output_lines=5)
    run_id = await provider.start(job())
    status = await finish(provider, run_id)
    assert status.state is RunState.SUCCEEDED
    assert status.exit_code == 0
    assert status.detail == "exited with code 0"
    assert status.output_tail == "line 46\nline 47\nline 48\nline 49\nto stderr"


async def test_nonzero_exit_fails(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"EXIT": "3"})
    status = await finish(provider, await provider.start(job()))
    assert status.state is RunState.FAILED
    assert (status.exit_code, status.detail) == (3, "exited with code 3")
    assert "line 2" in status.output_tail


async def test_hostile_values_arrive_as_one_literal_argv_element(
    tmp_path: Path, program: Path
) -> None:
    provider = make(tmp_path, program, argv=[PY, str(program), "--svc={service}", "{version}"])
    hostile = "1.0;rm -rf / $(touch pwned) {env} `id` 'x\" *"
    status = await finish(provider, await provider.start(job(version=hostile)))
    assert status.state is RunState.SUCCEEDED
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--svc=api", hostile]
    assert not (tmp_path / "pwned").exists()


async def test_env_vars_reach_program_but_not_disk(tmp_path: Path) -> None:
    script = tmp_path / "env.py"
    script.write_text("import os, sys\nopen(sys.argv[1], 'w').write(os.environ['DEPLOY_TOKEN'])\n")
    out = tmp_path / "seen.txt"
    config = CommandConfig(argv=[PY, str(script), str(out)], env={"DEPLOY_TOKEN": "s3cret-42"})
    provider = CommandProvider(config, tmp_path / "state")
    run_id = await provider.start(job())
    assert (await finish(provider, run_id)).state is RunState.SUCCEEDED
    assert out.read_text() == "s3cret-42"
    spec = json.loads((tmp_path / "state" / run_id / "spec.json").read_text())
    assert spec["env_names"] == ["DEPLOY_TOKEN"]
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            assert "s3cret-42" not in path.read_text(), path


async def test_timeout_stops_the_program(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"}, timeout_seconds=0.5)
    status = await finish(provider, await provider.start(job()))
    assert status.state is RunState.FAILED
    assert status.detail == "timed out after 0.5 s and was stopped"
    assert process_fingerprint(program_pid(tmp_path)) is None


async def test_command_not_found(tmp_path: Path) -> None:
    config = CommandConfig(argv=["deploy-does-not-exist.sh", "{version}"])
    provider = CommandProvider(config, tmp_path / "state")
    status = await finish(provider, await provider.start(job()))
    assert status.state is RunState.FAILED
    assert status.detail == "command not found: deploy-does-not-exist.sh"


async def test_start_twice_runs_once(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program)
    first = await provider.start(job())
    again = await provider.start(job())
    after_restart = await make(tmp_path, program).start(job())
    assert first == again == after_restart
    assert (await finish(provider, first)).state is RunState.SUCCEEDED
    assert (tmp_path / "starts.log").read_text() == "started\n"
    other = await provider.start(job(key="deploy-2"))
    assert other != first
    await finish(provider, other)
    assert (tmp_path / "starts.log").read_text() == "started\nstarted\n"


async def test_new_provider_instance_gets_result_of_old_run(tmp_path: Path, program: Path) -> None:
    old = make(tmp_path, program, env={"SLEEP": "0.3", "EXIT": "4"})
    run_id = await old.start(job())
    del old  # the bot restarts; the run keeps going without it
    status = await finish(make(tmp_path, program), run_id)
    assert (status.state, status.exit_code) == (RunState.FAILED, 4)
    assert "to stderr" in status.output_tail


async def test_run_survives_the_bot_process_exiting(tmp_path: Path, program: Path) -> None:
    """A real restart: the process that started the run exits before the program ends."""
    bot = textwrap.dedent(f"""
        import asyncio
        from pathlib import Path
        from integrations.base import JobSpec
        from integrations.command import CommandConfig, CommandProvider
        config = CommandConfig(argv=[{PY!r}, {str(program)!r}], env={{"SLEEP": "0.5"}})
        provider = CommandProvider(config, Path({str(tmp_path / "state")!r}))
        job = JobSpec(key="deploy-1", service="api", env="staging", version="1")
        print(asyncio.run(provider.start(job)))
    """)
    proc = await asyncio.create_subprocess_exec(PY, "-c", bot, stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    run_id = out.decode().strip()
    status = await finish(make(tmp_path, program), run_id)
    assert status.state is RunState.SUCCEEDED
    assert (tmp_path / "starts.log").read_text() == "started\n"


async def test_runner_killed_mid_run_is_reported_and_program_stopped(
    tmp_path: Path, program: Path
) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"})
    run_id = await provider.start(job())
    rundir = tmp_path / "state" / run_id
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    await wait_for(lambda: (rundir / "child.pid").exists())  # the runner wrote it down
    runner = read_pid(rundir / "pid")
    assert runner is not None
    os.kill(runner[0], signal.SIGKILL)
    status = await finish(provider, run_id)
    assert (status.state, status.detail) == (RunState.FAILED, RUNNER_LOST)
    await wait_for(lambda: process_fingerprint(program_pid(tmp_path)) is None)
    assert (await provider.poll(run_id)).detail == RUNNER_LOST  # recorded, stays stable


async def test_wedged_runner_is_stopped_after_timeout_and_grace(
    tmp_path: Path, program: Path
) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"}, timeout_seconds=0.3)
    provider.WEDGE_GRACE_SECONDS = 0.2
    run_id = await provider.start(job())
    rundir = tmp_path / "state" / run_id
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    await wait_for(lambda: (rundir / "child.pid").exists())  # the runner wrote it down
    runner = read_pid(rundir / "pid")
    assert runner is not None
    os.kill(runner[0], signal.SIGSTOP)  # alive but unable to enforce the timeout
    status = await finish(provider, run_id)
    assert status.detail == "timed out after 0.3 s and was stopped"
    await wait_for(lambda: process_fingerprint(program_pid(tmp_path)) is None)
    await wait_for(lambda: process_fingerprint(runner[0]) is None)


async def test_cancel(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"SLEEP": "30"})
    run_id = await provider.start(job())
    await wait_for(lambda: (tmp_path / "program.pid").exists())
    await provider.cancel(run_id)
    status = await finish(provider, run_id)
    assert (status.state, status.detail) == (RunState.FAILED, "was cancelled")
    assert process_fingerprint(program_pid(tmp_path)) is None
    await provider.cancel(run_id)  # idempotent
    assert (await provider.poll(run_id)).detail == "was cancelled"


async def test_unknown_run_id(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program)
    for run_id in ("never-started", "../state", "."):
        with pytest.raises(IntegrationError):
            await provider.poll(run_id)
        with pytest.raises(IntegrationError):
            await provider.cancel(run_id)


def test_run_id_is_a_safe_distinct_name() -> None:
    assert run_id_for("a/b") != run_id_for("a_b")
    for key in ("../../etc", "deploy:42:ci", "..", "x" * 500):
        run_id = run_id_for(key)
        assert "/" not in run_id and not run_id.startswith(".") and len(run_id) <= 128


async def test_latest_version(tmp_path: Path) -> None:
    script = "import sys; print('building', sys.argv[1]); print(' 2.4.1 '); print()"
    config = CommandConfig(argv=["true"], latest_version_argv=[PY, "-c", script, "{service}"])
    assert await CommandProvider(config, tmp_path).latest_version("api") == "2.4.1"
    unconfigured = CommandConfig(argv=["true"])
    assert await CommandProvider(unconfigured, tmp_path).latest_version("api") is None


async def test_latest_version_errors(tmp_path: Path) -> None:
    failing = CommandConfig(
        argv=["true"], latest_version_argv=[PY, "-c", "import sys; sys.exit('no builds')"]
    )
    with pytest.raises(IntegrationError, match="exited with code 1: no builds"):
        await CommandProvider(failing, tmp_path).latest_version("api")
    slow = CommandProvider(
        CommandConfig(argv=["true"], latest_version_argv=[PY, "-c", "import time; time.sleep(30)"]),
        tmp_path,
    )
    slow.LATEST_VERSION_TIMEOUT_SECONDS = 0.3
    with pytest.raises(IntegrationError, match="timed out"):
        await slow.latest_version("api")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"argv": ["deploy.sh", "{verison}"]}, "allowed: {service}, {env}, {version}"),
        ({"argv": ["x"], "latest_version_argv": ["ls", "{version}"]}, "allowed: {service}"),
        ({"argv": []}, "at least 1 item"),
        ({"argv": ["x"], "timeout_seconds": 0}, "greater than 0"),
        ({"argv": ["x"], "env": {"lower": "s3cret"}}, "pattern"),
        ({"argv": ["x"], "shell": True}, "Extra inputs"),
    ],
)
def test_invalid_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message) as info:
        CommandConfig(**config)
    assert "s3cret" not in str(info.value)


def test_literal_braces_are_not_placeholders() -> None:
    config = CommandConfig(argv=["deploy", '{"replicas": 2}', "{}", "{version}"])
    assert config.argv[1] == '{"replicas": 2}'


# --- progressive delivery: traffic and health commands -----------------------------------


def traffic(tmp_path: Path, program: Path, *, actions: tuple[str, ...] = (
        "set_weight", "promote", "abort", "health")) -> CommandProvider:
    argvs = {f"{a}_argv": [PY, str(program), a, "{service}", "{version}"] for a in actions}
    if "set_weight" in actions:
        argvs["set_weight_argv"].append("--weight={weight}")
    return make(tmp_path, program, **argvs)


async def test_set_weight_reaches_the_program_as_one_argv_element(
    tmp_path: Path, program: Path
) -> None:
    provider = traffic(tmp_path, program)
    run_id = await provider.set_weight(job(key="deployment-7-weight-25"), 25)
    assert (await finish(provider, run_id)).state is RunState.SUCCEEDED
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "set_weight", "api", "1.2.3", "--weight=25"]


@pytest.mark.parametrize("action", ["promote", "abort", "health"])
async def test_traffic_actions_run_their_own_argv(
    tmp_path: Path, program: Path, action: str
) -> None:
    provider = traffic(tmp_path, program)
    run_id = await getattr(provider, action)(job(key=f"deployment-7-{action}"))
    assert (await finish(provider, run_id)).state is RunState.SUCCEEDED
    assert json.loads((tmp_path / "argv.json").read_text()) == [action, "api", "1.2.3"]


async def test_traffic_actions_are_idempotent_per_key(tmp_path: Path, program: Path) -> None:
    provider = traffic(tmp_path, program)
    first = await provider.set_weight(job(key="deployment-7-weight-25"), 25)
    assert await provider.set_weight(job(key="deployment-7-weight-25"), 25) == first
    restarted = traffic(tmp_path, program)  # a new bot process repeats the step
    assert await restarted.set_weight(job(key="deployment-7-weight-25"), 25) == first
    await finish(provider, first)
    assert (tmp_path / "starts.log").read_text() == "started\n"
    second = await provider.set_weight(job(key="deployment-7-weight-50"), 50)
    assert second != first
    await finish(provider, second)
    promoted = await provider.promote(job(key="deployment-7-promote"))
    assert await provider.promote(job(key="deployment-7-promote")) == promoted
    await finish(provider, promoted)
    assert (tmp_path / "starts.log").read_text() == "started\n" * 3


async def test_failing_traffic_command_is_reported_by_poll(tmp_path: Path, program: Path) -> None:
    provider = make(tmp_path, program, env={"EXIT": "2"},
                    health_argv=[PY, str(program), "health"])
    status = await finish(provider, await provider.health(job(key="deployment-7-health")))
    assert (status.state, status.detail) == (RunState.FAILED, "exited with code 2")


@pytest.mark.parametrize("weight", [-1, 101, 2.5, True, "50"])
async def test_set_weight_rejects_bad_weights(
    tmp_path: Path, program: Path, weight: Any
) -> None:
    provider = traffic(tmp_path, program)
    with pytest.raises(IntegrationError, match="0-100"):
        await provider.set_weight(job(), weight)
    assert not (tmp_path / "state").exists() or not any((tmp_path / "state").iterdir())


@pytest.mark.parametrize(
    ("action", "setting"),
    [("set_weight", "set_weight_argv"), ("promote", "promote_argv"),
     ("abort", "abort_argv"), ("health", "health_argv"), ("rollback", "rollback_argv")],
)
async def test_unconfigured_action_names_the_missing_setting(
    tmp_path: Path, program: Path, action: str, setting: str
) -> None:
    provider = make(tmp_path, program)
    args = (50,) if action == "set_weight" else ()
    with pytest.raises(IntegrationError, match=f"no {setting} configured"):
        await getattr(provider, action)(job(), *args)
    assert not (tmp_path / "state").exists()  # nothing was claimed or started


def test_capabilities_depend_on_config(tmp_path: Path, program: Path) -> None:
    """Traffic needs all three programs; each other program turns one capability on. The
    bundle the engine gets has exactly those fields set, and no others."""
    from integrations.base import Capability, DeployBundle
    from integrations.registry import ProviderContext, build_deploy

    def caps(provider: CommandProvider) -> set[str]:
        return set(provider._config.capabilities())

    assert caps(traffic(tmp_path, program)) == {"cancel", "traffic", "health"}
    assert caps(traffic(tmp_path, program, actions=("set_weight", "promote"))) == {"cancel"}
    assert caps(make(tmp_path, program)) == {"cancel"}
    assert caps(traffic(tmp_path, program, actions=("health",))) == {"cancel", "health"}
    assert caps(make(tmp_path, program, rollback_argv=["undo"],
                     latest_version_argv=["latest"])) == {"cancel", "rollback", "latest_version"}

    ctx = ProviderContext(state_dir=tmp_path)
    health_only = traffic(tmp_path, program, actions=("health",))._config
    bundle = build_deploy(health_only, ctx)
    assert isinstance(bundle, DeployBundle)
    assert bundle.health is bundle.target and bundle.traffic is None and bundle.rollback is None
    full = build_deploy(make(tmp_path, program, rollback_argv=["undo"], set_weight_argv=["w"],
                             promote_argv=["p"], abort_argv=["a"])._config, ctx)
    assert full.traffic is full.target and full.rollback is full.target and full.health is None
    assert health_only.settings_for(Capability.TRAFFIC) == (
        "set_weight_argv, promote_argv and abort_argv")


@pytest.mark.parametrize(
    "field", ["argv", "rollback_argv", "promote_argv", "abort_argv", "health_argv"])
def test_weight_placeholder_only_in_set_weight_argv(field: str) -> None:
    config = {"argv": ["deploy"], field: ["deploy", "--weight={weight}"]}
    with pytest.raises(ValidationError, match=r"\{weight\} is only allowed in set_weight_argv"
                       ) as info:
        CommandConfig(**config)
    assert [error["loc"] for error in info.value.errors()] == [(field,)]
    ok = CommandConfig(argv=["deploy"], set_weight_argv=["shift", "{service}", "{weight}"])
    assert ok.set_weight_argv == ["shift", "{service}", "{weight}"]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"set_weight_argv": ["shift", "{wieght}"]},
         "set_weight_argv\n.*unknown placeholder {wieght} .*{weight}"),
        ({"promote_argv": []}, "promote_argv\n.*at least 1 item"),
        ({"abort_argv": ["", "x"]}, "abort_argv\n.*the program"),
        ({"health_argv": ["check", "{verison}"]}, "health_argv\n.*unknown placeholder"),
    ],
)
def test_invalid_traffic_config(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CommandConfig(argv=["deploy"], **config)


REPORTS = textwrap.dedent("""
    import os, sys
    with open(os.environ["SHIPBOT_OUTPUT"], "w") as fh:
        fh.write(sys.argv[1])
    sys.exit(int(sys.argv[2]))
""")


@pytest.mark.parametrize(("written", "code", "artifact", "commit"), [
    ("artifact=reg/api@sha256:ab12\ncommit=0123abcd\n", 0, "reg/api@sha256:ab12", "0123abcd"),
    ("artifact=first\nartifact=second\n", 0, "second", None),  # the last one wins
    ("artifact=two words\ncommit=`rm -rf`\nother=x\n", 0, None, None),  # one word each
    ("artifact=" + "x" * 501 + "\ncommit=" + "c" * 65 + "\n", 0, None, None),  # bounded
    ("artifact=reg/api@sha256:ab12\n", 1, None, None),  # a failed build produced nothing
])
async def test_a_build_reports_its_artifact_through_shipbot_output(
        tmp_path: Path, written: str, code: int, artifact: str | None,
        commit: str | None) -> None:
    path = tmp_path / "reports.py"
    path.write_text(REPORTS)
    provider = CommandProvider(CommandConfig(argv=[PY, str(path), written, str(code)]),
                               tmp_path / "state")
    status = await finish(provider, await provider.start(job()))
    assert (status.state is RunState.SUCCEEDED) == (code == 0)
    assert (status.artifact, status.commit) == (artifact, commit)


async def test_a_deploy_is_given_the_artifact(tmp_path: Path) -> None:
    path = tmp_path / "deploy.py"
    path.write_text("import os, sys; print(sys.argv[1], os.environ.get('SHIPBOT_ARTIFACT'))")
    provider = CommandProvider(CommandConfig(argv=[PY, str(path), "{artifact}"]),
                               tmp_path / "state")
    spec = job().model_copy(update={"artifact": "reg/api@sha256:ab12"})
    status = await finish(provider, await provider.start(spec))
    assert "reg/api@sha256:ab12 reg/api@sha256:ab12" in status.output_tail
    plain = await finish(provider, await provider.start(job(key="deploy-2")))
    assert "1.2.3 None" in plain.output_tail  # no build reported one: the version
