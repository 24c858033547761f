"""Print line and branch coverage per package from the .coverage file `./dev test` wrote.

One line per package (bot/engine, commands, integrations, the rest of bot) and a total,
so CI logs show the numbers without a per-file table.
"""

from __future__ import annotations

import sys
from pathlib import Path

import coverage

PACKAGES = ["bot/engine", "commands", "integrations", "bot"]


def package_of(path: str, root: Path) -> str | None:
    rel = Path(path).resolve().relative_to(root).as_posix()
    return next((p for p in PACKAGES if rel.startswith(p + "/")), None)


def main() -> int:
    root = Path.cwd().resolve()
    cov = coverage.Coverage()  # the data file: .coverage, or $COVERAGE_FILE
    if not Path(cov.config.data_file).exists():
        print(f"coverage: no data ({cov.config.data_file} missing; run with --no-cov?)")
        return 0
    cov.load()
    totals = {p: [0, 0, 0, 0] for p in [*PACKAGES, "total"]}  # lines, hit, branches, hit
    for file in sorted(root.glob("*/**/*.py")):  # files never imported count as missed
        package = package_of(str(file), root)
        if package is None:
            continue
        analysis = cov._analyze(str(file))  # the numbers `coverage report` prints
        n = analysis.numbers
        for key in (package, "total"):
            t = totals[key]
            t[0] += n.n_statements
            t[1] += n.n_statements - n.n_missing
            t[2] += n.n_branches
            t[3] += n.n_branches - n.n_missing_branches
    for name, (lines, hit, branches, bhit) in totals.items():
        label = "bot (other)" if name == "bot" else name
        print(f"coverage {label:<14} lines {pct(hit, lines):>6} ({hit}/{lines})  "
              f"branches {pct(bhit, branches):>6} ({bhit}/{branches})")
    return 0


def pct(hit: int, total: int) -> str:
    return f"{100 * hit / total:.1f}%" if total else "n/a"


if __name__ == "__main__":
    sys.exit(main())
