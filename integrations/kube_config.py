"""Where a Kubernetes API server is and how Shipbot proves who it is there.

Three ways, as ``kubectl`` and client-go resolve them: a kubeconfig file and context
(``kubeconfig:``/``context:``), a server URL with a bearer token from an environment
variable (``server:`` + ``token_env:``), or, with neither, the pod's own service account
(``/var/run/secrets/kubernetes.io/serviceaccount`` and ``KUBERNETES_SERVICE_HOST``).
The service-account token is read again for every call: the kubelet rotates projected
tokens, and a token read once at start-up would expire under a long-running bot.
Exec credential plugins (``aws eks get-token``…) are not run: Shipbot runs no program
it was not told to; use a service account token instead.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from integrations.base import IntegrationError
from integrations.http_auth import is_loopback

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeConnection(BaseModel):
    """The ``cluster:`` block of a Kubernetes-backed provider."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)
    server: str | None = Field(None, pattern=r"^https?://", description="API server URL; "
                               "default: the kubeconfig context's, else in-cluster")
    kubeconfig: str | None = Field(None, min_length=1, description="path of a kubeconfig")
    context: str | None = Field(None, min_length=1, description="its context (default: "
                                "current-context)")
    token_env: str | None = Field(None, pattern=r"^[A-Z_][A-Z0-9_]*$", description="env var "
                                  "holding a bearer token (with server:)")
    ca_file: str | None = Field(None, min_length=1, description="CA bundle for the server")
    insecure_skip_tls_verify: bool = False
    service_account_dir: str = SERVICE_ACCOUNT_DIR
    request_timeout_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_way(self) -> KubeConnection:
        if self.context is not None and self.kubeconfig is None:
            raise ValueError("context: needs kubeconfig: (the file that defines it)")
        if self.token_env is not None and self.kubeconfig is not None:
            raise ValueError("give either kubeconfig: or token_env:, not both")
        if self.token_env is not None and self.server is None:
            raise ValueError("token_env: needs server: (the API server's URL)")
        server = self.server or ""
        if self.token_env and server.startswith("http://") and \
                not is_loopback(urlsplit(server).hostname or ""):
            raise ValueError("server: must be https:// with token_env: (plain http only on "
                             "loopback): the token would cross the network in cleartext")
        return self


@dataclass(frozen=True)
class Credentials:
    """What one call uses: the server, its headers, and how to check its certificate."""

    server: str
    headers: dict[str, str]
    verify: ssl.SSLContext | bool
    who: str  # for messages: "the service account token", "kubeconfig user 'ci'"


TLSCache = dict[tuple[Any, ...], ssl.SSLContext | bool]


def resolve(conn: KubeConnection, environ: Mapping[str, str], tls: TLSCache | None = None
            ) -> Credentials:
    """The credentials ``conn`` describes, read now; IntegrationError says what is missing.

    ``tls`` (one per API client) keeps a kubeconfig's TLS context while the kubeconfig and
    the files it names are unchanged (path, mtime, context): a client key is then written
    to a temporary file once, not on every call. Tokens are read again on every call."""
    if conn.kubeconfig is not None:
        return _from_kubeconfig(conn, tls)
    if conn.token_env is not None:
        token = environ.get(conn.token_env)
        if not token:
            raise IntegrationError(f"the environment variable {conn.token_env} (token_env) is "
                                   "not set: the Kubernetes provider needs its token")
        assert conn.server is not None
        return Credentials(conn.server, _bearer(token), _verify(conn, None, None),
                           f"the token in {conn.token_env}")
    return _in_cluster(conn, environ)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.strip()}", "Accept": "application/json",
            "User-Agent": "shipbot"}


def _in_cluster(conn: KubeConnection, environ: Mapping[str, str]) -> Credentials:
    sa = Path(conn.service_account_dir)
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    server = conn.server or (f"https://{_host(host)}:{port or '443'}" if host else None)
    try:
        token = (sa / "token").read_text()
    except OSError:
        token = ""
    if server is None or not token.strip():
        raise IntegrationError(
            "no Kubernetes credentials: Shipbot is not running in a cluster (no service "
            f"account token in {sa} or no KUBERNETES_SERVICE_HOST); set cluster.kubeconfig "
            "(and context) or cluster.server with cluster.token_env")
    ca = conn.ca_file or (str(sa / "ca.crt") if (sa / "ca.crt").exists() else None)
    return Credentials(server, _bearer(token), _verify(conn, ca, None),
                       f"the service account token in {sa}")


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host  # an IPv6 service address


def _verify(conn: KubeConnection, ca_file: str | None, ca_data: bytes | None,
            client_cert: tuple[bytes, bytes] | None = None) -> ssl.SSLContext | bool:
    if conn.insecure_skip_tls_verify:
        return False
    context = ssl.create_default_context(cafile=conn.ca_file or ca_file,
                                         cadata=ca_data.decode() if ca_data else None)
    if client_cert is not None:
        _load_cert(context, *client_cert)
    return context


