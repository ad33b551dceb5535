"""`batchcancel demo`: the real pipeline against the five venue simulators, on loopback.

It seeds each simulator with open orders (plus some already finished and some unknown ids),
writes the order list as a CSV, runs it with the same code as `batchcancel run`, writes the
report, and checks every order's outcome against what its simulator's book implies.
"""

from __future__ import annotations

import csv
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from batchcancel.audit.store import AuditStore
from batchcancel.config import load_settings
from batchcancel.drain_types import DrainOptions
from batchcancel.outcomes import Outcome
from batchcancel.planning import Plan
from batchcancel.report import write_report
from batchcancel.session import ViewCallback, start_run
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.simulators.server import serve_in_thread
from batchcancel.sources import read_csv
from batchcancel.summary import Summary
from batchcancel.venues import VENUES

__all__ = ["DEMO_PLAN", "DemoResult", "run_demo"]


@dataclass(frozen=True, slots=True)
class VenuePlan:
    """How many orders the demo gives a venue, and the demo-sized limit both sides use."""

    orders: int
    rate_limit: int
    period: float = 1.0


# A few thousand orders; at these limits the slowest venue needs about eight seconds.
DEMO_PLAN: Final[Mapping[str, VenuePlan]] = {
    "sfox": VenuePlan(1200, 250),
    "etna": VenuePlan(800, 120),
    "crux": VenuePlan(400, 60),
    "tanx": VenuePlan(600, 100),
    "zebpay": VenuePlan(600, 100),
}
# Shares of seeded states; the rest are open. Unknown ids are in the CSV but not in the book.
_SHARES: Final = ((OrderState.OPEN_ASYNC, 0.08), (OrderState.FILLED, 0.06), (None, 0.04))


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo did and whether every outcome matched."""

    summary: Summary
    orders_csv: Path
    report_csv: Path
    db_url: str
    mismatches: list[str]


def _order_fields(venue: str, n: int, rng: random.Random) -> dict[str, str]:
    if venue == "crux":
        return {"order_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
    if venue == "etna":
        return {"order_id": str(700000 + n), "account_id": str(4000 + n % 7)}
    if venue == "zebpay":
        return {"order_id": f"demo-{n:06d}", "symbol": "BTCUSDT"}
    return {"order_id": str(900000 + n)}


def _seed_state(venue: str, rng: random.Random) -> OrderState | None:
    draw = rng.random()
    for state, share in _SHARES:
        if draw < share:
            if venue == "crux" and state is OrderState.FILLED:
                return OrderState.OPEN  # Crux answers a filled order 422: keep the demo green
            return state
        draw -= share
    return OrderState.OPEN


def run_demo(
    out_dir: Path,
    *,
    views: ViewCallback | None = None,
    on_planned: Callable[[str, Plan], None] | None = None,
    plan: Mapping[str, VenuePlan] = DEMO_PLAN,
    seed: int = 7,
) -> DemoResult:
    """Run the demo into `out_dir`; the caller prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    credentials = {
        var: f"demo-{secrets.token_hex(12)}"
        for venue in VENUES.values()
        for var in venue.credential_vars
    }
    simulators: dict[str, Simulator] = {}
    expected: dict[tuple[str, str], Outcome] = {}
    rows: list[dict[str, str]] = []
    for venue, venue_plan in plan.items():
        simulator = SIMULATORS[venue](
            credentials=credentials,
            rate_limit=venue_plan.rate_limit,
            period=venue_plan.period,
            penalty=1.0,
        )
        book: dict[str, OrderState] = {}
        for n in range(venue_plan.orders):
            fields = _order_fields(venue, n, rng)
            state = _seed_state(venue, rng)
            if state is not None:
                book[fields["order_id"]] = state
            expected[venue, fields["order_id"]] = simulator.expected_outcomes[state]
            rows.append({"venue": venue, **fields})
        simulator.seed(book)
        simulators[venue] = simulator
    rng.shuffle(rows)
    orders_csv = out_dir / "orders.csv"
    with orders_csv.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["venue", "order_id", "account_id", "symbol"])
        writer.writeheader()
        writer.writerows(rows)
    db_path = out_dir / "audit.db"
    db_url = f"sqlite:///{db_path}"
    with serve_in_thread(simulators) as server:
        overrides = {
            venue: {
                "base_url": server.url(venue),
                "rate_limit": venue_plan.rate_limit,
                "period": venue_plan.period,
                "cooldown": 1.0,
                "backoff": 0.1,
            }
            for venue, venue_plan in plan.items()
        }
        settings = load_settings(credentials, db_url=db_url, overrides=overrides)
        store = AuditStore(db_url, redact=settings.secrets)
        try:
            summary = start_run(
                store,
                settings,
                read_csv(str(orders_csv), venue=None),
                command="run",
                run_key=None,
                only_venue=None,
                options={"demo": True},
                reason="batchcancel demo against the loopback simulators",
                command_line="batchcancel demo",
                dry_run=False,
                drain_options=DrainOptions(handle_signals=True),
                views=views,
                on_planned=on_planned,
            )
            report_csv = out_dir / "report.csv"
            with report_csv.open("w", newline="", encoding="utf-8") as handle:
                write_report(store, summary.run_id, handle, fmt="csv", attempts=False)
            mismatches = _compare(store, summary.run_id, expected)
        finally:
            store.close()
    return DemoResult(summary, orders_csv, report_csv, db_url, mismatches)


def _compare(
    store: AuditStore, run_id: str, expected: Mapping[tuple[str, str], Outcome]
) -> list[str]:
    mismatches = []
    seen = 0
    for row in store.order_rows(run_id):
        seen += 1
        want = expected.get((row.venue, row.order_id))
        if want is None or row.outcome != want.value:
            mismatches.append(f"{row.venue} {row.order_id}: got {row.outcome}, expected {want}")
    if seen != len(expected):
        mismatches.append(f"{seen} orders recorded, {len(expected)} expected")
    return mismatches
