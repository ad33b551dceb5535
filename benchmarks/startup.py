"""Figures 5 and 6: the real CLI in a subprocess, timed from just before it is spawned.

5: time from process start to the first cancel request arriving at the simulator, for a small
   and a large sFOX CSV (the process is then stopped with SIGTERM and waited for); the small
   one is the median of three runs, the large one runs once.
6: a large CSV with --dry-run: load + validate + plan time and peak RSS (measured by a tiny
   wrapper process whose only child is the CLI, via getrusage(RUSAGE_CHILDREN)); then, with
   99 % of that run made final by SQL, the start-up time of `status RUN` (until it exits) and
   of `resume RUN` (until its first request arrives at the simulator).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import CREDENTIALS, Row, Sizes, median, require, sim_spec
from benchmarks.simserver import SimProcess

_WRAPPER = """
import resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""
FIRST_ID = 100000


def cli_env() -> dict[str, str]:
    """The CLI's environment: nothing inherited from BATCHCANCEL_*, our credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
    env.update(CREDENTIALS)
    return env


def write_csv(path: Path, rows: int) -> Path:
    """An sFOX order list of `rows` rows (ids FIRST_ID, FIRST_ID + 1, ...)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write("venue,order_id\n")
        for start in range(0, rows, 100_000):
            stop = min(rows, start + 100_000)
            handle.write("".join(f"sfox,{FIRST_ID + n}\n" for n in range(start, stop)))
    return path