def _load_cert(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """ssl takes a client certificate from files only: a private temporary directory,
    removed as soon as it is loaded."""
    with tempfile.TemporaryDirectory(prefix="shipbot-kube-") as tmp:
        cert_path, key_path = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
        context.load_cert_chain(cert_path, key_path)


def _from_kubeconfig(conn: KubeConnection, tls: TLSCache | None) -> Credentials:
    assert conn.kubeconfig is not None
    path = Path(conn.kubeconfig).expanduser()
    try:
        version = (str(path.absolute()), path.stat().st_mtime_ns)  # before the read
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise IntegrationError(f"cannot read the kubeconfig {path}: "
                               f"{type(exc).__name__}") from None
    if not isinstance(doc, dict):
        raise IntegrationError(f"the kubeconfig {path} is not a kubeconfig (no mapping)")
    name = conn.context or doc.get("current-context")
    if not name:
        raise IntegrationError(f"the kubeconfig {path} has no current-context: set "
                               "cluster.context")
    context = _named(doc, "contexts", "context", str(name), path)
    cluster = _named(doc, "clusters", "cluster", str(context.get("cluster")), path)
    user = _named(doc, "users", "user", str(context.get("user")), path) \
        if context.get("user") else {}
    return _credentials(conn, path, cluster, user, str(context.get("user") or ""),
                        (tls, (*version, str(name))))


def _named(doc: dict[str, Any], section: str, key: str, name: str, path: Path
           ) -> dict[str, Any]:
    for entry in doc.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, dict) else {}
    raise IntegrationError(f"the kubeconfig {path} has no {key} named {name!r}")


def _credentials(conn: KubeConnection, path: Path, cluster: dict[str, Any],
                 user: dict[str, Any], user_name: str,
                 cache: tuple[TLSCache | None, tuple[Any, ...]]) -> Credentials:
    server = conn.server or cluster.get("server")
    if not isinstance(server, str) or not server:
        raise IntegrationError(f"the kubeconfig {path}'s cluster has no server")
    if "exec" in user or "auth-provider" in user:
        raise IntegrationError(
            f"kubeconfig user {user_name!r} gets its token from a program (exec/auth-provider), "
            "which Shipbot does not run: use a service account token (token or tokenFile)")
    headers = _bearer(_user_token(user, path)) if ("token" in user or "tokenFile" in user) \
        else {"Accept": "application/json", "User-Agent": "shipbot"}
    tls, version = cache
    named = ((user, "client-certificate"), (user, "client-key"),
             (cluster, "certificate-authority"))
    key = (*version, *(_mtime(_near(path, where[k])) for where, k in named if where.get(k)))
    verify = tls[key] if tls is not None and key in tls else _tls(conn, path, cluster, user)
    if tls is not None and key not in tls:
        tls.clear()  # only the kubeconfig as it is now
        tls[key] = verify
    return Credentials(server, headers, verify, f"kubeconfig user {user_name!r}")


def _tls(conn: KubeConnection, path: Path, cluster: dict[str, Any], user: dict[str, Any]
         ) -> ssl.SSLContext | bool:
    cert = _pem(user, "client-certificate", path)
    key = _pem(user, "client-key", path)
    skip = conn.insecure_skip_tls_verify or bool(cluster.get("insecure-skip-tls-verify"))
    ca = cluster.get("certificate-authority")
    return _verify(conn.model_copy(update={"insecure_skip_tls_verify": skip}),
                   str(_near(path, ca)) if ca else None,
                   _pem(cluster, "certificate-authority", path, file_too=False),
                   (cert, key) if cert and key else None)


def _near(kubeconfig: Path, named: Any) -> Path:
    """A path a kubeconfig names, as kubectl reads it: relative to the kubeconfig's
    directory, not to where the bot was started."""
    found = Path(str(named)).expanduser()
    return found if found.is_absolute() else kubeconfig.parent / found


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None  # reading it says what is wrong


def _user_token(user: dict[str, Any], path: Path) -> str:
    if "token" in user:
        return str(user["token"])
    try:
        return _near(path, user["tokenFile"]).read_text()
    except OSError:
        raise IntegrationError(f"cannot read the tokenFile named in {path}") from None


def _pem(section: dict[str, Any], key: str, path: Path, *, file_too: bool = True
         ) -> bytes | None:
    """``<key>-data`` (base64) or, when ``file_too``, the file ``<key>`` names."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(str(data), validate=True)
        except ValueError:
            raise IntegrationError(f"{key}-data in {path} is not base64") from None
    if file_too and section.get(key):
        try:
            return _near(path, section[key]).read_bytes()
        except OSError:
            raise IntegrationError(f"cannot read {key} named in {path}") from None
    return None
