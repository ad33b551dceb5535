"""Figures 5, 5b and 5c: the real CLI in a subprocess, timed from just before it is spawned.

5: process start to the first cancel request arriving at the simulator, for a small and a
   large sFOX CSV (the process is then stopped with SIGTERM and waited for); the small one is
   the median of three runs, the large one runs once.
5b: `kill` on the large CSV, its audit database at the newest schema (a desk's database exists
   before the emergency): process start to its first stderr line (and, context, to its "about
   to cancel" line).
5c: a shuffled order list over five venues (10,000 rows): process start to the first cancel at
   any simulator, batchcancel (`run`, audit database at the newest schema) against the gather
   peer (`benchmarks/gather_peer.py`: the csv module, aiohttp and asyncio-throttle, no audit,
   no validation) on the same file and simulators; alternated, the median of three each.
"""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.cli import FIRST_ID as FIRST_ID  # benchmarks/verify_scale.py imports these
from benchmarks.cli import (
    batchcancel,
    cli_env,
    first_arrival,
    stderr_times,
    until_exit,
    venues_toml,
    write_five_csv,
    write_sfox_csv,
)
from benchmarks.common import Row, Sizes, median, require, sim_spec
from benchmarks.gather_peer import peer_command
from benchmarks.simserver import SimProcess

FIVE = {"sfox": 200, "etna": 100, "crux": 50, "tanx": 80, "zebpay": 80}  # per 1 s, as pacing
write_csv = write_sfox_csv
__all__ = ["FIRST_ID", "cli_env", "run", "write_csv"]
PEER_GAP_GOAL = 0.35  # seconds: batchcancel's first cancel at most this after the peer's


def _secs(value: float | None, timeout: float) -> str:
    return f"> {timeout:g} s (nothing)" if value is None else f"{value:.2f} s"


def _upgraded(work: Path, name: str) -> str:
    """A SQLite audit database at the newest schema."""
    db = f"sqlite:///{work / name}"
    require(until_exit(batchcancel("db", "upgrade", "--db", db)).code == 0, "db upgrade failed")
    return db


def first_cancel(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 5 and 5b, on one unthrottled sFOX simulator."""
    rows: list[Row] = []
    timeout = sizes.first_request_timeout
    with SimProcess(sim_spec({"sfox": []}, {"sfox": (None, 1.0)}), work) as sim:
        toml = venues_toml(work / "venues-sfox.toml", sim, {"sfox": (0, 1.0)})
        source = work / "none.csv"
        for count, goal, repeats in zip(
            sizes.startup_rows, (1.0, 2.0), (sizes.startup_repeats, 1), strict=True
        ):
            source = write_sfox_csv(work / f"orders-{count}.csv", count)
            times = []
            for repeat in range(repeats):
                db = f"sqlite:///{work / f'first-{count}-{repeat}.db'}"
                command = batchcancel("run", str(source), "--venues-config", str(toml), "--db", db)
                times.append(first_arrival(command, sim, ["sfox"], timeout))
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

        count = sizes.startup_rows[1]
        kill_db = _upgraded(work, "kill.db")
        said = stderr_times(
            batchcancel("kill", str(source), "--venues-config", str(toml), "--db", kill_db),
            "about to cancel",
            timeout,
        )
        require(said.first is not None, "kill: nothing on stderr")
        require(said.needle is not None, "kill: no 'about to cancel' line")
        # The line's gist without the run id ("batchcancel: run R: about to cancel ...").
        first_words = " ".join(re.sub(r"\brun \S+: ", "", said.first_line).split()[1:5])
        rows.append(
            Row(
                "5b",
                f"kill, {count:,}-row CSV, audit database at the newest schema: process start "
                f"to its first stderr line (\u2026{first_words}\u2026; 'about to cancel' at "
                f"{_secs(said.needle, timeout)})",
                _secs(said.first, timeout),
                "<= 0.5 s",
                said.first is not None and said.first <= 0.5,
                {"seconds": said.first, "about_to_cancel": said.needle},
            )
        )
    return rows


def versus_peer(sizes: Sizes, work: Path) -> list[Row]:
    """Figure 5c: first cancel over five venues, batchcancel against the gather peer."""
    timeout = sizes.first_request_timeout
    counts = {venue: sizes.five_rows // len(FIVE) for venue in FIVE}
    source = write_five_csv(work / "five-shuffled.csv", counts)
    books: dict[str, list[dict[str, str]]] = {
        venue: [] for venue in FIVE
    }  # nothing seeded: the first request is the figure
    spec = sim_spec(books, {venue: (limit, 1.0) for venue, limit in FIVE.items()})
    times: dict[str, list[float | None]] = {"batchcancel": [], "gather": []}
    with SimProcess(spec, work) as sim:
        limits = {venue: (limit, 1.0) for venue, limit in FIVE.items()}
        toml = venues_toml(work / "venues-five.toml", sim, limits)
        db = _upgraded(work, "five-first.db")
        ours = batchcancel("run", str(source), "--venues-config", str(toml), "--db", db)
        peer = peer_command(source, {v: (sim.url(v), *limits[v]) for v in FIVE}, work)
        for _ in range(sizes.startup_repeats):
            times["batchcancel"].append(first_arrival(ours, sim, list(FIVE), timeout))
            times["gather"].append(first_arrival(peer, sim, list(FIVE), timeout))
    for name, got in times.items():
        require(None not in got, f"five-venue first cancel: {name} sent nothing")
    if any(None in got for got in times.values()):
        return [Row("5c", "five-venue first cancel", "nothing sent", f"<= +{PEER_GAP_GOAL} s")]
    bc = median([t for t in times["batchcancel"] if t is not None])
    peer_s = median([t for t in times["gather"] if t is not None])
    gap = bc - peer_s
    return [
        Row(
            "5c",
            f"first cancel at any venue, {sizes.five_rows:,} shuffled rows over five venues: "
            f"batchcancel {bc:.2f} s - gather peer {peer_s:.2f} s, both from process start",
            f"{gap:+.2f} s",
            f"<= +{PEER_GAP_GOAL} s",
            gap <= PEER_GAP_GOAL,
            {"batchcancel": bc, "gather": peer_s, "gap": gap},
        )
    ]


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 5, 5b and 5c."""
    return first_cancel(sizes, work) + versus_peer(sizes, work)
