"""What every figure group shares: sizes, result rows, checks, order books, running the engine."""

from __future__ import annotations

import asyncio
import os
import platform
import random
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from batchcancel.audit.store import AuditStore, PlannedOrder
from batchcancel.config import load_settings
from batchcancel.drain_types import DrainOptions
from batchcancel.engine import DrainResult, drain
from benchmarks.memstore import MemoryStore

# Distinctive fake credentials; the simulators are given the same ones.
CREDENTIALS: Mapping[str, str] = {
    "BATCHCANCEL_SFOX_API_KEY": "bench-sfox-key",
    "BATCHCANCEL_ETNA_APP_KEY": "bench-etna-appkey",
    "BATCHCANCEL_ETNA_TOKEN": "bench-etna-token",
    "BATCHCANCEL_CRUX_TOKEN": "bench-crux-token",
    "BATCHCANCEL_TANX_JWT": "bench-tanx-jwt",
    "BATCHCANCEL_ZEBPAY_JWT": "bench-zebpay-jwt",
    "BATCHCANCEL_ZEBPAY_API_KEY": "bench-zebpay-apikey",
    "BATCHCANCEL_ZEBPAY_API_SECRET": "bench-zebpay-secret",
}
MAX_IN_FLIGHT = 32  # batchcancel's default per venue; the ceiling uses the same


@dataclass(frozen=True)
class Sizes:
    """How big each figure is; `QUICK` is for the test suite (its figures mean nothing)."""

    throughput_orders: int = 10_000  # figures 1-3c
    repeats: int = 3  # alternated runs per variant in figures 1-3c and 9; the median counts
    commits: int = 2_000  # raw SQLite commits, one row each
    pacing_seconds: int = 4  # figures 4 and 9b: orders per venue = limit x this
    tight_orders: int = 100  # figure 4b, 25 per 1 s
    startup_rows: tuple[int, int] = (10_000, 1_000_000)  # figure 5 (the second: 5b's kill)
    startup_repeats: int = 3  # figures 5 (small file) and 5c: the median counts
    five_rows: int = 10_000  # figure 5c: shuffled over five venues
    growth_rows: tuple[int, ...] = (100_000, 1_000_000, 3_000_000)  # figure 6b; the 1M: 6
    growth_base_rows: int = 1_000  # figure 6b: its dry run is the start-up cost subtracted
    peer_orders: int = 2_500  # figure 7
    peer_limit: int = 500  # figure 7, per 1 s
    kill_orders: int = 2_000  # figure 8, per venue
    pg_orders: int = 10_000  # figure 9
    worker_windows: int = 3  # figure 9c: orders per venue = limit x this
    workers: int = 4  # figure 9c
    first_request_timeout: float = 120.0  # figures 5, 6: give up waiting after this


QUICK = Sizes(
    throughput_orders=300,
    repeats=1,
    commits=100,
    pacing_seconds=2,
    tight_orders=25,
    startup_rows=(1_000, 3_000),
    startup_repeats=1,
    five_rows=500,
    growth_rows=(2_000, 4_000, 8_000),
    growth_base_rows=500,
    peer_orders=150,
    peer_limit=500,
    kill_orders=120,
    pg_orders=300,
    worker_windows=1,
    workers=2,
    first_request_timeout=60.0,
)


@dataclass
class Row:
    """One line of the results table."""

    figure: str  # "1", "4b", ...
    name: str
    value: str
    goal: str = ""
    met: bool | None = None  # None: no goal (context), or a skipped figure
    numbers: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False  # a figure with a goal that could not be measured here

    @property
    def verdict(self) -> str:
        """met / NOT met / skipped / blank."""
        if self.skipped:
            return "skipped"
        return "" if self.met is None else ("met" if self.met else "NOT met")

    @property
    def judged(self) -> bool:
        """Whether this row's goal counts in "N of M goals met"."""
        return self.met is not None and not self.skipped


def skipped(figure: str, name: str, goal: str, why: str) -> Row:
    """A figure with a goal that cannot be measured on this machine, and why."""
    return Row(figure, name, f"skipped: {why}", goal, None, skipped=True)


FAILURES: list[str] = []  # correctness failures seen while benchmarking (speed is never one)


def require(condition: bool, message: str) -> None:
    """Record `message` as a failure if `condition` is false."""
    if not condition:
        FAILURES.append(message)


