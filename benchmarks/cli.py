"""Running a real command line in a subprocess and timing it from just before it is spawned.

Used for the CLI (`python -m batchcancel ...`) and for the gather peer script alike, so both are
timed the same way: from `Popen` to the first request a simulator receives, to a stderr line,
or to the exit (with the child's peak RSS from its own resource usage, `os.wait4`).
Every wait is bounded: a process that outlives its timeout is stopped with SIGTERM, then
SIGKILL.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.common import CREDENTIALS, order_ids
from benchmarks.simserver import SimProcess

FIRST_ID = 100000  # the first sFOX order id of `write_sfox_csv`
ROOT = Path(__file__).resolve().parent.parent


def cli_env() -> dict[str, str]:
    """A child's environment: nothing inherited from BATCHCANCEL_*, our credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
    env.update(CREDENTIALS)
    return env


def batchcancel(*args: str) -> list[str]:
    """The command line of `batchcancel ARGS` with this interpreter."""
    return [sys.executable, "-m", "batchcancel", *args]


def write_sfox_csv(path: Path, rows: int) -> Path:
    """An sFOX order list of `rows` rows (ids FIRST_ID, FIRST_ID + 1, ...)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write("venue,order_id\n")
        for start in range(0, rows, 100_000):
            stop = min(rows, start + 100_000)
            handle.write("".join(f"sfox,{FIRST_ID + n}\n" for n in range(start, stop)))
    return path


def write_five_csv(path: Path, counts: Mapping[str, int], *, seed: int = 7) -> Path:
    """An order list over several venues (SPEC's four columns), rows shuffled."""
    rows = [
        {"venue": venue, **row}
        for venue, count in counts.items()
        for row in order_ids(venue, count, seed=seed)
    ]
    random.Random(seed).shuffle(rows)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["venue", "order_id", "account_id", "symbol"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def venues_toml(path: Path, sim: SimProcess, limits: Mapping[str, tuple[int, float]]) -> Path:
    """A venues config pointing each venue at `sim`, at (rate_limit, period); 0 = none."""
    lines = []
    for venue, (limit, period) in limits.items():
        lines += [
            f"[venues.{venue}]",
            f'base_url = "{sim.url(venue)}"',
            f"rate_limit = {limit}",
            f"period = {period}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def stop(process: subprocess.Popen[str] | subprocess.Popen[bytes], grace: float = 300) -> None:
    """SIGTERM (the CLI records what it sent and exits 3), then SIGKILL after `grace` s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def first_arrival(
    command: Sequence[str], sim: SimProcess, venues: Sequence[str], timeout: float
) -> float | None:
    """Seconds from spawning `command` to the first request any of `venues` received at the
    simulator (None if none within `timeout`); the process is then stopped and waited for."""
    sim.reset()
    started = time.time()
    process = subprocess.Popen(
        list(command), env=cli_env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def earliest() -> float | None:
        stats = sim.stats()
        seen = [stats[v]["first"] for v in venues if stats[v]["first"] is not None]
        return min(seen, default=None)

    first = None
    try:
        while time.time() - started < timeout:
            first = earliest()
            if first is not None or process.poll() is not None:
                break
            time.sleep(0.01)
        first = first if first is not None else earliest()
    finally:
        stop(process)
    return None if first is None else first - started


@dataclass(frozen=True)
class StderrTimes:
    """When a process printed its first stderr line (and what it said), and a given line."""

    first: float | None
    first_line: str
    needle: float | None


def stderr_times(command: Sequence[str], needle: str, timeout: float) -> StderrTimes:
    """Seconds from spawning `command` to its first stderr line and to the first line holding
    `needle`; the process is then stopped with SIGTERM and waited for."""
    started = time.time()
    process = subprocess.Popen(
        list(command),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    # readline blocks: a timer stops a process that neither prints the line nor exits.
    guard = threading.Timer(timeout, lambda: stop(process, grace=10))
    guard.start()
    first: float | None = None
    first_line = ""
    found: float | None = None
    assert process.stderr is not None
    try:
        for line in process.stderr:
            now = time.time() - started
            if first is None:
                first, first_line = now, line.strip()
            if needle in line:
                found = now
                break
    finally:
        guard.cancel()
        stop(process)
        process.stderr.close()
    return StderrTimes(first, first_line, found)


@dataclass(frozen=True)
class Exited:
    """How a process ended: wall seconds from spawn, exit code, stdout, peak RSS in bytes."""

    seconds: float
    code: int
    stdout: str
    peak_rss: int


def until_exit(command: Sequence[str], timeout: float = 600) -> Exited:
    """Run `command` to its end (stderr discarded); its wall time and the child's own peak
    RSS (`ru_maxrss` of its rusage, which counts no other process)."""
    started = time.time()
    process = subprocess.Popen(
        list(command),
        env=cli_env(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    guard = threading.Timer(timeout, process.kill)
    guard.start()
    try:
        assert process.stdout is not None
        out = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.time() - started
    finally:
        guard.cancel()
        if process.stdout is not None:
            process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    return Exited(seconds, process.returncode, out, usage.ru_maxrss * 1024)
