"""The benchmarks run once in a tiny configuration, so they cannot rot.

Only correctness is asserted (every order sent once with the outcome its book implies, every
process behaving, every figure in the table), never speed: `python -m benchmarks` exits 1 when
a correctness check fails, whatever the figures are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ("1", "1b", "2", "3", "3b", "4", "4b", "5", "5b", "6", "7", "8", "8b")


def test_quick_benchmarks_are_correct_and_print_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-write"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "correctness checks failed" not in done.stderr
    for figure in FIGURES:
        assert re.search(rf"^{re.escape(figure)}\s", done.stdout, re.MULTILINE), (
            f"figure {figure} missing from the table:\n{done.stdout}"
        )
    assert len(re.findall(r"^4\s", done.stdout, re.MULTILINE)) == 5  # one row per venue
    assert "wrote" not in done.stderr  # --no-write
