"""Figures 6 and 6b: how the cost grows with the order list, and start-up on a big run.

6b: `run FILE --dry-run` (load, validate, plan, record every order) on sFOX CSVs of 100,000,
   1,000,000 and 3,000,000 rows, one process each, each into a fresh SQLite database: wall time
   from spawn to exit and the child's peak RSS (`ru_maxrss` from `os.wait4`). Time per row
   leaves out the start-up: the median wall time of a 1,000-row dry run is subtracted first
   (the smallest size also runs three times, the median counts). The goal compares the
   largest size's time per row with the smallest's; RSS per order is the largest run's peak
   RSS over its rows (imports included: the stricter reading), with the growth alone
   (peak minus the 1,000-row run's) beside it.
6: the 1,000,000-row run of 6b (its own goals), then, with 99 % of it made final by SQL, the
   start-up of `status RUN` (spawn to exit) and of `resume RUN` (spawn to its first request at
   the simulator, which must be for an order that is not final).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from benchmarks.cli import (
    FIRST_ID,
    Exited,
    batchcancel,
    first_arrival,
    until_exit,
    venues_toml,
    write_sfox_csv,
)
from benchmarks.common import Row, Sizes, median, require, sim_spec
from benchmarks.simserver import SimProcess

PER_ROW_GOAL = 1.2  # largest size's time per row / smallest's
RSS_GOAL = 350  # bytes per order at the largest size
STARTUP_GOAL = 1.0  # seconds, status and resume each


def dry_run(source: Path, toml: Path, db_path: Path) -> Exited:
    """One `run --dry-run` into a fresh database."""
    db_path.unlink(missing_ok=True)
    command = batchcancel(
        "run", str(source), "--venues-config", str(toml), "--db", f"sqlite:///{db_path}",
        "--dry-run",
    )  # fmt: skip
    done = until_exit(command)
    require(done.code == 0, f"growth: --dry-run of {source.name} exited {done.code}")
    return done


def _stopped_at(db_path: Path, count: int) -> str:
    """Benchmark set-up: the run in `db_path` as if stopped with 1 % of its orders left."""
    final = count * 99 // 100
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        (run_id,) = conn.execute("SELECT id FROM runs ORDER BY created_at DESC").fetchone()
        (recorded,) = conn.execute(
            "SELECT count(*) FROM orders WHERE run_id = ?", (run_id,)
        ).fetchone()
        conn.execute(
            "UPDATE orders SET state = 'done', outcome = 'canceled', attempts = 1 "
            "WHERE run_id = ? AND seq <= ?",
            (run_id, final),
        )
        conn.execute("UPDATE runs SET dry_run = 0, status = 'stopped' WHERE id = ?", (run_id,))
    require(recorded == count, f"growth: {recorded} orders recorded, expected {count}")
    return str(run_id)


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 6b and 6."""
    rows: list[Row] = []
    timeout = sizes.first_request_timeout
    with SimProcess(sim_spec({"sfox": []}, {"sfox": (None, 1.0)}), work) as sim:
        toml = venues_toml(work / "venues-scale.toml", sim, {"sfox": (0, 1.0)})
        base = write_sfox_csv(work / "growth-base.csv", sizes.growth_base_rows)
        base_runs = [dry_run(base, toml, work / "growth-base.db") for _ in range(3)]
        base_s = median([r.seconds for r in base_runs])
        base_rss = median([r.peak_rss for r in base_runs])
        middle = sizes.growth_rows[len(sizes.growth_rows) // 2]  # figure 6's run
        measured: dict[int, tuple[float, float]] = {}
        for index, count in enumerate(sizes.growth_rows):
            source = write_sfox_csv(work / f"growth-{count}.csv", count)
            db_path = work / f"growth-{count}.db"
            repeats = 3 if index == 0 else 1
            runs = [dry_run(source, toml, db_path) for _ in range(repeats)]
            measured[count] = (
                median([r.seconds for r in runs]),
                median([r.peak_rss for r in runs]),
            )
            source.unlink()
            if count != middle:
                db_path.unlink()  # the 3,000,000-row database is most of a gigabyte
        smallest, largest = sizes.growth_rows[0], sizes.growth_rows[-1]

        def per_row(count: int) -> float:
            return (measured[count][0] - base_s) / (count - sizes.growth_base_rows)

        for count, (seconds, rss) in measured.items():
            rows.append(
                Row(
                    "6b",
                    f"growth: {count:,}-row --dry-run: wall, time per row without start-up "
                    f"({base_s:.2f} s), peak RSS, RSS per order (growth alone)",
                    f"{seconds:.1f} s, {per_row(count) * 1e6:.2f} us/row, {rss / 2**20:,.0f} MB, "
                    f"{rss / count:,.0f} B/order ({(rss - base_rss) / count:,.0f})",
                    numbers={"seconds": seconds, "per_row": per_row(count), "rss": rss},
                )
            )
        growth = per_row(largest) / per_row(smallest)
        rows.append(
            Row(
                "6b",
                f"growth: time per row, {largest:,} rows / {smallest:,} rows",
                f"{growth:.2f}",
                f"<= {PER_ROW_GOAL:g}",
                growth <= PER_ROW_GOAL,
                {"ratio": growth},
            )
        )
        rss_per_order = measured[largest][1] / largest
        rows.append(
            Row(
                "6b",
                f"growth: peak RSS per order at {largest:,} rows",
                f"{rss_per_order:,.0f} B",
                f"<= {RSS_GOAL} B",
                rss_per_order <= RSS_GOAL,
                {"bytes": rss_per_order},
            )
        )
        seconds, rss = measured[middle]
        rows += _big_run(middle, seconds, rss, work / f"growth-{middle}.db", toml, sim, timeout)
    return rows


def _big_run(
    count: int,
    seconds: float,
    rss: float,
    db_path: Path,
    toml: Path,
    sim: SimProcess,
    timeout: float,
) -> list[Row]:
    """Figure 6 on the growth curve's middle run (`count` rows, recorded in `db_path`)."""
    db = f"sqlite:///{db_path}"
    run_id = _stopped_at(db_path, count)
    status = until_exit(batchcancel("status", run_id, "--db", db))
    require(
        status.code == 0 and f"orders {count}" in status.stdout,
        f"scale: status exited {status.code}: {status.stdout[:200]!r}",
    )
    resume_s = first_arrival(
        batchcancel("resume", run_id, "--venues-config", str(toml), "--db", db),
        sim,
        ["sfox"],
        timeout,
    )
    first_key = sim.stats()["sfox"]["first_key"]
    require(
        first_key is not None and int(first_key) >= FIRST_ID + count * 99 // 100,
        f"scale: resume's first request was for {first_key}, a final order",
    )
    resume_text = f"> {timeout:g} s (nothing)" if resume_s is None else f"{resume_s:.2f} s"
    return [
        Row(
            "6",
            f"{count:,}-row CSV, --dry-run: load + validate + plan (process wall time)",
            f"{seconds:.1f} s",
            "<= 15 s",
            seconds <= 15,
            {"seconds": seconds},
        ),
        Row(
            "6",
            f"{count:,}-row CSV, --dry-run: peak RSS",
            f"{rss / 2**20:,.0f} MB",
            "<= 500 MB",
            rss <= 500 * 2**20,
            {"bytes": rss},
        ),
        Row(
            "6",
            "`status RUN` on that run, 99 % final: process start to exit",
            f"{status.seconds:.2f} s",
            f"<= {STARTUP_GOAL:g} s",
            status.seconds <= STARTUP_GOAL,
            {"seconds": status.seconds},
        ),
        Row(
            "6",
            "`resume RUN` on that run, 99 % final: process start to first cancel",
            resume_text,
            f"<= {STARTUP_GOAL:g} s",
            resume_s is not None and resume_s <= STARTUP_GOAL,
            {"seconds": resume_s},
        ),
    ]
