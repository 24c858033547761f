"""The Kubernetes API client shared by the cluster providers: credentials as kubectl
resolves them (kubeconfig, token, in-cluster service account), TLS against a real
loopback HTTPS server with its own CA and client certificates, and Kubernetes' ``Status``
errors in words (bodies shaped as the API conventions document them)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiohttp import web

from integrations.base import IntegrationError, RateLimited
from integrations.http import HttpOptions, NotFound, ProviderUnavailable, Rejected, TokenRefused
from integrations.kube_api import KubeAPI, KubeRef
from integrations.kube_config import KubeConnection

DEPLOYMENT = KubeRef("apps/v1", "deployments", "Deployment", "prod", "api")
SA = "system:serviceaccount:shipbot:shipbot"


def status(code: int, reason: str, message: str, **details: Any) -> httpx.Response:
    """A ``Status`` answer as the API server sends it."""
    return httpx.Response(code, json={
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "details": details, "code": code})


def api(handler: Callable[[httpx.Request], httpx.Response], token: str = "t0k3n-abcdef"
        ) -> KubeAPI:
    conn = KubeConnection(server="https://k8s.example.com:6443", token_env="K8S_TOKEN")
    return KubeAPI(conn, options=HttpOptions(transport=httpx.MockTransport(handler)),
                   environ={"K8S_TOKEN": token})


async def test_get_sends_the_token_and_reads_the_object() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"kind": "Deployment", "metadata": {"name": "api"}})

    body = await api(handler).get(DEPLOYMENT)
    assert body["metadata"]["name"] == "api"
    assert seen[0].url.path == "/apis/apps/v1/namespaces/prod/deployments/api"
    assert seen[0].headers["authorization"] == "Bearer t0k3n-abcdef"


async def test_rbac_denial_names_the_verb_resource_namespace_and_user() -> None:
    message = (f'deployments.apps "api" is forbidden: User "{SA}" cannot patch resource '
               '"deployments" in API group "apps" in the namespace "prod"')
    client = api(lambda r: status(403, "Forbidden", message, name="api", group="apps",
                                  kind="deployments"))
    with pytest.raises(TokenRefused) as info:
        await client.patch(DEPLOYMENT, {"spec": {}}, "strategic")
    text = str(info.value)
    assert "RBAC denied" in text and "to patch deployments in namespace prod" in text
    assert SA in text and "the token in K8S_TOKEN" in text and "t0k3n" not in text


async def test_rbac_denial_of_a_subresource_names_the_subresource() -> None:
    """Granting "patch deployments" does not grant "patch deployments/status": say which."""
    message = (f'deployments.apps "api" is forbidden: User "{SA}" cannot patch resource '
               '"deployments/status" in API group "apps" in the namespace "prod"')
    client = api(lambda r: status(403, "Forbidden", message, name="api", group="apps",
                                  kind="deployments"))
    with pytest.raises(TokenRefused) as info:
        await client.patch(DEPLOYMENT, {"status": {}}, "merge", subresource="status")
    assert "to patch deployments/status in namespace prod" in str(info.value)


@pytest.mark.parametrize(("code", "reason", "kind", "words"), [
    (401, "Unauthorized", TokenRefused, "did not accept the token in K8S_TOKEN"),
    (404, "NotFound", NotFound, "Deployment prod/api was not found"),
    (422, "Invalid", Rejected, 'Deployment.apps "api" is invalid'),
    (400, "BadRequest", Rejected, 'Deployment.apps "api" is invalid'),
    (503, "ServiceUnavailable", ProviderUnavailable, "HTTP 503"),
])
async def test_each_error_status_in_words(code: int, reason: str, kind: type[Exception],
                                          words: str) -> None:
    message = ('Deployment.apps "api" is invalid: spec.template.spec.containers[0].image: '
               'Required value')
    client = api(lambda r: status(code, reason, message))
    with pytest.raises(kind) as info:
        await client.get(DEPLOYMENT)
    assert words in str(info.value)


async def test_429_waits_as_long_as_retry_after_says() -> None:
    client = api(lambda r: httpx.Response(429, headers={"Retry-After": "7"},
                                          json={"kind": "Status", "code": 429}))
    with pytest.raises(RateLimited) as info:
        await client.get(DEPLOYMENT)
    assert info.value.wait_seconds == 7


async def test_update_retries_a_conflict_with_the_fresh_resource_version() -> None:
    versions = iter(["100", "101"])
    patches: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"metadata": {"resourceVersion": next(versions)}})
        patches.append(json.loads(request.content))
        assert request.headers["content-type"] == "application/merge-patch+json"
        if len(patches) == 1:
            return status(409, "Conflict", 'Operation cannot be fulfilled on deployments.apps '
                          '"api": the object has been modified; please apply your changes '
                          "to the latest version and try again")
        return httpx.Response(200, json={"metadata": {"resourceVersion": "102"}})

    done = await api(handler).update(DEPLOYMENT, lambda obj: {"metadata": {"annotations": {
        "x": obj["metadata"]["resourceVersion"]}}})
    assert done["metadata"]["resourceVersion"] == "102"
    assert [p["metadata"]["resourceVersion"] for p in patches] == ["100", "101"]
    assert patches[1]["metadata"]["annotations"] == {"x": "101"}


async def test_update_gives_up_after_repeated_conflicts() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, json={"metadata": {"resourceVersion": "1"}})
        return status(409, "Conflict", "the object has been modified")

    with pytest.raises(IntegrationError, match="kept changing"):
        await api(handler).update(DEPLOYMENT, lambda obj: {"spec": {}})


async def test_an_html_answer_says_the_server_url_is_wrong() -> None:
    client = api(lambda r: httpx.Response(200, text="<html>login</html>"))
    with pytest.raises(IntegrationError, match=r"cluster\.server"):
        await client.get(DEPLOYMENT)


def test_config_refuses_half_given_ways() -> None:
    with pytest.raises(ValueError, match="needs server"):
        KubeConnection(token_env="K8S_TOKEN")
    with pytest.raises(ValueError, match="needs kubeconfig"):
        KubeConnection(context="prod")
    with pytest.raises(ValueError, match="not both"):
        KubeConnection(kubeconfig="/k", token_env="T", server="https://x")


def test_a_token_is_never_sent_over_plain_http_but_to_loopback() -> None:
    with pytest.raises(ValueError, match=r"server: must be https:// with token_env: "
                                         r"\(plain http only on loopback\)"):
        KubeConnection(server="http://k8s.example.com:8080", token_env="K8S_TOKEN")
    for server in ("http://127.0.0.1:8001", "http://localhost:8001", "http://[::1]:8001"):
        assert KubeConnection(server=server, token_env="K8S_TOKEN").server == server
    assert KubeConnection(server="http://k8s.example.com:8080").token_env is None


async def test_in_cluster_reads_the_rotated_token_on_every_call(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("first-token")
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.url.host} {request.headers['authorization']}")
        return httpx.Response(200, json={})

    client = KubeAPI(KubeConnection(service_account_dir=str(tmp_path)),
                     options=HttpOptions(transport=httpx.MockTransport(handler)),
                     environ={"KUBERNETES_SERVICE_HOST": "10.96.0.1",
                              "KUBERNETES_SERVICE_PORT": "443"})
    await client.get(DEPLOYMENT)
    (tmp_path / "token").write_text("second-token")  # the kubelet rotated it
    await client.get(DEPLOYMENT)
    assert seen == ["10.96.0.1 Bearer first-token", "10.96.0.1 Bearer second-token"]


async def test_outside_a_cluster_without_settings_says_what_to_set(tmp_path: Path) -> None:
    client = KubeAPI(KubeConnection(service_account_dir=str(tmp_path)), environ={})
    with pytest.raises(IntegrationError, match=r"not running in a cluster.*kubeconfig"):
        await client.get(DEPLOYMENT)


async def test_unset_token_env_is_named() -> None:
    client = KubeAPI(KubeConnection(server="https://x", token_env="K8S_TOKEN"), environ={})
    with pytest.raises(IntegrationError, match=r"K8S_TOKEN .* is not set"):
        await client.get(DEPLOYMENT)


def kubeconfig(tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any]) -> str:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "prod",
           "contexts": [{"name": "prod", "context": {"cluster": "c1", "user": "ci"}}],
           "clusters": [{"name": "c1", "cluster": cluster}],
           "users": [{"name": "ci", "user": user}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


async def test_kubeconfig_exec_plugins_are_refused_with_the_alternative(tmp_path: Path
                                                                        ) -> None:
    path = kubeconfig(tmp_path, {"exec": {"command": "aws", "args": ["eks", "get-token"]}},
                      {"server": "https://k8s.example.com"})
    with pytest.raises(IntegrationError, match="does not run: use a service account token"):
        await KubeAPI(KubeConnection(kubeconfig=path)).get(DEPLOYMENT)


async def test_kubeconfig_unknown_context_is_named(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, {"token": "x"}, {"server": "https://k8s.example.com"})
    with pytest.raises(IntegrationError, match="no context named 'staging'"):
        await KubeAPI(KubeConnection(kubeconfig=path, context="staging")).get(DEPLOYMENT)


# -- real TLS: a loopback HTTPS API server with its own CA, requiring client certificates


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
             "/CN=test-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for name, subject, ext in (("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
                               ("client", "/CN=shipbot/O=deployers", "basicConstraints=CA:FALSE")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout",
                 str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
                 "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "1", "-extfile",
                 str(d / f"{name}.ext"), "-out", str(d / f"{name}.crt"))
    return d


@pytest.fixture
async def https_api(pki: Path) -> AsyncIterator[tuple[int, list[str]]]:
    """An API server on loopback that only talks to clients with a certificate of our CA;
    it records each client's certificate subject."""
    seen: list[str] = []

    async def deployment(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append((str(peer["subject"]) if peer else "none") + " " +
                    request.headers.get("Authorization", "no token"))
        return web.json_response({"kind": "Deployment", "metadata": {"name": "api"}})

    app = web.Application()
    app.router.add_get("/apis/apps/v1/namespaces/prod/deployments/api", deployment)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki / "ca.crt"))
    context.load_cert_chain(pki / "server.crt", pki / "server.key")
    context.verify_mode = ssl.CERT_REQUIRED
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield runner.addresses[0][1], seen
    finally:
        await runner.cleanup()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def test_kubeconfig_client_certificate_over_verified_tls(
        tmp_path: Path, pki: Path, https_api: tuple[int, list[str]]) -> None:
    port, seen = https_api
    path = kubeconfig(tmp_path, {"client-certificate-data": b64(pki / "client.crt"),
                                 "client-key-data": b64(pki / "client.key")},
                      {"server": f"https://127.0.0.1:{port}",
                       "certificate-authority-data": b64(pki / "ca.crt")})
    body = await KubeAPI(KubeConnection(kubeconfig=path)).get(DEPLOYMENT)
    assert body["metadata"]["name"] == "api"
    assert "shipbot" in seen[0] and "deployers" in seen[0]


