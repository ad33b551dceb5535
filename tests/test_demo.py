"""`batchcancel demo`: the README's first command works and checks itself."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from batchcancel.demo import VenuePlan, run_demo
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
