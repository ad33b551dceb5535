"""A 3xx says nothing about the order: it stops the venue, resumable once the config is fixed.

Any 3xx used to finalise the order `rejected`, so a moved base URL finalised a whole run.
SPEC: a redirect is never followed; the venue stops as on refused credentials (its orders
`skipped`, the reason naming the Location), the other venues carry on, and a resume with the
right base_url cancels everything.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchcancel.simulators.base import Answer, FaultPlan, OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.tanx import TanxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
async def test_a_redirect_stops_the_venue_and_the_run_resumes_after(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str, status: int
) -> None:
    moved = "https://api.example.invalid/v2/orders"
    plan = FaultPlan(by_request={1: Answer.redirect(status, moved)})
    sfox = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
    sfox.seed({f"s-{n}": OrderState.OPEN for n in range(8)})
    tanx = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
    tanx.seed({str(n): OrderState.OPEN for n in range(1, 6)})
    rows = [{"venue": "sfox", "order_id": f"s-{n}"} for n in range(8)]
    rows += [{"venue": "tanx", "order_id": str(n)} for n in range(1, 6)]
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    env = cli_env(audit_url)
    async with serve_simulators({"sfox": sfox, "tanx": tanx}) as server:
        config = write_venues_toml(
            tmp_path / "v.toml", server, sfox={"rate_limit": 0, "max_in_flight": 1}, tanx={}
        )
        first = await run_cli("run", str(orders), "--venues-config", str(config), "--json", env=env)
        summary = json.loads(first.stdout)
        assert first.code == 1, first.stderr
        assert summary["venues"]["sfox"]["skipped"] == 8
        assert summary["venues"]["sfox"]["rejected"] == 0
        tanx_done = summary["venues"]["tanx"]
        assert tanx_done["canceled"] + tanx_done["cancel_pending"] == 5  # it carried on
        assert sfox.total_requests == 1  # nothing more went to a venue that moved
        assert f"redirect to {moved}" in first.stderr
        reasons = db_rows(audit_url, "select distinct reason from orders where venue = 'sfox'")
        assert all(moved in reason for (reason,) in reasons), reasons
        resumed = await run_cli("resume", summary["run_id"], "--json", env=env)
    assert resumed.code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["venues"]["sfox"]["canceled"] == 8
