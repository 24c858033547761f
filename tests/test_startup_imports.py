"""What a process pays at start-up: scipy.stats (~0.4 s of imports) only when the config
uses the Mann-Whitney judge, and then loaded while the bot starts (in a thread), so the
first judgement does not import it on the loop."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import asyncio, sys, tempfile
from pathlib import Path
from bot.devtools.local import LocalBot
from tests.conftest import make_config
from tests.test_kayenta_analysis import kayenta_config

async def main(judge: str) -> None:
    tmp = Path(tempfile.mkdtemp())
    config = kayenta_config(tmp, "http://127.0.0.1:9") if judge == "mann-whitney" \\
        else make_config(tmp)
    imported = "scipy.stats" in sys.modules
    async with LocalBot(config, state_dir=tmp / "state",
                        database_url=f"sqlite:///{tmp}/shipbot.db"):
        print(imported, "scipy.stats" in sys.modules)

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.parametrize(("judge", "loaded"), [("mann-whitney", "True"), ("threshold", "False")])
def test_scipy_is_loaded_at_start_only_for_the_mann_whitney_judge(judge: str,
                                                                   loaded: str) -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT, judge], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", loaded]
