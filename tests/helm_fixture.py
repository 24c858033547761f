"""The stand-in helm (tests/scripts/fake_helm.py) installed for a test: an executable
``helm`` in a bin directory, and the kubeconfig whose directory holds its releases and
the record of every call."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAKE_HELM = Path(__file__).parent / "scripts" / "fake_helm.py"


@dataclass(frozen=True)
class FakeHelm:
    binary: Path
    kubeconfig: Path

    @property
    def state(self) -> Path:
        return self.kubeconfig.parent

    def calls(self, command: str | None = None) -> list[dict[str, Any]]:
        """Each call's argv (without the program) and environment, oldest first."""
        path = self.state / "calls.jsonl"
        if not path.exists():
            return []
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        return [c for c in calls if command is None or c["argv"][:1] == [command]]

    def history(self, release: str) -> list[dict[str, Any]]:
        path = self.state / "helm-state.json"
        releases = json.loads(path.read_text()) if path.exists() else {}
        return list(releases.get(release, []))

    def set_history(self, release: str, history: list[dict[str, Any]]) -> None:
        path = self.state / "helm-state.json"
        releases = json.loads(path.read_text()) if path.exists() else {}
        releases[release] = history
        path.write_text(json.dumps(releases))


def install_fake_helm(root: Path) -> FakeHelm:
    """``root/bin/helm`` (runs the fake with this interpreter) and ``root/kube/config``."""
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "kube").mkdir(parents=True, exist_ok=True)
    binary = root / "bin" / "helm"
    binary.write_text(f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = 'helm'\n"
                      f"runpy.run_path({str(FAKE_HELM)!r}, run_name='__main__')\n")
    binary.chmod(0o755)
    kubeconfig = root / "kube" / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    return FakeHelm(binary, kubeconfig)
