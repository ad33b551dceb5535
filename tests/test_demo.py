"""`batchcancel demo`: the README's first command works and checks itself."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from batchcancel.demo import VenuePlan, run_demo
from batchcancel.demo_kill import run_kill_demo
from batchcancel.simulators.book import Runaway
from tests.conftest import run_cli

SMALL = {name: VenuePlan(40, 200) for name in ("sfox", "etna", "crux", "tanx", "zebpay")}


class TestDemo:
    def test_small_demo_matches_the_books(self, tmp_path: Path) -> None:
        """Every outcome of a small demo matches what its simulator was seeded with."""
        result = run_demo(tmp_path, plan=SMALL, seed=3)
        assert result.mismatches == []
        assert result.summary.orders == 200
        assert set(result.summary.venues) == set(SMALL)
        with result.report_csv.open(newline="") as handle:
            assert len(list(csv.DictReader(handle))) == 200

    async def test_demo_command_exits_0(self, tmp_path: Path) -> None:
        """`batchcancel demo` runs the full demo and says every outcome matched."""
        env = {"PATH": str(Path(sys.executable).parent)}
        result = await run_cli("demo", "--out", str(tmp_path / "out"), env=env, timeout=120)
        assert result.code == 0, result.stderr
        assert "outcomes match what the simulators were seeded with" in result.stdout
        assert (tmp_path / "out" / "audit.db").is_file()


class TestKillDemo:
    def test_a_small_kill_from_the_books_leaves_nothing_working(self, tmp_path: Path) -> None:
        """`demo --kill` on small books: every book flat, the runaway's orders cancelled too,
        nothing working at any simulator."""
        books = {name: (20, 200) for name in ("sfox", "etna", "crux", "tanx", "zebpay")}
        # A runaway that is done before the slowest book can be flat (20 orders at 20/s).
        books["etna"] = (20, 20)
        result = run_kill_demo(tmp_path, books=books, runaway=Runaway(count=10, seconds=0.3))
        assert result.still_working == dict.fromkeys(books, 0)
        assert result.runaway_placed > 0
        assert result.summary.books is not None
        assert {b["verdict"] for b in result.summary.books.values()} == {"flat"}
        assert result.summary.books["sfox"]["listed"] == 20 + result.runaway_placed
        assert result.summary.exit_code == 0

    async def test_demo_kill_command_prints_the_kill_report(self, tmp_path: Path) -> None:
        """`batchcancel demo --kill` exits 0, says every book is flat and prints the report."""
        env = {"PATH": str(Path(sys.executable).parent)}
        result = await run_cli("demo", "--kill", "--out", str(tmp_path / "k"), env=env)
        assert result.code == 0, result.stderr
        assert "every book is flat" in result.stdout
        assert "books (--from-venues):" in result.stdout
