"""The benchmarks run once in a tiny configuration, so they cannot rot.

Only the harness is checked (every order sent once with the outcome its book implies, every
process behaving, every figure in the table, every goal judged and the goal line printed),
never speed: `python -m benchmarks` exits 1 when a correctness check fails, whatever the
figures are, and the quick sizes make every figure meaningless anyway.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "1", "1b", "2", "3", "3b", "3c", "4", "4b", "4c", "5", "5b", "5c",
    "6", "6b", "7", "8", "8b", "9", "9b", "9c", "10",
)  # fmt: skip
# The figures with a goal (issue 17's table, issue 16's chain cost and the earlier ones).
GOALS = ("2", "3", "3c", "4", "4b", "5", "5b", "5c", "6", "6b", "7", "9", "9b", "9c")


def split(stdout: str) -> tuple[str, re.Match[str], str]:
    """The figures table, the "N of M goals met" line, the goals table."""
    line = re.search(r"^(\d+) of (\d+) goals met", stdout, re.MULTILINE)
    assert line, stdout
    return stdout[: line.start()], line, stdout[line.end() :]


def quick(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-write", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,  # bounded; a loaded 2-CPU machine has taken 6 minutes
        check=False,
    )


def test_quick_benchmarks_are_correct_and_judge_every_goal() -> None:
    done = quick()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "correctness checks failed" not in done.stderr
    table, line, goals = split(done.stdout)
    for figure in FIGURES:
        assert re.search(rf"^{re.escape(figure)}\s", table, re.MULTILINE), (
            f"figure {figure} missing from the table:\n{done.stdout}"
        )
    assert len(re.findall(r"^4\s", table, re.MULTILINE)) == 6  # each venue, then the worst
    met, judged = int(line[1]), int(line[2])
    skipped = len(re.findall(r"\sskipped\s", goals))
    # every goal row of the table is in the goal table, judged met, NOT met or skipped
    goal_rows = re.findall(r"^(\d\w*)\s.*?\s(NOT met|met|skipped)(?:\s|$)", goals, re.MULTILINE)
    assert {figure for figure, _ in goal_rows} == set(GOALS), goals
    assert len(goal_rows) == judged + skipped
    assert met == sum(1 for _, verdict in goal_rows if verdict == "met")
    assert "wrote" not in done.stderr  # --no-write


def test_only_runs_the_named_groups() -> None:
    done = quick("--only", "pacing")
    assert done.returncode == 0, done.stderr[-3000:]
    table, line, _ = split(done.stdout)
    assert set(re.findall(r"^(\d+\w?)\s", table, re.MULTILINE)) == {"4", "4b", "4c"}, table
    assert line[2] == "2", done.stdout  # the worst venue of 4, and 4b


def test_an_unknown_group_is_a_usage_error() -> None:
    done = quick("--only", "nonesuch")
    assert done.returncode == 2
    assert "unknown group" in done.stderr
