"""Figures 1-3: the loopback ceiling, batchcancel unthrottled with its audit, the audit's cost.

One simulator process serves a trivial handler and an unthrottled SfoxSimulator seeded with the
orders. Each repeat runs, in turn: raw aiohttp against the trivial handler (the ceiling), raw
aiohttp against the simulator (context), batchcancel with the SQLite AuditStore, and batchcancel
with the in-memory store; the median of each counts. Throughput is orders / wall time of one
`asyncio.run` (session set-up included for every variant).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from batchcancel.audit.store import AuditStore
from batchcancel.transport import open_session
from benchmarks.common import (
    CREDENTIALS,
    MAX_IN_FLIGHT,
    Row,
    Sizes,
    check_once_each,
    drain_run,
    median,
    new_run,
    order_ids,
    outcome_counts,
    planned,
    rate,
    require,
    sim_spec,
)
from benchmarks.memstore import MemoryStore
from benchmarks.simserver import SimProcess

HEADERS = {"Authorization": f"Bearer {CREDENTIALS['BATCHCANCEL_SFOX_API_KEY']}"}


async def _raw(base_url: str, ids: list[str]) -> None:
    """DELETE each id with MAX_IN_FLIGHT workers on one batchcancel-configured session."""
    pending = iter(ids)
    async with open_session(max_connections=MAX_IN_FLIGHT) as session:

        async def worker() -> None:
            for order_id in pending:
                async with session.delete(f"{base_url}/v1/orders/{order_id}", headers=HEADERS) as r:
                    await r.read()

        await asyncio.gather(*(worker() for _ in range(MAX_IN_FLIGHT)))


def raw_requests(base_url: str, ids: list[str]) -> float:
    """Wall seconds to send every id as fast as the client allows."""
    started = time.perf_counter()
    asyncio.run(_raw(base_url, ids))
    return time.perf_counter() - started


def sqlite_commits(path: Path, commits: int) -> tuple[float, float]:
    """Commits/s with one row each, and rows/s with 1,000 rows per commit (WAL, FULL)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a TEXT, b TEXT)")
    row = ("x" * 20, "y" * 40)
    started = time.perf_counter()
    for _ in range(commits):
        conn.execute("BEGIN")
        conn.execute("INSERT INTO t (a, b) VALUES (?, ?)", row)
        conn.execute("COMMIT")
    one_each = commits / (time.perf_counter() - started)
    groups = max(commits // 20, 5)
    started = time.perf_counter()
    for _ in range(groups):
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (a, b) VALUES (?, ?)", [row] * 1000)
        conn.execute("COMMIT")
    grouped = groups * 1000 / (time.perf_counter() - started)
    conn.close()
    return one_each, grouped


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 1, 2 and 3."""
    n = sizes.throughput_orders
    books = {"sfox": order_ids("sfox", n)}
    ids = [row["order_id"] for row in books["sfox"]]
    orders = planned(books)
    times: dict[str, list[float]] = {"ceiling": [], "sim": [], "sqlite": [], "memory": []}
    with SimProcess(sim_spec(books, {"sfox": (None, 1.0)}), work) as sim:
        for target in ("trivial", "sfox"):  # warm both processes up
            raw_requests(sim.url(target), ids[:500])
        sim.reset()
        for repeat in range(sizes.repeats):
            times["ceiling"].append(raw_requests(sim.url("trivial"), ids))
            got = sim.stats()["trivial"]["requests"]
            require(got == n, f"ceiling: the trivial handler saw {got} requests, expected {n}")
            sim.reset()

            times["sim"].append(raw_requests(sim.url("sfox"), ids))
            check_once_each(sim.stats(), "sfox", n, "raw client vs simulator")
            sim.reset()

            for variant in ("sqlite", "memory"):
                if variant == "sqlite":
                    store: AuditStore | MemoryStore = AuditStore(
                        f"sqlite:///{work / f'throughput-{repeat}.db'}"
                    )
                else:
                    store = MemoryStore()
                run_id = new_run(store, orders)
                elapsed, _ = drain_run(store, run_id, {"sfox": (sim.url("sfox"), 0, 1.0)})
                times[variant].append(elapsed)
                counts = outcome_counts(store, run_id)
                require(
                    counts == {"canceled": n},
                    f"batchcancel ({variant} store): outcomes {counts}, expected {n} canceled",
                )
                check_once_each(sim.stats(), "sfox", n, f"batchcancel ({variant} store)")
                sim.reset()
                if isinstance(store, AuditStore):
                    store.close()
    ceiling, vs_sim, sqlite, memory = (n / median(times[k]) for k in times)
    one_each, grouped = sqlite_commits(work / "commits.db", sizes.commits)
    return [
        Row(
            "1",
            f"ceiling: raw aiohttp, {MAX_IN_FLIGHT} in flight, trivial loopback handler",
            rate(ceiling),
            numbers={"rate": ceiling},
        ),
        Row(
            "1b",
            "context: the same raw client against the unthrottled SfoxSimulator",
            f"{rate(vs_sim)} ({vs_sim / ceiling:.2f} x ceiling)",
            numbers={"rate": vs_sim},
        ),
        Row(
            "2",
            f"batchcancel, unthrottled sfox, SQLite audit ({n:,} orders): ratio to ceiling",
            f"{sqlite / ceiling:.2f} ({rate(sqlite)})",
            ">= 0.5",
            sqlite / ceiling >= 0.5,
            {"rate": sqlite, "ratio": sqlite / ceiling},
        ),
        Row(
            "3",
            f"audit cost: SQLite AuditStore / in-memory store ({rate(sqlite)} / {rate(memory)})",
            f"{sqlite / memory:.2f}",
            ">= 0.95",
            sqlite / memory >= 0.95,
            {"rate": memory, "ratio": sqlite / memory},
        ),
        Row(
            "3b",
            "context: raw SQLite, WAL, synchronous=FULL: one row per commit / 1,000 per commit",
            f"{one_each:,.0f} commits/s / {grouped:,.0f} rows/s",
            numbers={"commits": one_each, "grouped_rows": grouped},
        ),
    ]
