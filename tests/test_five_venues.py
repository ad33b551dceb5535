"""All five venues at once through the real CLI: limits kept, outcomes as the books imply."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import pytest

from batchcancel.outcomes import Outcome
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState, Simulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)

# orders per venue, and the limit per 1 s both the simulator and batchcancel use
PLAN = {
    "sfox": (500, 200),
    "etna": (300, 100),
    "crux": (150, 50),
    "tanx": (250, 80),
    "zebpay": (250, 80),
}
STATES = [OrderState.OPEN] * 6 + [OrderState.OPEN_ASYNC, OrderState.FILLED, None]


def order_fields(venue: str, n: int, rng: random.Random) -> dict[str, str]:
    if venue == "crux":
        return {"order_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
    if venue == "etna":
        return {"order_id": str(500000 + n), "account_id": "77"}
    if venue == "zebpay":
        return {"order_id": f"cli-{n}", "symbol": "BTCUSDT"}
    return {"order_id": str(300000 + n)}


class TestFiveVenues:
    async def test_parallel_run_keeps_every_limit(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A few thousand orders over five venues in parallel: zero 429s, every outcome as the
        simulator's book implies, one request per order."""
        rng = random.Random(5)
        simulators: dict[str, Simulator] = {}
        expected: dict[tuple[str, str], Outcome] = {}
        rows = []
        for venue, (count, limit) in PLAN.items():
            simulator = SIMULATORS[venue](
                credentials=CREDENTIALS, rate_limit=limit, period=1.0, penalty=2.0
            )
            for n in range(count):
                fields = order_fields(venue, n, rng)
                state = rng.choice(STATES)
                if venue == "crux" and state is OrderState.FILLED:
                    state = OrderState.OPEN
                if state is not None:
                    simulator.seed({fields["order_id"]: state})
                expected[venue, fields["order_id"]] = simulator.expected_outcomes[state]
                rows.append({"venue": venue, **fields})
            simulators[venue] = simulator
        rng.shuffle(rows)
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        db = audit_url
        async with serve_simulators(simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml",
                server,
                **{v: {"rate_limit": limit, "period": 1.0} for v, (_, limit) in PLAN.items()},
            )
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        assert result.code in (0, 1), result.stderr
        summary = json.loads(result.stdout)
        for venue, simulator in simulators.items():
            print(venue, "requests", simulator.total_requests, "429s", simulator.rate_limited)
        assert {v: s.rate_limited for v, s in simulators.items()} == dict.fromkeys(PLAN, 0)
        for venue, (count, _) in PLAN.items():
            assert simulators[venue].total_requests == count
            want = {o.value: 0 for o in Outcome}
            for (v, _), outcome in expected.items():
                if v == venue:
                    want[outcome.value] += 1
            assert summary["venues"][venue] == want, venue


WRONG = {name: f"wrong-{value}" for name, value in CREDENTIALS.items()}


class TestAuthRefusal:
    @pytest.mark.parametrize("venue", list(PLAN))
    async def test_refused_venue_stops_and_others_finish(
        self, tmp_path: Path, serve_simulators: ServeSimulators, venue: str, audit_url: str
    ) -> None:
        """A venue refusing our credentials gets at most max_in_flight requests, its orders end
        `skipped`, and the other venue of the run finishes; exit 1."""
        other = "etna" if venue == "sfox" else "sfox"
        rng = random.Random(9)
        refusing = SIMULATORS[venue](credentials=WRONG, rate_limit=None)
        fine = SIMULATORS[other](credentials=CREDENTIALS, rate_limit=None)
        rows = []
        for n in range(60):
            for name, simulator in ((venue, refusing), (other, fine)):
                fields = order_fields(name, n, rng)
                simulator.seed({fields["order_id"]: OrderState.OPEN})
                rows.append({"venue": name, **fields})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        db = audit_url
        async with serve_simulators({venue: refusing, other: fine}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml",
                server,
                **{venue: {"rate_limit": 0, "max_in_flight": 4}, other: {"rate_limit": 0}},
            )
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        assert result.code == 1, result.stderr
        summary = json.loads(result.stdout)
        # A range: the requests in flight when the refusal came back (at most max_in_flight,
        # 4) reach the venue too; more would mean sending went on after the halt.
        assert 1 <= refusing.total_requests <= 4
        assert refusing.auth_refused == refusing.total_requests
        assert summary["venues"][venue]["skipped"] == 60
        assert summary["venues"][other]["canceled"] == 60
        assert fine.total_requests == 60
        reasons = {r for (r,) in db_rows(db, f"select reason from orders where venue = '{venue}'")}
        assert reasons and all(
            "refused the credentials" in r or "credentials refused" in r for r in reasons
        ), reasons
