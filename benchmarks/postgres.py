"""Figures 9, 9b and 9c: the audit on PostgreSQL (a private server, `benchmarks/pgserver.py`).

9: one process, unthrottled sFOX: orders/s with the PostgreSQL AuditStore over orders/s with
   the SQLite one, alternated in the same run (a fresh database each), the median of each.
9b: five venues at their limits at once on PostgreSQL, one process, as figure 4 runs them on
   SQLite: the drain's wall time over the ideal, the earliest the slowest venue's last window
   can open, (ceil(n / limit) - 1) x period (figure 4c is the same on SQLite).
9c: several `resume` worker processes on one PostgreSQL run over five venues (period 2 s,
   `worker_windows` windows of orders per venue, planned by `run --dry-run --run-key`), as
   tests/test_workers.py runs them: each venue's achieved rate at the simulator over its
   limit, n / (last - first + period), and the 429s; the goal is judged on the worst venue.
Without initdb (or psycopg) every figure here is skipped, with a line that says so.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from batchcancel.audit.store import AuditStore
from benchmarks.cli import ROOT, batchcancel, cli_env, until_exit, write_five_csv
from benchmarks.common import (
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
from benchmarks.pacing import FIVE, ideal_seconds, paced_run
from benchmarks.pgserver import PostgresServer, running_server
from benchmarks.simserver import SimProcess

WORKER_PERIOD = 2.0
WORKER_LIMITS = {"sfox": 100, "etna": 100, "crux": 50, "tanx": 100, "zebpay": 100}  # per 2 s
THROUGHPUT_GOAL, WALL_GOAL, WORKERS_GOAL = 0.8, 1.15, 0.9

NAMES = {
    "9": "PostgreSQL audit, one process, unthrottled sfox: orders/s vs SQLite",
    "9b": "five venues on PostgreSQL, one process: drain wall / ideal",
    "9c": "PostgreSQL workers on one run, five venues: the worst venue's achieved/limit, 429s",
}
GOALS = {
    "9": f">= {THROUGHPUT_GOAL:g}",
    "9b": f"<= {WALL_GOAL:g}",
    "9c": f">= {WORKERS_GOAL:g} every venue, 0 x 429",
}


def throughput(sizes: Sizes, work: Path, server: PostgresServer) -> Row:
    """Figure 9."""
    n = sizes.pg_orders
    books = {"sfox": order_ids("sfox", n)}
    orders = planned(books)
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    with SimProcess(sim_spec(books, {"sfox": (None, 1.0)}), work) as sim:
        for repeat in range(sizes.repeats):
            for variant in times:
                if variant == "sqlite":
                    url = f"sqlite:///{work / f'pg-vs-sqlite-{repeat}.db'}"
                else:
                    url = server.database()
                store = AuditStore(url)
                try:
                    run_id = new_run(store, orders)
                    elapsed, _ = drain_run(store, run_id, {"sfox": (sim.url("sfox"), 0, 1.0)})
                    got = outcome_counts(store, run_id)
                    require(got == {"canceled": n}, f"postgres ({variant}): outcomes {got}")
                finally:
                    store.close()
                check_once_each(sim.stats(), "sfox", n, f"postgres figure 9 ({variant})")
                sim.reset()
                times[variant].append(elapsed)
    sqlite, pg = (n / median(times[k]) for k in ("sqlite", "postgresql"))
    return Row(
        "9",
        f"{NAMES['9']} ({n:,} orders: {rate(pg)} / {rate(sqlite)})",
        f"{pg / sqlite:.2f}",
        GOALS["9"],
        pg / sqlite >= THROUGHPUT_GOAL,
        {"ratio": pg / sqlite, "rate": pg, "sqlite": sqlite},
    )


def five_venues(sizes: Sizes, work: Path, server: PostgresServer) -> Row:
    """Figure 9b."""
    counts = {v: limit * sizes.pacing_seconds for v, limit in FIVE.items()}
    shares, wall = paced_run(FIVE, counts, server.database(), work)
    ideal = ideal_seconds(FIVE, counts)
    worst = min(shares, key=lambda v: shares[v][0])
    limited = sum(s[1] for s in shares.values())
    return Row(
        "9b",
        f"{NAMES['9b']} ({wall:.2f} s / {ideal:.2f} s; worst venue {worst} at "
        f"{shares[worst][0]:.3f} of its limit, {limited} x 429)",
        f"{wall / ideal:.2f}",
        GOALS["9b"],
        wall / ideal <= WALL_GOAL,
        {"wall": wall, "ideal": ideal, "ratio": wall / ideal},
    )


def workers(sizes: Sizes, work: Path, server: PostgresServer) -> Row:
    """Figure 9c."""
    counts = {v: limit * sizes.worker_windows for v, limit in WORKER_LIMITS.items()}
    books = {v: order_ids(v, n, seed=3) for v, n in counts.items()}
    spec = sim_spec(books, {v: (limit, WORKER_PERIOD) for v, limit in WORKER_LIMITS.items()})
    for venue in spec["venues"].values():
        venue["penalty"] = WORKER_PERIOD
    url = server.database()
    with SimProcess(spec, work) as sim:
        toml = work / "venues-workers.toml"
        toml.write_text(
            "".join(
                f'[venues.{v}]\nbase_url = "{sim.url(v)}"\nrate_limit = {limit}\n'
                f"period = {WORKER_PERIOD}\ncooldown = {WORKER_PERIOD}\n"
                for v, limit in WORKER_LIMITS.items()
            ),
            encoding="utf-8",
        )
        source = write_five_csv(work / "workers.csv", counts, seed=3)
        common = ["--venues-config", str(toml), "--db", url]
        planned_run = until_exit(
            batchcancel("run", str(source), "--run-key", "W", "--dry-run", *common)
        )
        require(planned_run.code == 0, f"workers: the dry run exited {planned_run.code}")
        processes = [
            subprocess.Popen(
                batchcancel("resume", "W", "--json", *common),
                env=cli_env(),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(sizes.workers)
        ]
        deadline = time.monotonic() + 300
        outputs = []
        for process in processes:
            try:
                out, _ = process.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                out, _ = process.communicate()
            outputs.append(out)
            require(process.returncode == 0, f"workers: a worker exited {process.returncode}")
        stats = sim.stats(times=True)
    try:
        outcomes = json.loads(outputs[-1])["outcomes"]
    except (ValueError, KeyError):
        outcomes = {}
    done = outcomes.get("canceled", 0) + outcomes.get("cancel_pending", 0)
    require(done == sum(counts.values()), f"workers: the last summary's outcomes {outcomes}")
    shares = {}
    for venue, limit in WORKER_LIMITS.items():
        check_once_each(stats, venue, counts[venue], "workers")
        s = stats[venue]
        span = (s["last"] - s["first"] + WORKER_PERIOD) if s["requests"] else 0.0
        shares[venue] = s["requests"] / span * WORKER_PERIOD / limit if span else 0.0
    worst = min(shares, key=lambda v: shares[v])
    limited = sum(stats[v]["rate_limited"] for v in WORKER_LIMITS)
    each = ", ".join(f"{v} {shares[v]:.2f}" for v in WORKER_LIMITS)
    return Row(
        "9c",
        f"{NAMES['9c']} ({sizes.workers} workers, {sum(counts.values()):,} orders at "
        f"{sum(WORKER_LIMITS.values())} per {WORKER_PERIOD:g} s; {each})",
        f"{shares[worst]:.3f} ({worst}), {limited} x 429",
        GOALS["9c"],
        shares[worst] >= WORKERS_GOAL and limited == 0,
        {"share": shares[worst], "rate_limited": limited, "shares": shares},
    )


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 9, 9b and 9c, or a skipped line for each."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return [skipped(f, NAMES[f], GOALS[f], "psycopg is not installed") for f in NAMES]
    with running_server() as server:
        if server is None:
            return [
                skipped(f, NAMES[f], GOALS[f], "no PostgreSQL here (initdb not found)")
                for f in NAMES
            ]
        return [
            throughput(sizes, work, server),
            five_venues(sizes, work, server),
            workers(sizes, work, server),
        ]