async def test_a_server_certificate_from_another_ca_is_refused(
        tmp_path: Path, pki: Path, https_api: tuple[int, list[str]]) -> None:
    port, seen = https_api
    path = kubeconfig(tmp_path, {"client-certificate-data": b64(pki / "client.crt"),
                                 "client-key-data": b64(pki / "client.key")},
                      {"server": f"https://127.0.0.1:{port}"})  # no CA: the system's
    with pytest.raises(ProviderUnavailable, match="could not reach"):
        await KubeAPI(KubeConnection(kubeconfig=path)).get(DEPLOYMENT)
    assert seen == []


async def test_kubeconfig_paths_are_relative_to_the_kubeconfigs_directory(
        tmp_path: Path, pki: Path, https_api: tuple[int, list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """As kubectl reads them: ``certs/ca.crt`` next to ``~/.kube/config`` is
    ``~/.kube/certs/ca.crt``, wherever the bot was started."""
    port, seen = https_api
    kube_dir = tmp_path / "kube"
    (kube_dir / "certs").mkdir(parents=True)
    for name in ("ca.crt", "client.crt", "client.key"):
        (kube_dir / "certs" / name).write_bytes((pki / name).read_bytes())
    (kube_dir / "token").write_text("file-token")
    path = kubeconfig(kube_dir, {"client-certificate": "certs/client.crt",
                                 "client-key": "certs/client.key", "tokenFile": "token"},
                      {"server": f"https://127.0.0.1:{port}",
                       "certificate-authority": "certs/ca.crt"})
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    body = await KubeAPI(KubeConnection(kubeconfig=path)).get(DEPLOYMENT)
    assert body["metadata"]["name"] == "api"
    assert "deployers" in seen[0] and seen[0].endswith(" Bearer file-token")


async def test_the_client_key_is_written_out_once_per_kubeconfig_version(
        tmp_path: Path, pki: Path, https_api: tuple[int, list[str]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """ssl loads a client key from a file only: it is written to a private temporary
    directory once per kubeconfig (path, mtime, context), not on every call, while a
    rotated tokenFile is still read on every call."""
    port, seen = https_api
    written: list[str] = []
    real = tempfile.TemporaryDirectory

    def recording(*args: Any, **kwargs: Any) -> tempfile.TemporaryDirectory[str]:
        made = real(*args, **kwargs)
        written.append(made.name)
        return made

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    (tmp_path / "token").write_text("first-token")
    user = {"client-certificate-data": b64(pki / "client.crt"),
            "client-key-data": b64(pki / "client.key"),
            "tokenFile": str(tmp_path / "token")}
    cluster = {"server": f"https://127.0.0.1:{port}",
               "certificate-authority-data": b64(pki / "ca.crt")}
    path = kubeconfig(tmp_path, user, cluster)
    client = KubeAPI(KubeConnection(kubeconfig=path))
    await client.get(DEPLOYMENT)
    (tmp_path / "token").write_text("second-token")  # rotated
    await client.get(DEPLOYMENT)
    await client.get(DEPLOYMENT)
    assert len(written) == 1
    assert [s.rsplit(" ", 1)[-1] for s in seen] == ["first-token", "second-token",
                                                    "second-token"]
    kubeconfig(tmp_path, user, cluster)  # the file changed (a new mtime): read anew
    os.utime(path, ns=(1, 1))
    await client.get(DEPLOYMENT)
    assert len(written) == 2 and len(seen) == 4
    await KubeAPI(KubeConnection(kubeconfig=path)).get(DEPLOYMENT)  # nothing shared
    assert len(written) == 3
