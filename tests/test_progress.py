"""Live progress: plain lines when stderr is not a terminal, a rich table on a terminal."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
import threading
from pathlib import Path

from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


async def setup(tmp_path: Path, server_factory: ServeSimulators) -> tuple[SfoxSimulator, Path]:
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({str(n): OrderState.OPEN for n in range(1, 61)})
    orders = write_orders_csv(
        tmp_path / "orders.csv", [{"venue": "sfox", "order_id": str(n)} for n in range(1, 61)]
    )
    return simulator, orders


class TestProgress:
    async def test_plain_lines_when_not_a_terminal(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """Not a terminal (Airflow logs): plain `progress <venue>: done/total` lines."""
        simulator, orders = await setup(tmp_path, serve_simulators)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 20, "period": 1.0}
            )
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                env=cli_env(tmp_path / "a.db"),
            )
        assert result.code == 0, result.stderr
        lines = [x for x in result.stderr.splitlines() if x.startswith("progress sfox: ")]
        assert len(lines) >= 2  # at the start, then every few seconds
        assert "/60 done" in lines[-1] and "/s" in lines[-1]

    async def test_live_table_on_a_terminal(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """On a pseudo-terminal the rich table renders (venue, done/total) without error."""
        simulator, orders = await setup(tmp_path, serve_simulators)
        primary, secondary = pty.openpty()
        chunks: list[bytes] = []

        def read_terminal() -> None:
            while True:
                try:
                    data = os.read(primary, 4096)
                except OSError:  # the other end closed
                    return
                if not data:
                    return
                chunks.append(data)

        reader = threading.Thread(target=read_terminal, daemon=True)
        reader.start()
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 30, "period": 1.0}
            )
            env = {**cli_env(tmp_path / "a.db"), "TERM": "xterm", "COLUMNS": "120"}
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                "run",
                str(orders),
                "--venues-config",
                str(config),
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=secondary,
            )
            os.close(secondary)
            out, _ = await asyncio.wait_for(process.communicate(), 60)
        reader.join(timeout=10)
        os.close(primary)
        screen = b"".join(chunks).decode(errors="replace")
        assert process.returncode == 0, screen
        assert "done/total" in screen and "sfox" in screen
        assert "Traceback" not in screen
        assert "60/60" in screen
        assert b"canceled 60" in out
