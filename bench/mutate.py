"""Mutation testing of the rule modules: does some test fail when a rule's code is broken?

Run by hand (it takes minutes per module on a small machine):

    .venv/bin/python bench/mutate.py                 # every module, smallest first
    .venv/bin/python bench/mutate.py windows judge   # some modules
    .venv/bin/python bench/mutate.py --list          # the modules and their tests

Each module runs through mutmut 3 on its own, against its own fast tests (``MODULES``), in a
scratch copy of the project under ``.mutmut/<module>/`` (git-ignored; mutmut's browser works
there: ``cd .mutmut/windows && ../../.venv/bin/mutmut browse``). The script prints a score
per module and the diff of every surviving mutant. Survivors judged equivalent (they cannot
change behaviour) are listed with a reason in ``bench/mutation_equivalents.md``; they are
shown as such and left out of the score. Exit status 1 when a module scores under 90 %.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / ".mutmut"
EQUIVALENTS = ROOT / "bench" / "mutation_equivalents.md"
TARGET = 90.0
COPIED = ("bot", "commands", "integrations", "tests")  # packages imported by the tests
ALSO_COPY = ("shipbot.yml", "manifest.yml", "Dockerfile", "README.md", "deploy", "examples")


@dataclass(frozen=True)
class Module:
    paths: tuple[str, ...]  # files to mutate
    tests: tuple[str, ...]  # pytest node ids or files: the module's fast tests


RULES = "tests/test_rules.py"
# test_kayenta_analysis and test_latency_analysis simulate whole canaries (half a minute
# each): too slow to run per mutant. The judges' own rules are in test_judges.
JUDGE_TESTS = ("tests/test_judges.py", "tests/test_verdicts.py", "tests/test_thresholds.py",
               "tests/test_judge_rules.py", RULES)
MODULES: dict[str, Module] = {  # smallest first
    "windows": Module(("bot/engine/windows.py",),
                      (RULES, "tests/test_guards.py", "tests/test_windows.py")),
    "suspects": Module(("bot/engine/suspects.py",),
                       (RULES, "tests/test_suspects.py", "tests/test_rollback.py",
                        "tests/test_alert_threads.py")),
    "approvals": Module(("bot/engine/approvals.py",),
                        ("tests/test_approval_decisions.py", "tests/test_approvals.py",
                         "tests/test_authority.py")),
    "judge": Module(("bot/engine/analysis/judge.py",), JUDGE_TESTS),
    "mann_whitney": Module(("bot/engine/analysis/mann_whitney.py",), JUDGE_TESTS),
    "threshold": Module(("bot/engine/analysis/threshold.py",), JUDGE_TESTS),
    "redact": Module(("bot/redact.py",), ("tests/test_redact.py", "tests/test_secrets.py",
                                          "tests/test_github_app_auth.py")),
    "lifecycle": Module(("bot/engine/lifecycle.py",),
                        ("tests/test_lifecycle.py", "tests/test_policy.py")),
    "machine": Module(("bot/engine/machine.py",),
                      ("tests/test_deploy_flow.py", "tests/test_buttons_and_queries.py",
                       "tests/test_machine.py", "tests/test_github_deployments.py")),
    "parser": Module(("commands/parser.py", "commands/grammar.py", "commands/catalog.py",
                      "commands/actions.py", "bot/values.py"), (
        "tests/test_parser.py", "tests/test_parser_messages.py",
        "tests/test_edge_bounds.py::test_valid_versions_are_kept",
        "tests/test_edge_bounds.py::test_version_length_limit",
        "tests/test_edge_bounds.py::test_button_values_that_are_not_plain_ascii_numbers_are_refused",
    )),
    "policy": Module(("bot/engine/policy.py",),
                     (RULES, "tests/test_policy.py", "tests/test_guards.py",
                      "tests/test_authority.py",
                      "tests/test_approvals.py")),
    "sequential": Module(("bot/engine/analysis/sequential.py",),
                         (*JUDGE_TESTS, "tests/test_sequential.py")),
    "evidence": Module(("bot/engine/analysis/evidence.py",),
                       (*JUDGE_TESTS, "tests/test_sequential.py")),
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}
UNCOUNTED = {"skipped", "not checked"}  # skipped on purpose, or the run was stopped
NAME = re.compile(r"`([\w.ǁ]+__mutmut_\d+)`")


def equivalents() -> dict[str, str]:
    """Mutant name -> reason, from the lines of bench/mutation_equivalents.md that name one."""
    found: dict[str, str] = {}
    if EQUIVALENTS.exists():
        for line in EQUIVALENTS.read_text().splitlines():
            match = NAME.search(line)
            if match and line.lstrip().startswith(("-", "|")):
                found[match.group(1)] = line.split("—", 1)[-1].strip(" |")
    return found


def prepare(name: str, module: Module) -> Path:
    """A fresh copy of the project whose pyproject tells mutmut what to mutate and run."""
    work = SCRATCH / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for item in (*COPIED, *ALSO_COPY):
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, work / item, ignore=ignore)
        elif src.exists():
            shutil.copy2(src, work / item)
    tests = [t for t in module.tests if (ROOT / t.split("::")[0]).exists()]
    settings = {
        "source_paths": list(COPIED[:-1]),
        "only_mutate": list(module.paths),
        "also_copy": list(ALSO_COPY),
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
        "pytest_add_cli_args_test_selection": tests,
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    text = (ROOT / "pyproject.toml").read_text() + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n"
    (work / "pyproject.toml").write_text(text)
    return work


def mutmut(work: Path, *args: str, log: Path | None = None) -> str:
    exe = Path(sys.executable).with_name("mutmut")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut sets sys.path
    if log is None:
        return subprocess.run([str(exe), *args], cwd=work, env=env, text=True,
                              capture_output=True, check=False).stdout
    with log.open("w") as out:
        subprocess.run([str(exe), *args], cwd=work, env=env, stdout=out,
                       stderr=subprocess.STDOUT, check=False)
    return log.read_text()


def results(work: Path) -> dict[str, str]:
    """Mutant name -> status ("killed", "survived", "no tests", "timeout", ...)."""
    found: dict[str, str] = {}
    for line in mutmut(work, "results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and "__mutmut_" in name:
            found[name] = status
    return found


def diff(work: Path, mutant: str) -> list[str]:
    shown = mutmut(work, "show", mutant).splitlines()
    return [ln for ln in shown if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def run(name: str, module: Module, children: int, known: dict[str, str],
        report_only: bool = False) -> dict[str, object]:
    print(f"\n=== {name}: {', '.join(module.paths)} against {', '.join(module.tests)}",
          flush=True)
    work = SCRATCH / name
    log = work / "mutmut-run.log"
    if not report_only:
        work = prepare(name, module)
        mutmut(work, "run", "--max-children", str(children), log=log)
    status = results(work) if work.exists() else {}
    if not status or set(status.values()) == {"not checked"}:
        tail = log.read_text().splitlines()[-15:] if log.exists() else ["(never run)"]
        print("mutmut did not test anything:\n" + "\n".join(tail))
        return {"module": name, "total": len(status), "score": 0.0}
    counts = Counter(status.values())
    equivalent = sorted(m for m, s in status.items() if s not in KILLED and m in known)
    survivors = sorted(m for m, s in status.items()
                       if s not in KILLED | UNCOUNTED and m not in known)
    killed = sum(counts[s] for s in KILLED)
    counted = len(status) - sum(counts[s] for s in UNCOUNTED) - len(equivalent)
    score = 100.0 * killed / counted if counted else 100.0
    for mutant in survivors:
        print(f"  SURVIVED ({status[mutant]}) {mutant}")
        for line in diff(work, mutant):
            print(f"      {line}")
    for mutant in equivalent:
        print(f"  equivalent {mutant} — {known[mutant]}")
    unchecked = counts["not checked"]
    if unchecked:
        print(f"  {unchecked} mutant(s) not checked: the run was stopped early")
    return {"module": name, "total": len(status), "killed": killed,
            "survived": len(survivors), "equivalent": len(equivalent),
            "unchecked": unchecked, "score": score}


def table(rows: list[dict[str, object]]) -> str:
    out = ["| module | mutants | killed | survived | equivalent | not checked | score |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['module']} | {r['total']} | {r.get('killed', 0)} | "
                   f"{r.get('survived', 0)} | {r.get('equivalent', 0)} | "
                   f"{r.get('unchecked', 0)} | "
                   f"{float(r['score']):.1f} % |")  # type: ignore[arg-type]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of: {', '.join(MODULES)}")
    parser.add_argument("-j", "--max-children", type=int, default=2,
                        help="mutants tested at once (default 2: the machine is shared)")
    parser.add_argument("--list", action="store_true", help="show the modules and exit")
    parser.add_argument("--report", action="store_true",
                        help="score the last run of each module again (after editing "
                             "bench/mutation_equivalents.md) without running mutmut")
    args = parser.parse_args(argv)
    if args.list:
        for name, module in MODULES.items():
            print(f"{name:13} {' '.join(module.paths)}  <-  {' '.join(module.tests)}")
        return 0
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {unknown}; choose from {', '.join(MODULES)}")
    known = equivalents()
    rows = [run(name, MODULES[name], args.max_children, known, args.report)
            for name in (args.modules or MODULES)]
    print("\n" + table(rows))
    low = [str(r["module"]) for r in rows if float(r["score"]) < TARGET]  # type: ignore[arg-type]
    if low:
        print(f"\nUnder {TARGET:g} %: {', '.join(low)}")
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