def machine() -> dict[str, str]:
    """CPU count and model, Python, OS, and the library versions that matter here."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from benchmarks.pgserver import find_pg_bin

    pg_bin = find_pg_bin()
    postgres = "not installed (figures 9-9c skipped)"
    if pg_bin is not None:
        done = subprocess.run(
            [str(pg_bin / "initdb"), "--version"], capture_output=True, text=True, check=False
        )
        postgres = done.stdout.strip() or "found, version unknown"
    return {
        "CPUs": str(os.cpu_count()),
        "CPU model": model,
        "Python": f"{platform.python_version()} ({platform.python_implementation()})",
        "OS": platform.platform(),
        "aiohttp": aiohttp.__version__,
        "SQLite": sqlite3.sqlite_version,
        "PostgreSQL": postgres,
    }


def order_ids(venue: str, count: int, *, seed: int = 1) -> list[dict[str, str]]:
    """`count` valid rows for `venue` (order_id, and account_id / symbol where needed)."""
    rng = random.Random(seed)
    if venue == "crux":
        return [
            {"order_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))} for _ in range(count)
        ]
    if venue == "etna":
        return [{"order_id": str(700000 + n), "account_id": "77"} for n in range(count)]
    if venue == "zebpay":
        return [{"order_id": f"bench-{n}", "symbol": "BTCUSDT"} for n in range(count)]
    return [{"order_id": str(100000 + n)} for n in range(count)]


def planned(books: Mapping[str, Sequence[Mapping[str, str]]]) -> list[PlannedOrder]:
    """The rows of every venue as planned orders, numbered in turn."""
    result: list[PlannedOrder] = []
    for venue, rows in books.items():
        for row in rows:
            result.append(
                PlannedOrder(
                    len(result) + 1,
                    venue,
                    row["order_id"],
                    row.get("account_id", ""),
                    row.get("symbol", ""),
                )
            )
    return result


def sim_spec(
    books: Mapping[str, Sequence[Mapping[str, str]]],
    limits: Mapping[str, tuple[int | None, float]],
) -> dict[str, Any]:
    """A simulator-server spec: each venue seeded open with its rows, at (limit, period)."""
    return {
        "credentials": dict(CREDENTIALS),
        "venues": {
            venue: {
                "ids": [row["order_id"] for row in rows],
                "rate_limit": limits[venue][0],
                "period": limits[venue][1],
                "penalty": 1.0,
            }
            for venue, rows in books.items()
        },
    }


Store = AuditStore | MemoryStore


def new_run(store: Store, orders: Sequence[PlannedOrder]) -> str:
    """Record a run holding `orders`, as `start_run` would before sending."""
    if isinstance(store, MemoryStore):
        run_id = f"mem-{time.monotonic_ns()}"
        store.add_orders(run_id, orders)
        return run_id
    run_id = store.create_run(
        command="run",
        run_key=None,
        source="benchmark",
        options={},
        reason="benchmark",
        command_line="python -m benchmarks",
        dry_run=False,
    )
    store.add_orders(run_id, orders)
    store.set_totals(run_id, orders_total=len(orders), duplicates=0)
    return run_id


def drain_run(
    store: Store,
    run_id: str,
    venues: Mapping[str, tuple[str, int, float]],
    options: DrainOptions | None = None,
) -> tuple[float, DrainResult]:
    """Drain the run against `venues` (name: (base_url, rate_limit, period)); wall seconds."""
    overrides = {
        name: {
            "base_url": url,
            "rate_limit": limit,
            "period": period,
            "max_in_flight": MAX_IN_FLIGHT,
            "cooldown": 1.0,
            "backoff": 0.1,
        }
        for name, (url, limit, period) in venues.items()
    }
    settings = load_settings(CREDENTIALS, db_url="sqlite://", overrides=overrides)
    started = time.perf_counter()
    result = asyncio.run(
        drain(store, run_id, settings, options or DrainOptions(handle_signals=False, seed=1))
    )
    return time.perf_counter() - started, result


def outcome_counts(store: Store, run_id: str) -> dict[str, int]:
    """Orders per outcome over every venue ("" for none yet)."""
    total: dict[str, int] = {}
    for by_outcome in store.counts(run_id).values():
        for outcome, n in by_outcome.items():
            total[outcome] = total.get(outcome, 0) + n
    return total


def expected_outcomes(counts: Mapping[str, int]) -> dict[str, int]:
    """What `counts[venue]` orders seeded open end with, summed over venues."""
    from batchcancel.simulators import SIMULATORS
    from batchcancel.simulators.base import OrderState

    total: dict[str, int] = {}
    for venue, n in counts.items():
        outcome = SIMULATORS[venue].expected_outcomes[OrderState.OPEN].value
        total[outcome] = total.get(outcome, 0) + n
    return total


def check_once_each(stats: Mapping[str, Any], venue: str, count: int, what: str) -> None:
    """Every one of `count` orders got exactly one request at the simulator."""
    s = stats[venue]
    require(
        s["requests"] == count and s["distinct"] == count and s["max_per_key"] == 1,
        f"{what}: {venue} saw {s['requests']} requests for {s['distinct']} orders "
        f"(max {s['max_per_key']} per order), expected {count} once each",
    )


def median(values: Sequence[float]) -> float:
    """The middle value (the lower middle for an even count)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def rate(value: float) -> str:
    """A rate as a short string."""
    return f"{value:,.0f}/s"
