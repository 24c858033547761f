"""The kubernetes stanza in shipbot.yml: capabilities by config, actionable messages for
each kind of mistake, redaction of the token variable, the schema, the registry's bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.config import ConfigError, parse_config
from bot.redact import REDACTED, Redactor, secret_env_names
from bot.settings import Settings
from integrations.base import Capability, JobSpec
from integrations.kubernetes import KubernetesProvider
from integrations.kubernetes_config import KubernetesConfig
from integrations.registry import ProviderContext, build_deploy

K8S = {"provider": "kubernetes", "namespace": "prod", "deployment": "api",
       "container": "api", "image": "registry.example.com/api:{version}"}


def config(deploy: dict[str, Any] | None = None, **service: Any) -> dict[str, Any]:
    return {"environments": {"staging": {}},
            "services": {"api": {"channel": "#deploys-api", "deploy": deploy or K8S,
                                 **service}}}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_traffic_is_on_only_with_a_canary() -> None:
    plain = parse_config(config()).services["api"].deploy
    assert plain.capabilities() == {Capability.CANCEL, Capability.HEALTH, Capability.ROLLBACK}
    canary = parse_config(config({**K8S, "canary": {"mode": "replicas"}})).services["api"]
    assert Capability.TRAFFIC in canary.deploy.capabilities()


def test_a_canary_strategy_without_canary_says_what_to_add() -> None:
    found = problems(config(strategy={"kind": "canary", "steps": [10, 100]}))
    assert any("services.api.strategy: canary needs a deploy target that can split traffic "
               "(for the kubernetes provider: canary:)" in p for p in found), found


@pytest.mark.parametrize(("change", "words"), [
    ({"namespace": "Prod"}, "services.api.deploy.namespace: must be a Kubernetes name "
     "(DNS-1123 label)"),
    ({"deployment": "api_v2"}, "services.api.deploy.deployment: must be a Kubernetes object "
     "name"),
    ({"container": "API"}, "services.api.deploy.container: must be a Kubernetes name"),
    ({"image": "registry.example.com/api:{verison}"}, "unknown placeholder {verison}"),
    ({"image": "registry.example.com/api :{version}"}, "an image reference has no spaces"),
    ({"token": "abc"}, "token"),
    ({"cluster": {"token_env": "K8S_TOKEN"}}, "token_env: needs server:"),
    ({"cluster": {"context": "prod"}}, "context: needs kubeconfig:"),
    ({"canary": {"mode": "gateway", "httproute": "api"}},
     "mode: gateway needs httproute, stable_service and canary_service"),
    ({"canary": {"mode": "replicas", "httproute": "api"}},
     "httproute, stable_service and canary_service are for mode: gateway"),
    ({"canary": {"mode": "gateway", "httproute": "api", "stable_service": "api",
                 "canary_service": "api"}}, "stable_service and canary_service must differ"),
    ({"canary": {"mode": "gateway", "httproute": "Route", "stable_service": "a",
                 "canary_service": "b"}}, "services.api.deploy.canary.httproute: must be"),
    ({"canary": {"mode": "mesh"}}, "services.api.deploy.canary.mode: Input should be "
     "'replicas' or 'gateway'"),
])
def test_bad_kubernetes_settings_say_what_to_fix(change: dict[str, Any], words: str) -> None:
    found = problems(config({**K8S, **change}))
    assert any(words in p for p in found), found
    assert "abc" not in " ".join(found)


@pytest.mark.parametrize("missing", ["namespace", "deployment", "container", "image"])
def test_the_deployment_and_its_container_are_required(missing: str) -> None:
    found = problems(config({k: v for k, v in K8S.items() if k != missing}))
    assert found == [f"services.api.deploy.{missing}: required setting is missing"]


def test_the_artifact_wins_over_the_image_template() -> None:
    cfg = KubernetesConfig.model_validate(K8S)
    job = JobSpec(key="k", service="api", env="staging", version="v2")
    assert cfg.image_for(job) == "registry.example.com/api:v2"
    digest = "registry.example.com/api@sha256:" + "0" * 64
    assert cfg.image_for(job.model_copy(update={"artifact": digest})) == digest


def test_the_token_variable_is_redacted_everywhere() -> None:
    parsed = parse_config(config({**K8S, "cluster": {
        "server": "https://k8s.example.com", "token_env": "CLUSTER_TOKEN"}}))
    assert "CLUSTER_TOKEN" in secret_env_names(parsed)
    settings = Settings(SLACK_BOT_TOKEN="xoxb-test")  # type: ignore[arg-type]
    redactor = Redactor.for_bot(settings, parsed, {"CLUSTER_TOKEN": "plain-value-1234567"})
    assert redactor.text("said plain-value-1234567") == f"said {REDACTED}"


def test_the_schema_has_the_kubernetes_provider(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    k8s = schema["$defs"]["KubernetesConfig"]["properties"]
    assert {"cluster", "namespace", "deployment", "container", "image", "canary"} <= set(k8s)


def test_the_registry_builds_traffic_only_with_a_canary(tmp_path: Path) -> None:
    ctx = ProviderContext(state_dir=tmp_path, environ={})
    plain = build_deploy(KubernetesConfig.model_validate(K8S), ctx)
    assert isinstance(plain.target, KubernetesProvider)
    assert plain.traffic is None and plain.health is plain.target
    assert plain.rollback is plain.target
    canary = build_deploy(KubernetesConfig.model_validate(
        {**K8S, "canary": {"mode": "replicas"}}), ctx)
    assert canary.traffic is canary.target


def test_the_readme_example_loads() -> None:
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("### Kubernetes"):]
    block = section[section.index("```yaml\n") + 8:]
    example = yaml.safe_load(block[:block.index("```")])
    api = example["services"]["api"]
    parsed = parse_config(config(api["deploy"], strategy=api["strategy"]))
    deploy = parsed.services["api"].deploy
    assert isinstance(deploy, KubernetesConfig)
    assert deploy.canary is not None and deploy.canary.mode == "replicas"
    assert deploy.cluster.server is None and deploy.cluster.kubeconfig is None  # in-cluster
    for variant in ({"kubeconfig": "/etc/shipbot/kubeconfig", "context": "prod-eu"},
                    {"server": "https://k8s.example.com:6443", "token_env": "K8S_TOKEN",
                     "ca_file": "/etc/shipbot/k8s-ca.crt"}):  # the commented variants
        parse_config(config({**api["deploy"], "cluster": variant}))
    parse_config(config({**api["deploy"], "canary": {
        "mode": "gateway", "httproute": "api", "stable_service": "api-stable",
        "canary_service": "api-canary"}}))
