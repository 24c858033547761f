"""`metrics: provider: datadog` in shipbot.yml, and Datadog's query templates: what the
config check accepts, what it refuses and how it says so."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main
from bot.config import ConfigError, json_schema, parse_config
from bot.redact import secret_env_names
from integrations import ddquery
from integrations.datadog import DatadogProvider
from integrations.datadog_config import DatadogConfig
from integrations.metrics import MetricsError
from integrations.metrics_registry import build_metrics
from integrations.prometheus import PrometheusConfig, PrometheusProvider
from integrations.registry import ProviderContext
from tests.conftest import make_config

ERRORS = ("sum:trace.http.request.errors{service:{service},track:{track},"
          "version:{version}}.as_count()")
HITS = ERRORS.replace(".errors", ".hits")
RATIO = f"{ERRORS} / {HITS}"


def config_data(tmp_path: Path, metrics: dict[str, Any] | None,
                *metric_list: dict[str, Any]) -> dict[str, Any]:
    data = make_config(tmp_path).model_dump(mode="json")
    deploy = data["services"]["api"]["deploy"]
    deploy["set_weight_argv"] = ["true", "{weight}"]
    deploy["promote_argv"] = deploy["abort_argv"] = ["true"]
    data["services"]["api"]["strategy"] = {
        "kind": "canary", "steps": [50, 100],
        "analysis": {"metrics": list(metric_list) or [
            {"name": "error_rate", "query": RATIO, "max_increase": 0.01}]}}
    if metrics is not None:
        data["metrics"] = metrics
    return data


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return caught.value.problems


def test_a_datadog_config_with_its_defaults(tmp_path: Path) -> None:
    config = parse_config(config_data(tmp_path, {"provider": "datadog"}))
    assert isinstance(config.metrics, DatadogConfig)
    assert config.metrics.url == "https://api.datadoghq.com"
    assert (config.metrics.api_key_env, config.metrics.app_key_env) == ("DD_API_KEY",
                                                                        "DD_APP_KEY")
    eu = parse_config(config_data(tmp_path, {"provider": "datadog", "site": "datadoghq.eu"}))
    assert eu.metrics is not None and eu.metrics.url == "https://api.datadoghq.eu"  # type: ignore[union-attr]
    assert secret_env_names(config) >= {"DD_API_KEY", "DD_APP_KEY"}  # redacted everywhere


def test_metrics_without_a_provider_is_still_prometheus(tmp_path: Path) -> None:
    promql = 'sum(rate(http_requests_total{service="{service}",track="{track}"}[{window}]))'
    metric = {"name": "rps", "query": promql, "min": 1}
    config = parse_config(config_data(tmp_path, {"url": "http://prometheus:9090"}, metric))
    assert isinstance(config.metrics, PrometheusConfig)
    ctx = ProviderContext(state_dir=tmp_path, environ={})
    assert isinstance(build_metrics(config.metrics, ctx), PrometheusProvider)
    # and a Datadog query is refused as PromQL, as before
    [problem] = problems(config_data(tmp_path, {"url": "http://prometheus:9090"}))
    assert problem.startswith("services.api.strategy.analysis.metrics.0.query: "
                              "{service} must be inside quotes")


def test_the_runtime_builds_the_datadog_provider(tmp_path: Path) -> None:
    config = parse_config(config_data(tmp_path, {"provider": "datadog"}))
    assert config.metrics is not None
    ctx = ProviderContext(state_dir=tmp_path, environ={})
    assert isinstance(build_metrics(config.metrics, ctx), DatadogProvider)


@pytest.mark.parametrize(("metrics", "expected"), [
    ({"provider": "datadogg"}, "metrics.provider: unknown provider 'datadogg' (did you mean "
                               "'datadog'?); known: prometheus, datadog"),
    ({"provider": "datadog", "site": "datadoghq.eu", "base_url": "https://dd.internal"},
     "metrics: give site or base_url, not both"),
    ({"provider": "datadog", "site": "datadoghq.de"}, "metrics.site: Input should be "),
    ({"provider": "datadog", "base_url": "http://dd-proxy.internal"},
     "metrics.base_url: base_url must be https:// (the keys travel in its headers)"),
    ({"provider": "datadog", "api_key": "abc"}, "metrics.api_key: unknown setting"),
    ({"provider": "datadog", "api_key_env": "dd api key"}, "metrics.api_key_env: "),
    ({"provider": "datadog", "timeout_seconds": 0}, "metrics.timeout_seconds: "),
])
def test_bad_datadog_settings_are_reported_where_they_are(
        tmp_path: Path, metrics: dict[str, Any], expected: str) -> None:
    found = problems(config_data(tmp_path, metrics))
    assert any(p.startswith(expected) for p in found), found


def test_histogram_query_is_refused_with_datadog(tmp_path: Path) -> None:
    metric = {"name": "latency", "judge": "sequential",
              "histogram_query": "sum:trace.http.request{service:{service}}"}
    [problem] = problems(config_data(tmp_path, {"provider": "datadog"}, metric))
    assert problem.startswith("services.api.strategy.analysis.metrics.0.histogram_query: "
                              "Datadog has no histogram buckets by le: use query with a "
                              "percentile (e.g. p95:trace.http.request{")
    assert "threshold or mann-whitney judge" in problem


def test_datadog_counters_must_be_interval_counts(tmp_path: Path) -> None:
    metric = {"name": "errors", "judge": "sequential", "requests_query": HITS.removesuffix(
        ".as_count()"), "errors_query": f"cumsum({ERRORS})"}
    found = problems(config_data(tmp_path, {"provider": "datadog"}, metric))
    assert found[0].startswith("services.api.strategy.analysis.metrics.0.requests_query: a "
                               "Datadog count query must end in .as_count()")
    assert found[1].startswith("services.api.strategy.analysis.metrics.0.errors_query: drop "
                               "cumsum()")
    good = {**metric, "requests_query": HITS, "errors_query": ERRORS}
    assert parse_config(config_data(tmp_path, {"provider": "datadog"}, good)).metrics


def test_promql_is_refused_with_datadog(tmp_path: Path) -> None:
    promql = 'sum(rate(http_requests_total{service="{service}"}[{window}]))'
    [problem] = problems(config_data(tmp_path, {"provider": "datadog"},
                                     {"name": "rps", "query": promql, "min": 1}))
    assert problem == ("services.api.strategy.analysis.metrics.0.query: {service} must be a "
                       "whole tag value inside a scope, right after its key, e.g. "
                       "metric{service:{service}}")


def test_config_check_and_schema_show_datadog(tmp_path: Path, capsys) -> None:
    path = tmp_path / "shipbot.yml"
    path.write_text(json.dumps(config_data(tmp_path, {"provider": "datadog",
                                                      "site": "datadoghq.eu"})))
    assert main(["config", "check", str(path)]) == 0
    path.write_text(json.dumps(config_data(tmp_path, {"provider": "datadog", "sitee": "x"})))
    assert main(["config", "check", str(path)]) == 1
    assert "metrics.sitee: unknown setting" in capsys.readouterr().out
    schema = json_schema()
    members = schema["properties"]["metrics"]["anyOf"][0]["oneOf"]
    assert {m["$ref"] for m in members} == {"#/$defs/PrometheusConfig",
                                            "#/$defs/DatadogConfig"}
    datadog = schema["$defs"]["DatadogConfig"]["properties"]
    assert "datadoghq.eu" in datadog["site"]["anyOf"][0]["enum"]
    assert datadog["api_key_env"]["default"] == "DD_API_KEY"


# --- templates ---------------------------------------------------------------------------

def test_templates_fill_tag_values_as_datadog_stores_them() -> None:
    rendered = ddquery.render_query(ERRORS, service="api", track="baseline",
                                    version="V2.0.0+build.7")
    assert rendered == ("sum:trace.http.request.errors{service:api,track:baseline,"
                        "version:v2.0.0_build.7}.as_count()")
    rollup = "sum:x{service:{service}}.rollup(sum, {window})"
    assert ddquery.render_query(rollup, service="api", window="2m").endswith("(sum, 120)")
    assert ddquery.render_query(rollup, service="api", window=0.2).endswith("(sum, 1)")


@pytest.mark.parametrize("value", [
    "api},service:*", "api,track:canary", "api OR service:web", "*", "a b", "api)", "!api",
    'api"', "", "x" * 201,
])
def test_values_that_could_leave_the_tag_filter_are_refused(value: str) -> None:
    with pytest.raises(MetricsError, match="cannot be used in a Datadog query: only letters"):
        ddquery.render_query(ERRORS, service=value, track="canary", version="1")


@pytest.mark.parametrize(("template", "expected"), [
    ("avg:x{*} by {version}", "{version} must be a whole tag value inside a scope"),
    ("avg:x{service:{service}-x}", "{service} must be a whole tag value"),
    ("avg:x.{service}{*}", "{service} must be a whole tag value"),
    ("avg:x{a:{window}}", "{window} is seconds for .rollup(sum, {window})"),
    ("avg:x{a:{verison}}", "unknown placeholder {verison}"),
    ("avg:x{a:b", "a '{' scope is not closed"),
    ("avg:x{a:b}}", "a '}' closes no scope"),
    ("  ", "the query must not be empty"),
])
def test_misplaced_placeholders_fail_at_config_load(template: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected.replace("{", r"\{").replace(
            "}", r"\}").replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        ddquery.check_template(template)


def test_render_refuses_what_is_missing_or_not_a_track() -> None:
    with pytest.raises(MetricsError, match=r"uses \{version\} but no version was given"):
        ddquery.render_query(ERRORS, service="api", track="canary")
    with pytest.raises(MetricsError, match="track must be canary or baseline"):
        ddquery.render_query(ERRORS, service="api", track="prod", version="1")
    with pytest.raises(MetricsError, match="is not a duration"):
        ddquery.render_query("x{a:b}.rollup(sum, {window})", window="soon")


def test_the_readme_example_is_a_valid_config(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("#### Datadog as the metrics provider", 1)[1]
    example = yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    data = config_data(tmp_path, example["metrics"])
    data["services"]["api"]["strategy"] = example["services"]["api"]["strategy"]
    config = parse_config(data)
    assert isinstance(config.metrics, DatadogConfig) and config.metrics.site == "datadoghq.eu"
    analysis = config.services["api"].strategy.analysis
    assert analysis is not None and [m.judge.value for m in analysis.metrics] == [
        "threshold", "mann-whitney", "sequential"]
