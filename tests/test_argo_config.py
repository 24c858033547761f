"""``provider: argo_rollouts`` in shipbot.yml: the two ways to run it, and the strategies
each refuses, with a message that says what to write instead."""

from __future__ import annotations

from typing import Any

import pytest

from bot.config import ConfigError, ShipbotConfig, parse_config
from integrations.base import Capability

ARGO = {"provider": "argo_rollouts", "namespace": "prod", "rollout": "api",
        "container": "api", "image": "registry.example.com/api:{version}",
        "cluster": {"server": "https://k8s.example.com:6443", "token_env": "K8S_TOKEN"}}
CANARY = {"kind": "canary", "steps": [5, 25, 50, 100], "interval": "5m"}


def shipbot_yml(deploy: dict[str, Any], strategy: dict[str, Any]) -> ShipbotConfig:
    return parse_config({
        "environments": {"staging": {}},
        "services": {"api": {"channel": "#deploys-api", "deploy": deploy,
                             "strategy": strategy}}})


def test_shipbot_analysis_drives_the_rollout_with_a_canary() -> None:
    config = shipbot_yml(ARGO, CANARY)
    deploy = config.services["api"].deploy
    assert deploy.provider == "argo_rollouts"
    assert deploy.capabilities() == {Capability.CANCEL, Capability.TRAFFIC,
                                     Capability.HEALTH, Capability.ROLLBACK}


def test_argo_analysis_follows_the_rollout_with_a_rolling_strategy() -> None:
    config = shipbot_yml({**ARGO, "analysis": "argo"}, {"kind": "rolling"})
    assert config.services["api"].strategy.kind == "rolling"


@pytest.mark.parametrize(("analysis", "strategy", "words"), [
    ("argo", CANARY, "with analysis: argo the Rollout's own steps and AnalysisRuns run the "
     "rollout"),
    ("argo", {"kind": "blue-green"}, "use the rolling strategy without Shipbot analysis"),
    ("shipbot", {"kind": "rolling"}, "a rolling strategy would leave it waiting at its first "
     "pause"),
    ("shipbot", {"kind": "blue-green"}, "Use a canary whose steps mirror the Rollout's"),
])
def test_strategies_the_target_cannot_run_are_refused(analysis: str, strategy: dict[str, Any],
                                                      words: str) -> None:
    with pytest.raises(ConfigError) as info:
        shipbot_yml({**ARGO, "analysis": analysis}, strategy)
    assert "services.api.strategy: " in str(info.value) and words in str(info.value)


def test_no_token_is_ever_written_in_the_config() -> None:
    with pytest.raises(ConfigError, match=r"deploy\.cluster\.token: unknown setting") as info:
        shipbot_yml({**ARGO, "cluster": {"server": "https://k8s.example.com",
                                         "token": "eyJhbGciOi"}}, CANARY)
    assert "eyJhbGciOi" not in str(info.value)
