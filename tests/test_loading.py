"""Sending starts while a big order list is still loading; a cut-off load is finished later."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_venues_toml,
)

ROWS = 100_000  # five loading chunks
VALID = 200  # the first rows; the rest are invalid (never sent), so the run itself is quick


def write_big_csv(path: Path) -> Path:
    lines = ["venue,order_id"]
    lines += [f"sfox,{n}" for n in range(1, VALID + 1)]
    lines += [f"sfox,bad id {n}" for n in range(VALID + 1, ROWS + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestLoading:
    async def test_first_send_before_last_row_and_interrupted_load_resumes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The first cancel leaves before every row is recorded; a run killed while loading
        stays `loading`, and the same --run-key loads the rest and sends each order once."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({str(n): OrderState.OPEN for n in range(1, VALID + 1)})
        orders = write_big_csv(tmp_path / "big.csv")
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 40, "period": 1.0}
            )
            args = ("run", str(orders), "--venues-config", str(config), "--run-key", "big")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                *args,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3000):  # bounded: 30 s
                if simulator.total_requests:
                    break
                await asyncio.sleep(0.005)
            recorded_at_first_send = db_rows(audit_url, "select count(*) from orders")[0][0]
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            assert simulator.total_requests >= 1
            assert recorded_at_first_send < ROWS
            assert db_rows(audit_url, "select status from runs") == [("loading",)]

            again = await run_cli(*args, "--json", env=env)
        assert again.code == 1, again.stderr  # the invalid rows need attention
        summary = json.loads(again.stdout)
        assert summary["orders"] == ROWS
        assert summary["outcomes"]["invalid"] == ROWS - VALID
        assert summary["outcomes"]["canceled"] + summary["outcomes"]["already_closed"] == VALID
        assert db_rows(audit_url, "select count(distinct seq) from orders") == [(ROWS,)]
        assert simulator.total_requests <= VALID + 32  # in-flight ones may be sent again
        assert all(n <= 2 for n in simulator.requests.values())
