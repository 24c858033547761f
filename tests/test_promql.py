"""PromQL templates: placeholders filled safely, and bad templates refused at config load."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from integrations.metrics import MetricsError
from integrations.promql import PromQLTemplate, check_template, format_window, render_query

ERROR_RATIO = (
    'sum(rate(http_requests_total{service="{service}",env="{env}",track="{track}",'
    'code=~"5.."}[{window}])) / sum(rate(http_requests_total{service="{service}",'
    'env="{env}",track="{track}"}[{window}]))'
)


def test_render_fills_placeholders_and_leaves_promql_braces_alone() -> None:
    query = render_query(ERROR_RATIO, service="api", env="production", track="canary",
                         version="1.4.0+build.7", window="1m")
    assert query == (
        'sum(rate(http_requests_total{service="api",env="production",track="canary",'
        'code=~"5.."}[1m])) / sum(rate(http_requests_total{service="api",'
        'env="production",track="canary"}[1m]))'
    )
    assert render_query('up{version="{version}"}', version="v1.2/rc:3-x_y") == \
        'up{version="v1.2/rc:3-x_y"}'
    assert render_query("sum(x{})", service="api") == "sum(x{})"


@pytest.mark.parametrize(
    "value",
    ['api"} or vector(1) #', 'api"', "api\\", "api svc", "", "api\n", "a{b}", "api'", "api`",
     "x" * 201],
)
def test_injection_attempts_are_rejected(value: str) -> None:
    with pytest.raises(MetricsError, match="cannot be used in a query"):
        render_query(ERROR_RATIO, service=value, env="production", track="canary", window="1m")


def test_track_window_and_missing_values() -> None:
    with pytest.raises(MetricsError, match="canary or baseline"):
        render_query(ERROR_RATIO, service="api", env="prod", track="prod", window="1m")
    for window in ("1 m", "1m) or vector(1", "", "-5s", 0, -1.0, math.nan):
        with pytest.raises(MetricsError, match="window"):
            render_query("rate(x[{window}])", window=window)
    with pytest.raises(MetricsError, match=r"uses \{env\} but no env was given"):
        render_query(ERROR_RATIO, service="api", track="canary", window="1m")
    assert format_window(30) == "30s"
    assert format_window(timedelta(minutes=2)) == "120s"
    assert format_window(0.5) == "500ms"
    assert format_window("1h30m") == "1h30m"


class _AnalysisConfig(BaseModel):
    query: PromQLTemplate


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('up{version="{verison}"}', r"unknown placeholder \{verison\}"),
        ("up{service}", "must be inside quotes"),
        ('{service}_requests_total{env="{env}"}', "must be inside quotes"),
        ('rate(x["{window}"])', "must not be inside quotes"),
        ('up{service="{service}}', "unterminated string"),
        ("   ", "must not be empty"),
    ],
)
def test_templates_are_checked_at_config_time(template: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        _AnalysisConfig(query=template)


def test_template_scanner_understands_strings_and_comments() -> None:
    assert check_template(ERROR_RATIO) == ERROR_RATIO
    check_template('up{a="x\\"{service}"} # {service} in a comment\n+ rate(x[{window}])')
    check_template("up{a=`{service}`}")
