"""Figures 1-3c: the loopback ceiling, batchcancel unthrottled with its audit, the audit's cost,
the hash chain's cost.

One simulator process serves a trivial handler and an unthrottled SfoxSimulator seeded with the
orders. Each repeat runs, in turn: raw aiohttp against the trivial handler (the ceiling), raw
aiohttp against the simulator (context), batchcancel with the SQLite AuditStore, with the
in-memory store, and with the SQLite AuditStore minus its chain links; the median of each
counts. Throughput is orders / wall time of one `asyncio.run` (session set-up included for every
variant).
3c: batchcancel has no switch to turn the hash chain (issue 16) off, so for that variant the
benchmark process replaces the one method that writes a link (`chain._Pending.append`:
canonical JSON of the facts, two SHA-256, the INSERT of the link row) with one that does
nothing; every audit row is still written, and the fact dicts are still built (their cost stays
in both variants). In the audited runs the same method is wrapped to sum the CPU time (the
writer thread's `thread_time`) spent writing links: its share of the whole process's CPU time
during the drain is shown beside the ratio.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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
    skipped,
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


class ChainHook:
    """The method that writes one chain link, timed or skipped (figure 3c)."""

    def __init__(self) -> None:
        from batchcancel.audit import chain

        self.owner: Any = getattr(chain, "_Pending", None)
        self.original: Callable[..., None] | None = getattr(self.owner, "append", None)
        self.cpu = 0.0  # seconds of thread CPU time spent writing links, while timed

    @property
    def found(self) -> bool:
        """Whether batchcancel still writes links through `_Pending.append`."""
        return self.original is not None

    @contextlib.contextmanager
    def timed(self) -> Iterator[None]:
        """Sum the thread CPU time of every link written inside the block."""
        original = self.original
        assert original is not None

        def append(pending: Any, *args: Any, **kwargs: Any) -> None:
            started = time.thread_time()
            try:
                original(pending, *args, **kwargs)
            finally:
                self.cpu += time.thread_time() - started

        self.owner.append = append
        try:
            yield
        finally:
            self.owner.append = original

    @contextlib.contextmanager
    def skipped(self) -> Iterator[None]:
        """Write no link inside the block (every audit row still is)."""
        original = self.original
        self.owner.append = lambda pending, *args, **kwargs: None
        try:
            yield
        finally:
            self.owner.append = original


def process_cpu() -> float:
    """CPU seconds this process has used (every thread, user and system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


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
    """Figures 1, 1b, 2, 3, 3b and 3c."""
    n = sizes.throughput_orders
    books = {"sfox": order_ids("sfox", n)}
    ids = [row["order_id"] for row in books["sfox"]]
    orders = planned(books)
    hook = ChainHook()
    variants = ["sqlite", "memory", "nochain"] if hook.found else ["sqlite", "memory"]
    times: dict[str, list[float]] = {"ceiling": [], "sim": [], "sqlite": [], "memory": []}
    times["nochain"] = []
    chain_cpu = drain_cpu = 0.0
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

            for variant in variants:
                if variant == "memory":
                    store: AuditStore | MemoryStore = MemoryStore()
                else:
                    store = AuditStore(f"sqlite:///{work / f'throughput-{variant}-{repeat}.db'}")
                run_id = new_run(store, orders)
                venues = {"sfox": (sim.url("sfox"), 0, 1.0)}
                if variant == "memory":
                    elapsed, _ = drain_run(store, run_id, venues)
                elif variant == "nochain":
                    with hook.skipped():
                        elapsed, _ = drain_run(store, run_id, venues)
                else:
                    cpu_before, links_before = process_cpu(), hook.cpu
                    with hook.timed() if hook.found else contextlib.nullcontext():
                        elapsed, _ = drain_run(store, run_id, venues)
                    drain_cpu += process_cpu() - cpu_before
                    chain_cpu += hook.cpu - links_before
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
    ceiling, vs_sim, sqlite, memory = (
        n / median(times[k]) for k in ("ceiling", "sim", "sqlite", "memory")
    )
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
            ">= 0.60",
            sqlite / ceiling >= 0.60,
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
        _chain_row(n, sqlite, times["nochain"], chain_cpu, drain_cpu),
    ]


def _chain_row(
    n: int, sqlite: float, nochain_times: list[float], chain_cpu: float, drain_cpu: float
) -> Row:
    """Figure 3c: the audit with its hash chain / the same without the chain's links
    (`chain_cpu` and `drain_cpu`: summed over every audited run, one per repeat)."""
    name = "hash chain cost (issue 16): SQLite audit with its chain / without its links"
    if not nochain_times:
        return skipped("3c", name, ">= 0.95", "batchcancel.audit.chain._Pending.append is gone")
    nochain = n / median(nochain_times)
    share = chain_cpu / drain_cpu if drain_cpu else 0.0
    per_order = chain_cpu / (n * len(nochain_times))
    return Row(
        "3c",
        f"{name} ({rate(sqlite)} / {rate(nochain)}); writing links took {share:.1%} of the "
        f"process's CPU, {per_order * 1e6:.0f} us per order",
        f"{sqlite / nochain:.2f}",
        ">= 0.95",
        sqlite / nochain >= 0.95,
        {"ratio": sqlite / nochain, "rate": nochain, "cpu_share": share},
    )
