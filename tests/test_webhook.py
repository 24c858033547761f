"""The webhook deploy target against a fake deployer: the signed or authenticated POST,
its JSON body, polling to success, failure or timeout, cancel, rate limits, restarts, and
each kind of bad config refused with a clear message."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from pydantic import ValidationError

from bot.config import ConfigError
from integrations.base import (
    Capability,
    DeployTarget,
    IntegrationError,
    JobSpec,
    RateLimited,
    RunState,
    RunStatus,
    TransientError,
)
from integrations.http import HttpOptions, NotFound, Rejected, TokenRefused
from integrations.registry import ProviderContext, build_deploy
from integrations.webhook import WebhookProvider, encode_run, fill_body
from integrations.webhook_config import WebhookConfig
from tests.conftest import make_config
from tests.fake_deployer import FakeDeployer

BASE = "https://deployer.example.com"
SECRET = "whsec-" + "s" * 30
TOKEN = "dtok-" + "t" * 30


def settings(**overrides: Any) -> dict[str, Any]:
    return {"provider": "webhook", "url": f"{BASE}/api/deploys",
            "signature": {"secret_env": "DEPLOYER_HMAC"},
            "status_url_field": "links.status", "status_field": "state",
            "message_field": "result.message", "link_field": "links.html",
            "started_field": "created_at", "id_field": "id",
            "cancel_url": f"{BASE}/api/runs/{{id}}/cancel",
            "rollback_url": f"{BASE}/api/rollbacks", "set_weight_url": f"{BASE}/api/weights",
            "promote_url": f"{BASE}/api/promotions", "abort_url": f"{BASE}/api/aborts",
            "timeout_seconds": 60, **overrides}


def make(fake: FakeDeployer, clock: Any = time.time, env: dict[str, str] | None = None,
         **overrides: Any) -> WebhookProvider:
    environ = env if env is not None else {"DEPLOYER_HMAC": SECRET, "DEPLOYER_TOKEN": TOKEN}
    return WebhookProvider(WebhookConfig(**settings(**overrides)), environ=environ,
                           options=HttpOptions(transport=httpx.MockTransport(fake.handler)),
                           clock=clock)


def job(version: str, key: str = "deployment-1-abc-deploy", **extra: Any) -> JobSpec:
    return JobSpec(key=key, service="api", env="staging", version=version, **extra)


async def done(target: DeployTarget, run_id: str) -> RunStatus:
    for _ in range(20):
        status = await target.poll(run_id)
        if status.state is not RunState.RUNNING:
            return status
    raise AssertionError(f"still running: {status}")


async def test_a_signed_deploy_polls_to_success() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake)
    run_id = await target.start(job("v1.4.2", artifact="reg.example.com/api@sha256:ab"))
    first = await target.poll(run_id)
    assert (first.state, first.detail) == (RunState.RUNNING, "is queued")
    status = await done(target, run_id)
    assert status.state is RunState.SUCCEEDED
    assert status.detail == "the deployer reports succeeded"
    assert status.url == "https://deployer.example.com/runs/run-1"
    post = fake.requests[0]
    assert (post.method, str(post.url)) == ("POST", f"{BASE}/api/deploys")
    assert json.loads(post.content) == {
        "service": "api", "env": "staging", "version": "v1.4.2",
        "artifact": "reg.example.com/api@sha256:ab", "key": "deployment-1-abc-deploy"}
    assert post.headers["idempotency-key"] == "deployment-1-abc-deploy"
    assert post.headers["content-type"] == "application/json"
    stamp = post.headers["x-shipbot-timestamp"]
    assert abs(int(stamp) - time.time()) < 60
    expected = hmac.new(SECRET.encode(), stamp.encode() + b"." + post.content,
                        hashlib.sha256).hexdigest()
    assert post.headers["x-shipbot-signature-256"] == f"sha256={expected}"
    assert fake.refused == [] and len(fake.requests) == 4  # POST, then 3 polls
    assert all(SECRET not in str(r.headers) for r in fake.requests)


async def test_a_wrong_secret_is_refused_by_the_receiver() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake, env={"DEPLOYER_HMAC": "whsec-wrong-secret"})
    with pytest.raises(TokenRefused) as caught:
        await target.start(job("v1"))
    assert fake.refused == ["signature mismatch"]
    assert str(caught.value) == ("the token for the webhook receiver at deployer.example.com "
                                 "was refused (HTTP 401: signature mismatch): check "
                                 "DEPLOYER_HMAC")
    assert "wrong-secret" not in str(caught.value) and fake.runs == {}


async def test_the_body_alone_can_be_signed_as_github_does() -> None:
    fake = FakeDeployer(token="unused")  # no check: the header is read here
    target = make(fake, signature={"secret_env": "DEPLOYER_HMAC", "signed": "body",
                                   "header": "X-Hub-Signature-256"})
    with pytest.raises(TokenRefused):
        await target.start(job("v1"))
    post = fake.requests[0]
    digest = hmac.new(SECRET.encode(), post.content, hashlib.sha256).hexdigest()
    assert post.headers["x-hub-signature-256"] == f"sha256={digest}"


async def test_an_auth_header_from_the_environment() -> None:
    fake = FakeDeployer(token=TOKEN)
    target = make(fake, signature=None, auth={"token_env": "DEPLOYER_TOKEN"})
    assert (await done(target, await target.start(job("v1")))).state is RunState.SUCCEEDED
    assert fake.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    custom = make(fake, signature=None,
                  auth={"token_env": "DEPLOYER_TOKEN", "header": "X-Api-Key", "scheme": None})
    with pytest.raises(TokenRefused, match="check DEPLOYER_TOKEN"):
        await custom.start(job("v1", key="deployment-2-deploy"))
    assert fake.requests[-1].headers["x-api-key"] == TOKEN


async def test_an_unset_secret_names_the_variable() -> None:
    fake = FakeDeployer(secret=SECRET)
    with pytest.raises(IntegrationError, match="variable DEPLOYER_HMAC is not set"):
        await make(fake, env={}).start(job("v1"))
    assert fake.requests == []


async def test_a_failed_run_says_what_the_deployer_said() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake)
    status = await done(target, await target.start(job("fail-1")))
    assert status.state is RunState.FAILED
    assert status.detail == "the deployer reports failed: pods for fail-1 never became ready"


async def test_a_run_past_its_timeout_fails_and_is_cancelled() -> None:
    fake = FakeDeployer(secret=SECRET)
    now = [time.time()]
    target = make(fake, clock=lambda: now[0])
    run_id = await target.start(job("slow-1"))
    assert (await target.poll(run_id)).state is RunState.RUNNING
    now[0] += 61
    status = await target.poll(run_id)
    assert status.state is RunState.FAILED
    assert status.detail == ("the deployer did not report success or failure within 60 s "
                             "(last state: running)")
    assert fake.runs["run-1"].cancelled


async def test_cancel_posts_to_the_cancel_url() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake)
    run_id = await target.start(job("slow-1"))
    await target.cancel(run_id)
    cancel = fake.requests[-1]
    assert (cancel.method, str(cancel.url)) == ("POST", f"{BASE}/api/runs/run-1/cancel")
    assert json.loads(cancel.content) == {"id": "run-1", "key": "deployment-1-abc-deploy"}
    assert cancel.headers["idempotency-key"] == "deployment-1-abc-deploy:cancel"
    status = await target.poll(run_id)
    assert (status.state, status.detail) == (
        RunState.FAILED, "the deployer reports cancelled: cancelled by request")


async def test_without_a_cancel_url_cancel_sends_nothing() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake, cancel_url=None)
    run_id = await target.start(job("slow-1"))
    await target.cancel(run_id)
    assert len(fake.requests) == 1
    assert Capability.CANCEL not in WebhookConfig(**settings(cancel_url=None)).capabilities()


@pytest.mark.parametrize(("answer", "error", "message"), [
    (httpx.Response(429, headers={"Retry-After": "7"}), RateLimited,
     "the webhook receiver at deployer.example.com's rate limit was reached"),
    (httpx.Response(503, json={"message": "deploys paused"}), TransientError,
     "answered HTTP 503: deploys paused; will retry"),
    (httpx.Response(422, json={"message": "unknown service api"}), Rejected,
     "refused the request (HTTP 422): unknown service api"),
    (httpx.Response(404, json={}), NotFound, "has no endpoint /api/deploys (HTTP 404)"),
    (httpx.Response(201, text="<html>ok</html>"), IntegrationError, "not JSON: check the URL"),
])
async def test_http_errors_say_what_to_do(answer: httpx.Response, error: type[Exception],
                                          message: str) -> None:
    fake = FakeDeployer(secret=SECRET, faults=[answer])
    with pytest.raises(error) as caught:
        await make(fake).start(job("v1"))
    assert message in str(caught.value)
    if isinstance(caught.value, RateLimited):
        assert caught.value.wait_seconds == 7


async def test_a_restart_repeats_the_post_and_the_receiver_dedupes() -> None:
    fake = FakeDeployer(secret=SECRET)
    run_id = await make(fake).start(job("slow-2"))
    again = make(fake)  # a new process: the run id alone says where to look
    assert await again.start(job("slow-2")) == run_id
    assert len(fake.runs) == 1
    assert [r.headers["idempotency-key"] for r in fake.requests] == [
        "deployment-1-abc-deploy"] * 2
    assert (await again.poll(run_id)).state is RunState.RUNNING


async def test_status_url_from_a_template_and_the_run_id() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake, status_url_field=None, status_url=f"{BASE}/api/runs/{{id}}")
    status = await done(target, await target.start(job("v1")))
    assert status.state is RunState.SUCCEEDED
    assert str(fake.requests[1].url) == f"{BASE}/api/runs/run-1"


async def test_an_answer_without_the_status_url_is_a_clear_error() -> None:
    fake = FakeDeployer(secret=SECRET)
    with pytest.raises(IntegrationError, match=r"answer has no links\.poll, so its run cannot"):
        await make(fake, status_url_field="links.poll").start(job("v1"))
    with pytest.raises(IntegrationError, match="answer has no run_id"):
        await make(fake, status_url_field=None, status_url=f"{BASE}/r/{{id}}",
                   id_field="run_id").start(job("v1", key="k2"))


async def test_an_answer_without_the_status_field_is_a_clear_error() -> None:
    fake = FakeDeployer(secret=SECRET)
    target = make(fake, status_field="phase")
    run_id = await target.start(job("v1"))
    with pytest.raises(IntegrationError, match="has no phase, so Shipbot cannot tell"):
        await target.poll(run_id)


async def test_a_status_url_on_another_host_is_not_followed() -> None:
    fake = FakeDeployer(secret=SECRET, faults=[httpx.Response(
        201, json={"id": "r1", "links": {"status": "https://elsewhere.example.net/r1"}})])
    with pytest.raises(IntegrationError, match="not on a scheme, host and port of the"):
        await make(fake).start(job("v1"))


@pytest.mark.parametrize("status_url", [
    "http://deployer.example.com/api/runs/r1",  # the token would go in cleartext
    "https://deployer.example.com:8443/api/runs/r1",  # another service on that host
])
async def test_a_status_url_on_another_scheme_or_port_is_not_followed(
        status_url: str) -> None:
    fake = FakeDeployer(secret=SECRET, faults=[httpx.Response(
        201, json={"id": "r1", "links": {"status": status_url}})])
    with pytest.raises(IntegrationError, match="not on a scheme, host and port of the "
                                               "configured URLs"):
        await make(fake).start(job("v1"))
    assert len(fake.requests) == 1  # the POST; nothing was polled
    forged = encode_run({"s": status_url, "k": "deployment-1-abc-deploy", "i": "r1"})
    with pytest.raises(IntegrationError, match="unknown webhook run"):
        await make(fake).poll(forged)
    assert len(fake.requests) == 1


async def test_same_scheme_host_and_port_is_followed() -> None:
    fake = FakeDeployer(secret=SECRET, faults=[httpx.Response(
        201, json={"id": "run-1", "links": {"status": f"{BASE}:443/api/runs/run-1"}}),
        httpx.Response(200, json={"state": "running"})])
    run_id = await make(fake).start(job("v1"))
    assert (await make(fake).poll(run_id)).state is RunState.RUNNING
    assert str(fake.requests[-1].url) == f"{BASE}/api/runs/run-1"


async def test_an_answer_without_an_id_cannot_be_cancelled() -> None:
    """status_url_field finds the run; with no id in the answer, cancel_url's {id} is
    unknown: cancel says so and posts nothing (never .../runs/None/cancel)."""
    fake = FakeDeployer(secret=SECRET, faults=[httpx.Response(
        201, json={"links": {"status": f"{BASE}/api/runs/run-9"}})])
    target = make(fake)
    run_id = await target.start(job("v1"))
    with pytest.raises(IntegrationError, match="the receiver's answer had no id, so Shipbot "
                                               "cannot cancel the run"):
        await target.cancel(run_id)
    assert [r.method for r in fake.requests] == ["POST"]
    assert all("None" not in str(r.url) for r in fake.requests)


@pytest.mark.parametrize("run_id", [
    "no-such-run", "wh1.!!!", encode_run({"s": "https://evil.example.net/x", "k": "k"})])
async def test_a_run_id_we_did_not_hand_out_is_refused(run_id: str) -> None:
    fake = FakeDeployer(secret=SECRET)
    with pytest.raises(IntegrationError, match="unknown webhook run"):
        await make(fake).poll(run_id)
    assert fake.requests == []


async def test_traffic_rollback_and_their_bodies() -> None:
    fake = FakeDeployer(secret=SECRET)
    bundle = build_deploy(WebhookConfig(**settings()), ProviderContext(
        state_dir=Path("/nonexistent"),
        environ={"DEPLOYER_HMAC": SECRET},
        http=HttpOptions(transport=httpx.MockTransport(fake.handler))))
    assert bundle.traffic is not None and bundle.rollback is not None
    assert bundle.health is None
    spec = job("v2", key="deployment-1-abc-canary-25")
    status = await done(bundle.target, await bundle.traffic.set_weight(spec, 25))
    assert status.state is RunState.SUCCEEDED
    await bundle.traffic.promote(job("v2", key="k-promote"))
    await bundle.traffic.abort(job("v2", key="k-abort"))
    await bundle.rollback.rollback(job("v1", key="k-rollback"))
    assert [r.kind for r in fake.runs.values()] == ["set_weight", "promote", "abort",
                                                    "rollback"]
    assert fake.runs["run-1"].body["weight"] == 25  # a number, not "25"
    assert fake.runs["run-4"].body["version"] == "v1"
    with pytest.raises(IntegrationError, match="whole number 0-100"):
        await bundle.traffic.set_weight(spec, 101)


def test_the_body_is_built_as_json_never_by_concatenation() -> None:
    values = {"service": 'api"}, "x": {"', "env": "a\\b\n", "version": "v1",
              "artifact": None, "key": "k"}
    body = fill_body({"who": "{service}", "nested": ["{env}-{version}", 3, True],
                      "artifact": "{artifact}", "note": "{artifact}!"}, values)
    assert json.loads(json.dumps(body)) == {
        "who": 'api"}, "x": {"', "nested": ["a\\b\n-v1", 3, True], "artifact": None,
        "note": "!"}


@pytest.mark.parametrize(("overrides", "error"), [
    ({"auth": {"token_env": "DEPLOYER_TOKEN"}}, "set exactly one of auth"),
    ({"signature": None}, "set exactly one of auth"),
    ({"status_url_field": None}, "set exactly one of status_url_field"),
    ({"status_url": f"{BASE}/runs/{{id}}"}, "set exactly one of status_url_field"),
    ({"cancel_url": f"{BASE}/runs/{{id}}/cancel", "id_field": None},
     "cancel_url uses {id}: set id_field"),
    ({"body": {"v": "{verison}"}}, "unknown placeholder {verison}"),
    ({"body": {"w": "{weight}"}}, "{weight} is only allowed in weight_body"),
    ({"url": "ftp://deployer"}, "must be http:// or https://"),
    ({"url": "http://deployer.example.com/x"}, "url must be https://"),
    ({"status_url_field": None, "status_url": "http://deployer.example.com/r/{id}"},
     "status_url must be https://"),
    ({"cancel_url": "http://10.0.0.7/runs/{id}/cancel"}, "cancel_url must be https://"),
    ({"auth": {"token_env": "DEPLOYER_TOKEN"}, "signature": None,
      "abort_url": "http://deployer.example.com/a"}, "abort_url must be https://"),
    ({"url": "https://{env}.deployer.example.com/x"}, "in the path only, not in the host"),
    ({"url": "https://u:p@deployer/x"}, "must not contain credentials"),
    ({"signature": {"secret_env": "SLACK_SIGNING_SECRET"}}, "one of Shipbot's own settings"),
    ({"auth": {"token_env": "dtok-abc"}, "signature": None}, "String should match pattern"),
    ({"success_values": ["done"], "failure_values": ["done"]}, "'done' is in both"),
    ({"status_field": "a..b"}, "String should match pattern"),
    ({"token": "x"}, "Extra inputs are not permitted"),
])
def test_bad_config_is_refused_clearly(overrides: dict[str, Any], error: str) -> None:
    with pytest.raises(ValidationError) as caught:
        WebhookConfig(**settings(**overrides))
    assert error in str(caught.value)
    assert "dtok-abc" not in str(caught.value)


def test_plain_http_is_allowed_on_loopback_only() -> None:
    for base in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        loop = {k: v.replace(BASE, base) if isinstance(v, str) else v
                for k, v in settings().items()}
        assert WebhookConfig(**loop).url == f"{base}/api/deploys"


def test_the_readme_example_loads() -> None:
    """The stanza users copy from README.md is a valid config with every capability."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### HTTP webhook as the deploy target"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert block is not None
    stanza = yaml.safe_load(block.group(1))["services"]["api"]["deploy"]
    assert WebhookConfig(**stanza).capabilities() == {
        Capability.CANCEL, Capability.ROLLBACK, Capability.TRAFFIC}


def test_shipbot_config_names_where_the_webhook_stanza_is_wrong(tmp_path: Path) -> None:
    both = settings(auth={"token_env": "DEPLOYER_TOKEN"})
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, deploy=both)
    assert any(p.startswith("services.api.deploy") and "set exactly one of auth" in p
               for p in caught.value.problems), caught.value.problems
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, deploy={**settings(), "provider": "webhok"})
    assert any("unknown provider 'webhok' (did you mean 'webhook'?)" in p
               for p in caught.value.problems), caught.value.problems
