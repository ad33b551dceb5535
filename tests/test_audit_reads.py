"""A failing audit read stops the run in order, as a failing write does.

Reads were not translated to AuditError: a lane whose page query failed surfaced at the CLI
as "internal error" with its orders left in flight. Here the audit schema is broken under a
running run (a column the page query reads is renamed), which fails reads and not writes.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import sqlalchemy as sa

from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    write_orders_csv,
    write_venues_toml,
)

ORDERS = 2600  # more than one page of the lane's reads (engine.PAGE_SIZE is 2,000)


async def test_a_read_that_fails_mid_run_stops_the_run_in_order(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({f"s-{n}": OrderState.OPEN for n in range(ORDERS)})
    rows = [{"venue": "sfox", "order_id": f"s-{n}"} for n in range(ORDERS)]
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    async with serve_simulators({"sfox": simulator}) as server:
        # 1,000 a second: the second page is read about two seconds in.
        config = write_venues_toml(
            tmp_path / "v.toml", server, sfox={"rate_limit": 100, "period": 0.1}
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "batchcancel",
            "run",
            str(orders),
            "--venues-config",
            str(config),
            "--json",
            env=cli_env(audit_url),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(3000):  # bounded: at most 30 s
            if simulator.total_requests >= 100:
                break
            await asyncio.sleep(0.01)
        engine = sa.create_engine(audit_url)
        try:
            with engine.begin() as conn:
                conn.execute(sa.text("ALTER TABLE orders RENAME COLUMN symbol TO symbol_gone"))
        finally:
            engine.dispose()
        out, err = await asyncio.wait_for(process.communicate(), 60)
    stderr = err.decode()
    assert process.returncode == 1, stderr
    assert "audit database read failed" in stderr
    assert "internal error" not in stderr
    assert out == b""  # no summary claims anything after the audit failed
    assert simulator.total_requests < ORDERS  # it stopped sending
    # Nothing is left marked in flight without its answer: every answer heard is recorded.
    unanswered = db_rows(audit_url, "select count(*) from attempts where verdict is null")
    assert unanswered == [(0,)]
