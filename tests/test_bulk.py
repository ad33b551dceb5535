"""Bulk cancels: `kill` (and `run --bulk`) use sFOX's bulk endpoint, with per-order audit."""

from __future__ import annotations

import json
from pathlib import Path

from batchcancel.simulators.base import OrderState
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


def book() -> dict[str, OrderState | None]:
    """300 open, 40 pending-async, 30 filled, 30 unknown."""
    orders: dict[str, OrderState | None] = {str(10_000 + n): OrderState.OPEN for n in range(300)}
    orders.update({str(20_000 + n): OrderState.OPEN_ASYNC for n in range(40)})
    orders.update({str(30_000 + n): OrderState.FILLED for n in range(30)})
    orders.update({str(40_000 + n): None for n in range(30)})
    return orders


class TestBulk:
    async def test_kill_uses_bulk_requests_and_audits_each_order(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`kill`: far fewer HTTP requests than orders; every order has its own attempt row
        written before the bulk request; orders the bulk answer leaves out are cancelled one
        by one and end with the outcome the book implies."""
        orders_book = book()
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({k: v for k, v in orders_book.items() if v is not None})
        orders = write_orders_csv(
            tmp_path / "orders.csv", [{"venue": "sfox", "order_id": k} for k in orders_book]
        )
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            result = await run_cli(
                "kill",
                str(orders),
                "--venues-config",
                str(config),
                "--json",
                "--reason",
                "desk emergency",
                env=cli_env(audit_url),
            )
        assert result.code == 1, result.stderr  # unknown ids are not_found
        outcomes = json.loads(result.stdout)["outcomes"]
        assert outcomes["canceled"] == 300
        assert outcomes["cancel_pending"] == 40
        assert outcomes["already_closed"] == 30
        assert outcomes["not_found"] == 30
        # 400 orders in 8 bulk requests, plus one single cancel per order left out
        assert simulator.bulk_requests == 8
        assert all(simulator.bulk_ids[k] == 1 for k in orders_book)
        left_out = [k for k, v in orders_book.items() if v in (OrderState.FILLED, None)]
        assert simulator.total_requests == 8 + len(left_out)
        assert all(simulator.requests[k] == 1 for k in left_out)
        assert sum(simulator.requests.values()) == len(left_out)
        kinds = dict(db_rows(audit_url, "select kind, count(*) from attempts group by kind"))
        assert kinds == {"bulk": 400, "cancel": 60}
        reasons = db_rows(audit_url, "select reason, command from runs")
        assert reasons == [("desk emergency", "kill")]


class TestKillFiveVenues:
    async def test_kill_cancels_every_open_order_at_every_venue(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`kill --all-open` on five venues: every open order ends canceled (or
        cancel_pending at Crux, which completes later); sFOX, tanX and ZebPay need far fewer
        requests than orders; one attempt row per order."""
        import random

        from batchcancel.simulators import SIMULATORS
        from tests.test_five_venues import order_fields

        rng = random.Random(4)
        simulators = {}
        rows = []
        for venue in ("sfox", "etna", "crux", "tanx", "zebpay"):
            simulator = SIMULATORS[venue](credentials=CREDENTIALS, rate_limit=None)
            for n in range(150):
                fields = order_fields(venue, n, rng)
                if venue == "tanx":
                    fields["symbol"] = "BTCUSDT"  # names the market its bulk cancel needs
                simulator.seed({fields["order_id"]: OrderState.OPEN})
                rows.append({"venue": venue, **fields})
            simulators[venue] = simulator
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        async with serve_simulators(simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, **{v: {"rate_limit": 0} for v in simulators}
            )
            result = await run_cli(
                "kill",
                str(orders),
                "--venues-config",
                str(config),
                "--json",
                "--all-open",
                env=cli_env(audit_url),
            )
        assert result.code == 0, result.stderr
        venues = json.loads(result.stdout)["venues"]
        for venue, counts in venues.items():
            done = counts["canceled"] + counts["cancel_pending"]
            assert done == 150, (venue, counts)
        assert simulators["sfox"].total_requests == 3  # 150 orders in bulks of 50
        assert simulators["tanx"].total_requests == 2  # 75 a side, one request each
        assert simulators["zebpay"].total_requests == 1  # cancel-all
        assert all(simulators[v].total_requests == 150 for v in ("etna", "crux"))
        per_order = db_rows(audit_url, "select count(distinct order_pk), count(*) from attempts")
        assert per_order == [(750, 750)]
