"""Figure 8: the kill switch with bulk endpoints off and on, on the same books, in one run.

Each venue gets `kill_orders` open orders (tanX rows name their market, BTCUSDT), at the demo's
limits per 1 s, all five venues at once as `kill` sends them (every lane claimed at once, three
attempts). Off: one request per order. On: sFOX's bulk cancel by ids and, as `kill --all-open`
asks, ZebPay's cancel-all and tanX's bulk cancel by market and side; Crux and Etna have no bulk
endpoint. A venue's kill time runs from the start of the drain to the last request its
simulator received (its answer follows within milliseconds on loopback).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from batchcancel.audit.store import AuditStore
from batchcancel.demo import DEMO_PLAN
from batchcancel.engine import DrainOptions
from benchmarks.common import (
    Row,
    Sizes,
    drain_run,
    expected_outcomes,
    new_run,
    order_ids,
    outcome_counts,
    planned,
    require,
    sim_spec,
)
from benchmarks.simserver import SimProcess

LIMITS = {venue: plan.rate_limit for venue, plan in DEMO_PLAN.items()}  # per 1 s
PERIOD = 1.0


def _kill(
    books: Mapping[str, Sequence[Mapping[str, str]]], sim: SimProcess, db: Path, *, bulk: bool
) -> dict[str, tuple[float, int]]:
    """One kill over every venue; per venue (seconds to its last request, requests)."""
    options = DrainOptions(
        max_attempts=3, claim_all=True, bulk=bulk, all_open=bulk, handle_signals=False, seed=1
    )
    store = AuditStore(f"sqlite:///{db}")
    try:
        run_id = new_run(store, planned(books))
        started = time.time()
        drain_run(
            store, run_id, {v: (sim.url(v), LIMITS[v], PERIOD) for v in books}, options=options
        )
        label = "on" if bulk else "off"
        counts = {venue: len(rows) for venue, rows in books.items()}
        got, want = outcome_counts(store, run_id), expected_outcomes(counts)
        require(got == want, f"kill (bulk {label}): outcomes {got}, expected {want}")
        attempts = sum(1 for _ in store.attempt_rows(run_id))
        require(
            attempts == sum(counts.values()),
            f"kill (bulk {label}): {attempts} attempt rows for {sum(counts.values())} orders",
        )
    finally:
        store.close()
    stats = sim.stats()
    return {v: (stats[v]["last"] - started, stats[v]["requests"]) for v in books}


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figure 8: per venue, kill time and requests with bulk endpoints off, then on."""
    n = sizes.kill_orders
    books = {venue: order_ids(venue, n) for venue in LIMITS}
    for row in books["tanx"]:
        row["symbol"] = "BTCUSDT"
    spec = sim_spec(books, {venue: (limit, PERIOD) for venue, limit in LIMITS.items()})
    with SimProcess(spec, work) as sim:
        off = _kill(books, sim, work / "kill-off.db", bulk=False)
        time.sleep(1.2)  # let every simulator's window run out
        sim.reset()
        on = _kill(books, sim, work / "kill-on.db", bulk=True)
    rows = []
    for venue, limit in LIMITS.items():
        (off_s, off_n), (on_s, on_n) = off[venue], on[venue]
        rows.append(
            Row(
                "8",
                f"kill, {n:,} orders per venue, five venues at once: {venue} at {limit}/1 s, "
                "bulk endpoints off / on (with --all-open)",
                f"{off_s:.1f} s, {off_n:,} requests / {on_s:.1f} s, {on_n:,} requests",
                numbers={"off_s": off_s, "off_requests": off_n, "on_s": on_s, "on_requests": on_n},
            )
        )
    slowest_off, slowest_on = max(s for s, _ in off.values()), max(s for s, _ in on.values())
    rows.append(
        Row(
            "8",
            "kill, whole book: time to the last request at any venue, bulk off / on",
            f"{slowest_off:.1f} s / {slowest_on:.1f} s",
            numbers={"off_s": slowest_off, "on_s": slowest_on},
        )
    )
    return rows
