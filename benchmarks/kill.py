"""Figure 8: the kill switch with bulk endpoints off and on, on the same books, in one run;
then the confirm pass over what the second kill left cancel_pending.

Each venue gets `kill_orders` orders (tanX rows name their market, BTCUSDT), at the demo's
limits per 1 s, all five venues at once as `kill` sends them (every lane claimed at once, three
attempts). Crux's cancels all complete later (1 % of those orders fill instead), as do a tenth
of tanX's; the rest are open. Off: one request per order. On: sFOX's bulk cancel by ids and,
as `kill --all-open` asks, ZebPay's cancel-all and tanX's bulk cancel by market and side; Crux
and Etna have no bulk endpoint. A venue's kill time runs from the start of the drain to the
last request its simulator received (its answer follows within milliseconds on loopback).
The confirm pass then polls every cancel_pending order at the venues' limits (60 s at most).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from batchcancel.audit.store import AuditStore
from batchcancel.demo import DEMO_PLAN
from batchcancel.drain_types import DrainOptions
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState
from benchmarks.common import (
    Row,
    Sizes,
    drain_run,
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
ASYNC_SHARE = {"crux": 1.0, "tanx": 0.1}  # of the venue's orders: the cancel completes later
FILL_SHARE = {"crux": 0.01}  # of the venue's orders: the pending cancel ends filled


def _books(n: int) -> tuple[dict[str, list[dict[str, str]]], dict[str, Any]]:
    """Every venue's rows, and the simulator spec that seeds them."""
    books = {venue: order_ids(venue, n) for venue in LIMITS}
    for row in books["tanx"]:
        row["symbol"] = "BTCUSDT"
    spec = sim_spec(books, {venue: (limit, PERIOD) for venue, limit in LIMITS.items()})
    for venue, share in ASYNC_SHARE.items():
        ids = spec["venues"][venue]["ids"]
        split = len(ids) - int(len(ids) * share)
        spec["venues"][venue]["ids"], spec["venues"][venue]["async_ids"] = ids[:split], ids[split:]
    for venue, share in FILL_SHARE.items():
        spec["venues"][venue]["fill_ids"] = spec["venues"][venue]["async_ids"][: int(n * share)]
    return books, spec


def _expected(spec: Mapping[str, Any]) -> Counter[str]:
    """The outcomes a first cancel of every seeded order ends with."""
    want: Counter[str] = Counter()
    for venue, seeded in spec["venues"].items():
        outcomes = SIMULATORS[venue].expected_outcomes
        want[outcomes[OrderState.OPEN].value] += len(seeded["ids"])
        want[outcomes[OrderState.OPEN_ASYNC].value] += len(seeded.get("async_ids", []))
    return want


def _kill(
    books: Mapping[str, Sequence[Mapping[str, str]]],
    spec: Mapping[str, Any],
    sim: SimProcess,
    db: Path,
    *,
    bulk: bool,
) -> tuple[dict[str, tuple[float, int]], dict[str, int]]:
    """One kill over every venue (then, with bulk on, the confirm pass). Per venue (seconds
    to its last request, requests); and the confirm pass's outcomes."""
    urls = {v: (sim.url(v), LIMITS[v], PERIOD) for v in books}
    options = DrainOptions(
        max_attempts=3, claim_all=True, bulk=bulk, all_open=bulk, handle_signals=False, seed=1
    )
    label = "on" if bulk else "off"
    store = AuditStore(f"sqlite:///{db}")
    try:
        run_id = new_run(store, planned(books))
        started = time.time()
        drain_run(store, run_id, urls, options=options)
        stats = sim.stats()
        got, want = outcome_counts(store, run_id), dict(_expected(spec))
        require(got == want, f"kill (bulk {label}): outcomes {got}, expected {want}")
        attempts = sum(1 for _ in store.attempt_rows(run_id))
        orders = sum(len(rows) for rows in books.values())
        require(
            attempts == orders, f"kill (bulk {label}): {attempts} attempt rows, {orders} orders"
        )
        confirmed: dict[str, int] = {}
        if bulk:
            confirm = DrainOptions(confirm=True, deadline=60.0, handle_signals=False, seed=1)
            drain_run(store, run_id, urls, options=confirm)
            confirmed = outcome_counts(store, run_id)
    finally:
        store.close()
    return {v: (stats[v]["last"] - started, stats[v]["requests"]) for v in books}, confirmed


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figure 8: per venue, kill time and requests with bulk endpoints off, then on; 8b: the
    confirm pass after the second."""
    n = sizes.kill_orders
    books, spec = _books(n)
    with SimProcess(spec, work) as sim:
        off, _ = _kill(books, spec, sim, work / "kill-off.db", bulk=False)
        time.sleep(1.2)  # let every simulator's window run out
        sim.reset()
        on, confirmed = _kill(books, spec, sim, work / "kill-on.db", bulk=True)
    pending = _expected(spec)["cancel_pending"]
    fills = len(spec["venues"]["crux"].get("fill_ids", []))
    want = {
        "canceled": sum(len(rows) for rows in books.values()) - fills,
        "already_closed": fills,
    }
    require(confirmed == want, f"kill: the confirm pass ended {confirmed}, expected {want}")
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
    rows.append(
        Row(
            "8b",
            f"confirm pass after the bulk-on kill: {pending:,} cancel_pending orders (Crux all, "
            f"tanX a tenth; {fills} set to fill) polled to their final state",
            ", ".join(f"{k} {v:,}" for k, v in sorted(confirmed.items())),
            numbers=dict(confirmed),
        )
    )
    return rows
