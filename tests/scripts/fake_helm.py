"""A stand-in ``helm`` for the helm provider's tests: standard library only.

It keeps its releases in ``helm-state.json`` next to ``$KUBECONFIG`` (the one thing the
provider always hands helm), records each call (argv and environment) in ``calls.jsonl``
there, and answers as helm 3 does (https://helm.sh/docs/helm/helm_history/,
helm_status, helm_upgrade, helm_rollback): ``history -o json`` and ``status -o json``
print JSON, errors go to stderr as ``Error: ...`` with exit code 1.

The version (the first ``--set-string`` value) says how an upgrade ends: ``fail*``
fails (and with --atomic is rolled back, as helm does), ``slow*`` waits a minute
(until cancelled), ``wait*`` two seconds, anything else is deployed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE = Path(os.environ.get("KUBECONFIG", "kubeconfig")).parent
# What a real release holds and ``helm status -o json`` prints: the user-supplied values
# (``config``) and the rendered manifest, with a Secret's base64 data; NOTES.txt may
# render values too. None of it may reach a Slack thread or the database.
VALUES_SECRET = "values-db-password-7731"
SECRET_DATA = "c2VjcmV0LWZyb20tbWFuaWZlc3Q="  # base64 of secret-from-manifest
SECRET_MANIFEST = ("---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: api-db\n"
                   f"type: Opaque\ndata:\n  password: {SECRET_DATA}\n")


def _load() -> dict[str, list[dict[str, Any]]]:
    path = STATE / "helm-state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save(releases: dict[str, list[dict[str, Any]]]) -> None:
    (STATE / "helm-state.json").write_text(json.dumps(releases, indent=2))


def _flag(args: list[str], name: str, default: str = "") -> str:
    return args[args.index(name) + 1] if name in args else default


def _fail(message: str) -> int:
    print(f"Error: {message}", file=sys.stderr)
    return 1


def _revision(history: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    for entry in history:
        if entry["status"] == "deployed":
            entry["status"] = "superseded"
    entry = {"revision": len(history) + 1,
             "updated": datetime.now(UTC).isoformat(), **fields}
    history.append(entry)
    return entry


def upgrade(args: list[str], releases: dict[str, list[dict[str, Any]]]) -> int:
    release, chart = args[2], args[3]
    version = _flag(args, "--set-string").partition("=")[2]
    history = releases.setdefault(release, [])
    print(f'Release "{release}" does not exist. Installing it now.' if not history
          else f'Release "{release}" has been upgraded. Happy Helming!', flush=True)
    if version.startswith(("slow", "wait")):
        time.sleep(60 if version.startswith("slow") else 2)
    chart_name = f"{Path(chart).name}-0.1.0"
    if version.startswith("fail"):
        before = [e for e in history if e["status"] == "deployed"]
        _revision(history, status="failed", chart=chart_name, app_version="1.16.0",
                  description=f'Upgrade "{release}" failed: context deadline exceeded')
        if before and "--atomic" in args:
            _revision(history, status="deployed", chart=chart_name, app_version="1.16.0",
                      description=f"Rollback to {before[-1]['revision']}")
        _save(releases)
        return _fail(f"UPGRADE FAILED: release {release} failed, and has been rolled back "
                     "due to atomic being set: context deadline exceeded")
    entry = _revision(history, status="deployed", chart=chart_name, app_version="1.16.0",
                      description=_flag(args, "--description", "Upgrade complete"))
    _save(releases)
    print(f"NAME: {release}\nLAST DEPLOYED: {entry['updated']}\n"
          f"NAMESPACE: {_flag(args, '--namespace', 'default')}\nSTATUS: deployed\n"
          f"REVISION: {entry['revision']}\nTEST SUITE: None\nNOTES:\n"
          f"Connect with password {VALUES_SECRET}")
    return 0


def rollback(args: list[str], releases: dict[str, list[dict[str, Any]]]) -> int:
    release, revision = args[1], int(args[2])
    history = releases.get(release)
    if not history:
        return _fail("release: not found")
    if not 0 < revision <= len(history):
        return _fail(f"release has no {revision} version")
    target = history[revision - 1]
    _revision(history, status="deployed", chart=target["chart"],
              app_version=target["app_version"], description=f"Rollback to {revision}")
    _save(releases)
    print("Rollback was a success! Happy Helming!")
    return 0


def status(args: list[str], releases: dict[str, list[dict[str, Any]]]) -> int:
    release = args[1]
    history = releases.get(release)
    if not history:
        return _fail("release: not found")
    last = history[-1]
    print(json.dumps({
        "name": release,
        "info": {"first_deployed": history[0]["updated"], "last_deployed": last["updated"],
                 "deleted": "", "description": last["description"],
                 "status": last["status"], "notes": ""},
        "config": {"image": {"tag": last.get("app_version")}, "db": {"password": VALUES_SECRET}},
        "manifest": SECRET_MANIFEST, "version": last["revision"],
        "namespace": _flag(args, "--namespace", "default")}))
    return 0


def history(args: list[str], releases: dict[str, list[dict[str, Any]]]) -> int:
    found = releases.get(args[1])
    if not found:
        return _fail("release: not found")
    print(json.dumps(found))
    return 0


def main(args: list[str]) -> int:
    with (STATE / "calls.jsonl").open("a") as log:
        log.write(json.dumps({"argv": args, "env": dict(os.environ)}) + "\n")
    commands = {"upgrade": upgrade, "rollback": rollback, "status": status,
                "history": history}
    if not args or args[0] not in commands:
        return _fail(f'unknown command "{args[0] if args else ""}" for "helm"')
    return commands[args[0]](args, _load())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
