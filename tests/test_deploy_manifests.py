"""The Dockerfile and Kubernetes manifests agree with what the code serves and reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from bot.cli import _parser
from bot.config import parse_config
from bot.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(KUBE.glob("*.yaml"))]
    return {d["kind"]: d for d in docs if d.get("kind") != "Kustomization"}


def container() -> dict[str, Any]:
    [c] = manifests()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return c


def serve_port() -> int:
    args = _parser().parse_args(container()["args"])
    assert args.command == "serve"
    return int(args.port)


def app_routes() -> set[str]:
    from bot.runtime import Shipbot
    from bot.web.app import build_asgi_app

    config = parse_config(yaml.safe_load((ROOT / "shipbot.yml").read_text()))
    bot = Shipbot(Settings(DATABASE_URL="sqlite://"), config)  # type: ignore[call-arg]
    return {route.path for route in build_asgi_app(bot, manage_lifespan=False).routes}


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((KUBE / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == sorted(p.name for p in KUBE.glob("*.yaml")
                                    if p.name != "kustomization.yaml")


def test_two_replicas_no_shared_volume_and_a_disruption_budget() -> None:
    kinds = manifests()
    deployment, pdb = kinds["Deployment"], kinds["PodDisruptionBudget"]
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"]["minAvailable"] == 1
    volumes = deployment["spec"]["template"]["spec"]["volumes"]
    assert not any("persistentVolumeClaim" in v for v in volumes)
    mounts = {m["name"]: m["mountPath"] for m in container()["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in container()["env"]}
    state = next(v for v in volumes if v["name"] == "state")
    assert "emptyDir" in state and mounts["state"] == env["SHIPBOT_STATE_DIR"]


def test_probes_and_ports_match_what_serve_answers() -> None:
    c, routes = container(), app_routes()
    port = serve_port()
    [named] = [p for p in c["ports"] if p["name"] == "http"]
    assert named["containerPort"] == port
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert {"/healthz", "/livez", "/slack/events", "/metrics"} <= routes
    service = manifests()["Service"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_env_names_are_settings_and_secrets_come_from_a_secret() -> None:
    fields = Settings.model_fields
    env = container()["env"]
    for var in env:
        assert var["name"] in fields, f"{var['name']} is not a setting Shipbot reads"
        secret = fields[var["name"]].annotation in (SecretStr, SecretStr | None) \
            or var["name"] == "DATABASE_URL"  # holds a password
        if secret:
            assert "secretKeyRef" in var.get("valueFrom", {}), var["name"]
            assert "value" not in var
        else:
            assert "value" in var, var["name"]
    names = {v["name"] for v in env}
    assert {"SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "DATABASE_URL"} <= names
    grace = int(next(v["value"] for v in env if v["name"] == "SHIPBOT_SHUTDOWN_GRACE_SECONDS"))
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > grace
    job = manifests()["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"] == ["db", "upgrade"]
    assert _parser().parse_args(job["args"]).db_command == "upgrade"


def test_dockerfile_runs_serve_as_a_non_root_user_on_the_same_port() -> None:
    lines = [line.split(None, 1) for line in (ROOT / "Dockerfile").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    instructions = [(word.upper(), rest) for word, *more in lines for rest in [" ".join(more)]]
    user = [rest for word, rest in instructions if word == "USER"][-1]
    assert user not in ("root", "0")
    assert (str(serve_port()) in [rest for word, rest in instructions if word == "EXPOSE"])
    assert ("ENTRYPOINT", '["shipbot"]') in instructions
    assert ("CMD", f'["serve", "--port", "{serve_port()}"]') in instructions
    assert instructions[0][1].startswith("python:3.11-slim")
    pod = manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(user)