def first_request(args: Sequence[str], sim: SimProcess, timeout: float) -> float | None:
    """Seconds from spawning `batchcancel ARGS` to its first request at the simulator (None if
    none within `timeout`); the process is then stopped with SIGTERM and waited for."""
    sim.reset()
    command = [sys.executable, "-m", "batchcancel", *args]
    started = time.time()
    process = subprocess.Popen(
        command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    first = None
    try:
        while time.time() - started < timeout:
            first = sim.stats()["sfox"]["first"]
            if first is not None or process.poll() is not None:
                break
            time.sleep(0.01)
        first = first if first is not None else sim.stats()["sfox"]["first"]
    finally:
        _stop(process)
    return None if first is None else first - started


def until_stderr(args: Sequence[str], needle: str, timeout: float) -> float | None:
    """Seconds from spawning `batchcancel ARGS` to a stderr line holding `needle` (None if none
    within `timeout`); the process is then stopped with SIGTERM and waited for."""
    started = time.time()
    process = subprocess.Popen(
        [sys.executable, "-m", "batchcancel", *args],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = None
    assert process.stderr is not None
    try:
        # readline blocks, but the CLI either prints the line or exits (closing stderr).
        for line in process.stderr:
            if needle in line:
                seen = time.time() - started
                break
            if time.time() - started > timeout:
                break
    finally:
        _stop(process)
    return seen


def _stop(process: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGTERM (the CLI records what it sent and exits 3), then SIGKILL after 300 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def until_exit(args: Sequence[str]) -> tuple[float, int, str]:
    """Seconds from spawning `batchcancel ARGS` to its exit, its exit code and its stdout."""
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "batchcancel", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return time.time() - started, done.returncode, done.stdout


def peak_run(args: Sequence[str]) -> tuple[float, float, int]:
    """Wall seconds, peak RSS in MB and exit code of `batchcancel ARGS`."""
    done = subprocess.run(
        [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "batchcancel", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    seconds, max_rss_kb, code = done.stdout.split()
    return float(seconds), int(max_rss_kb) / 1024, int(code)


def _secs(value: float | None, timeout: float) -> str:
    return f"> {timeout:g} s (no request)" if value is None else f"{value:.2f} s"


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 5 and 6."""
    rows: list[Row] = []
    timeout = sizes.first_request_timeout
    with SimProcess(sim_spec({"sfox": []}, {"sfox": (None, 1.0)}), work) as sim:
        toml = work / "venues.toml"
        toml.write_text(f'[venues.sfox]\nbase_url = "{sim.url("sfox")}"\nrate_limit = 0\n')
        for count, goal, repeats in zip(
            sizes.startup_rows, (1.0, 2.0), (sizes.startup_repeats, 1), strict=True
        ):
            source = write_csv(work / f"orders-{count}.csv", count)
            times = []
            for repeat in range(repeats):
                db = f"sqlite:///{work / f'first-{count}-{repeat}.db'}"
                times.append(
                    first_request(
                        ["run", str(source), "--venues-config", str(toml), "--db", db],
                        sim,
                        timeout,
                    )
                )
            require(None not in times, f"first request: no request for the {count}-row CSV")
            seconds = None if None in times else median([t for t in times if t is not None])
            rows.append(
                Row(
                    "5",
                    f"process start to first cancel at the simulator, {count:,}-row CSV",
                    _secs(seconds, timeout),
                    f"<= {goal:g} s",
                    seconds is not None and seconds <= goal,
                    {"seconds": seconds},
                )
            )

        kill_db = f"sqlite:///{work / 'kill.db'}"
        # A desk's audit database exists before the emergency (a fresh one costs about 0.1 s
        # more: Alembic's import and the migrations).
        require(until_exit(["db", "upgrade", "--db", kill_db])[1] == 0, "kill: db upgrade failed")
        announced = until_stderr(
            ["kill", str(source), "--venues-config", str(toml), "--db", kill_db],
            "about to cancel",
            timeout,
        )
        require(announced is not None, "kill: no 'about to cancel' line")
        rows.append(
            Row(
                "5b",
                f"kill, {count:,}-row CSV, audit database at the newest schema: process start to "
                "its 'about to cancel' line on stderr",
                _secs(announced, timeout),
                "<= 1 s",
                announced is not None and announced <= 1,
                {"seconds": announced},
            )
        )

        count = sizes.scale_rows
        source = write_csv(work / f"scale-{count}.csv", count)
        db_path = work / "scale.db"
        db = f"sqlite:///{db_path}"
        seconds, rss_mb, code = peak_run(
            ["run", str(source), "--venues-config", str(toml), "--db", db, "--dry-run"]
        )
        require(code == 0, f"scale: --dry-run exited {code}")
        final = count * 99 // 100
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            (run_id,) = conn.execute("SELECT id FROM runs ORDER BY created_at DESC").fetchone()
            (recorded,) = conn.execute(
                "SELECT count(*) FROM orders WHERE run_id = ?", (run_id,)
            ).fetchone()
            # Benchmark set-up: a run stopped with 1 % of its orders left.
            conn.execute(
                "UPDATE orders SET state = 'done', outcome = 'canceled', attempts = 1 "
                "WHERE run_id = ? AND seq <= ?",
                (run_id, final),
            )
            conn.execute("UPDATE runs SET dry_run = 0, status = 'stopped' WHERE id = ?", (run_id,))
        require(recorded == count, f"scale: {recorded} orders recorded, expected {count}")
        rows.append(
            Row(
                "6",
                f"{count:,}-row CSV, --dry-run: load + validate + plan (process wall time)",
                f"{seconds:.1f} s",
                "<= 15 s",
                seconds <= 15,
                {"seconds": seconds},
            )
        )
        rows.append(
            Row(
                "6",
                f"{count:,}-row CSV, --dry-run: peak RSS",
                f"{rss_mb:,.0f} MB",
                "<= 500 MB",
                rss_mb <= 500,
                {"mb": rss_mb},
            )
        )
        status_s, code, out = until_exit(["status", run_id, "--db", db])
        require(
            code == 0 and f"orders {count}" in out, f"scale: status exited {code}: {out[:200]!r}"
        )
        rows.append(
            Row(
                "6",
                "`status RUN` on that run, 99 % final: process start to exit",
                f"{status_s:.2f} s",
                "<= 2 s",
                status_s <= 2,
                {"seconds": status_s},
            )
        )
        resume_s = first_request(
            ["resume", run_id, "--venues-config", str(toml), "--db", db], sim, timeout
        )
        first_key = sim.stats()["sfox"]["first_key"]
        require(
            first_key is not None and int(first_key) >= FIRST_ID + final,
            f"scale: resume's first request was for {first_key}, a final order",
        )
        rows.append(
            Row(
                "6",
                "`resume RUN` on that run, 99 % final: process start to first cancel",
                _secs(resume_s, timeout),
                "<= 2 s",
                resume_s is not None and resume_s <= 2,
                {"seconds": resume_s},
            )
        )
    return rows
