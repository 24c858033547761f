"""Prometheus metrics on a registry owned by the running bot (no import-time globals)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.deployments = Gauge(
            "shipbot_deployments", "Deployments by state", ["state"], registry=self.registry)
        self.step_seconds = Histogram(
            "shipbot_step_duration_seconds", "Time spent advancing one step, by state",
            ["state"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.step_lag_seconds = Histogram(
            "shipbot_step_lag_seconds", "How late a deployment's step started after it was "
            "due: the runner keeping up (or not)", registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.slack_errors = Counter(
            "shipbot_slack_api_errors_total", "Slack Web API calls that failed",
            ["method", "error"], registry=self.registry)
        self.provider_requests = Counter(
            "shipbot_provider_requests_total", "HTTP requests to providers (CI, deploy, "
            "deployments mirror, metrics, HTTP checks), by "
            "outcome (status class, or error: no answer)", ["provider", "method", "outcome"],
            registry=self.registry)

    def count_provider_request(self, provider: str, method: str, outcome: str) -> None:
        self.provider_requests.labels(provider, method, outcome).inc()
