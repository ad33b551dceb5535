"""The confirm pass: cancel_pending orders polled by order status until final or timed out."""

from __future__ import annotations

import json
from pathlib import Path

from batchcancel.simulators.base import OrderState
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


def book() -> dict[str, OrderState]:
    """40 orders whose cancel completes later, 10 that are open, in sFOX's book."""
    orders = {str(1000 + n): OrderState.OPEN_ASYNC for n in range(40)}
    orders.update({str(2000 + n): OrderState.OPEN for n in range(10)})
    return orders


def sfox(settle_after: float) -> SfoxSimulator:
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None, settle_after=settle_after)
    simulator.seed(book())
    simulator.will_fill.update(str(1000 + n) for n in range(5))  # these fill instead
    return simulator


def kinds(db: str) -> dict[str, int]:
    return dict(db_rows(db, "select kind, count(*) from attempts group by kind"))


class TestConfirm:
    async def test_run_with_confirm_settles_pending_cancels(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """--confirm polls each cancel_pending order until the venue says canceled (or filled)
        and records it; no cancel is sent twice."""
        simulator = sfox(settle_after=0.4)
        orders = write_orders_csv(
            tmp_path / "orders.csv", [{"venue": "sfox", "order_id": k} for k in book()]
        )
        db = audit_url
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--confirm",
                "--json",
                env=cli_env(db),
            )
        assert result.code == 0, result.stderr
        outcomes = json.loads(result.stdout)["outcomes"]
        assert outcomes["canceled"] == 45
        assert outcomes["already_closed"] == 5
        assert outcomes["cancel_pending"] == 0
        assert all(simulator.requests[k] == 1 for k in book())
        assert sum(simulator.status_requests.values()) >= 40
        assert kinds(db)["cancel"] == 50
        assert kinds(db)["confirm"] == sum(simulator.status_requests.values())
        assert "40 orders were cancel_pending; 40 are now confirmed final, 0 still pending" in (
            result.stderr
        )
        filled = [f"sfox order {1000 + n} filled before its cancel took effect" for n in range(5)]
        assert all(line in result.stderr for line in filled)  # listed for a human

    async def test_confirm_command_and_timeout(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`confirm RUN` after a plain run: orders that never settle stay cancel_pending when
        the timeout passes; a venue without a status endpoint (ETNA) is left alone."""
        simulator = sfox(settle_after=3600)
        etna = EtnaSimulator(credentials=CREDENTIALS, rate_limit=None)
        etna.seed({"77": OrderState.OPEN_ASYNC})
        rows = [{"venue": "sfox", "order_id": k} for k in book()]
        rows.append({"venue": "etna", "order_id": "77", "account_id": "5"})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        db = audit_url
        env = cli_env(db)
        async with serve_simulators({"sfox": simulator, "etna": etna}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 0}, etna={"rate_limit": 0}
            )
            first = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "c1",
                "--json",
                env=env,
            )
            assert first.code == 0, first.stderr
            assert json.loads(first.stdout)["outcomes"]["cancel_pending"] == 41
            confirmed = await run_cli("confirm", "c1", "--timeout", "1.5", "--json", env=env)
        assert confirmed.code == 0, confirmed.stderr
        assert json.loads(confirmed.stdout)["outcomes"]["cancel_pending"] == 41
        assert "41 orders were cancel_pending; 0 are now confirmed final, 41 still pending" in (
            confirmed.stderr
        )
        assert etna.total_requests == 1  # the cancel only
        assert sum(simulator.status_requests.values()) >= 40
        assert all(simulator.requests[k] == 1 for k in book())
