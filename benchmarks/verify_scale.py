"""`verify` at scale: `python -m benchmarks.verify_scale build|measure DB [N]`.

build: a real run of N sFOX orders (default 1,000,000) through the CLI against the unthrottled
simulator (in its own process), recorded in DB (an SQLAlchemy URL): every order loaded, sent,
answered, the run sealed. It prints the run id. measure: `verify RUN`, `export RUN` and
`verify --file` of that run, each in a subprocess under /usr/bin/time -v: wall time and peak
RSS. Not part of `python -m benchmarks` (building the run takes minutes); figures go to
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import sim_spec
from benchmarks.simserver import SimProcess
from benchmarks.startup import FIRST_ID, cli_env, write_csv

BUILD_TIMEOUT = 3600.0  # a million orders at ~4,000/s take about four minutes
MEASURE_TIMEOUT = 600.0


def build(db: str, count: int, work: Path) -> str:
    """Record a finished run of `count` orders in `db`; its id."""
    source = write_csv(work / f"verify-{count}.csv", count)
    books = {"sfox": [{"order_id": str(FIRST_ID + n)} for n in range(count)]}
    with SimProcess(sim_spec(books, {"sfox": (None, 1.0)}), work) as sim:
        toml = work / "venues.toml"
        toml.write_text(f'[venues.sfox]\nbase_url = "{sim.url("sfox")}"\nrate_limit = 0\n')
        done = subprocess.run(
            [sys.executable, "-m", "batchcancel", "run", str(source), "--venues-config",
             str(toml), "--db", db, "--json"],
            env=cli_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"the run exited {done.returncode}: {done.stderr[-2000:]}")
    return str(json.loads(done.stdout)["run_id"])


def timed(args: list[str]) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in MB, exit code, last stdout line) of `batchcancel ARGS`."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-m", "batchcancel", *args],
        env=cli_env(), capture_output=True, text=True, timeout=MEASURE_TIMEOUT, check=False,
    )  # fmt: skip
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", done.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    assert wall and rss, done.stderr[-2000:]
    hours, minutes, seconds = wall.groups()
    total = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    lines = done.stdout.strip().splitlines() or [""]
    return total, int(rss.group(1)) / 1024, done.returncode, lines[-1][:120]


def measure(db: str, run_id: str, work: Path) -> None:
    export = work / "run.jsonl"
    for name, args in (
        ("verify RUN", ["verify", run_id, "--db", db]),
        ("export RUN", ["export", run_id, "-o", str(export), "--db", db]),
        ("verify --file", ["verify", "--file", str(export)]),
        ("verify RUN --against", ["verify", run_id, "--against", str(export), "--db", db]),
    ):
        seconds, mb, code, line = timed(args)
        print(f"{name:22} {seconds:6.1f} s  {mb:7,.0f} MB  exit {code}  {line}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("build", "measure"):
        print(__doc__, file=sys.stderr)
        return 2
    db = argv[1]
    with tempfile.TemporaryDirectory(prefix="batchcancel-verify-") as tmp:
        if argv[0] == "build":
            print(build(db, int(argv[2]) if len(argv) > 2 else 1_000_000, Path(tmp)))
        else:
            measure(db, argv[2], Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
