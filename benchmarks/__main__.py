"""`python -m benchmarks [--quick] [--no-write] [--only GROUPS]`: run, print, write the docs.

Prints every figure, then "N of M goals met" and the table of the figures that have a goal.
Exit code 1 if any correctness check failed (an order not sent exactly once, a wrong outcome,
a process that did not behave); speed never fails the run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import (
    books,
    common,
    kill,
    pacing,
    peers,
    postgres,
    report,
    scale,
    startup,
    throughput,
)

GROUPS = {
    "throughput": throughput,  # figures 1-3c
    "pacing": pacing,  # 4-4c
    "startup": startup,  # 5-5c
    "scale": scale,  # 6, 6b
    "peers": peers,  # 7
    "kill": kill,  # 8, 8b
    "postgres": postgres,  # 9-9c
    "books": books,  # 10
}
DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    """Run the chosen groups; print the table; write docs/benchmarks.md unless told not to."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for the test suite)")
    parser.add_argument("--no-write", action="store_true", help=f"do not write {DOCS.name}")
    parser.add_argument(
        "--only", default=",".join(GROUPS), help=f"comma-separated groups of {', '.join(GROUPS)}"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = set(chosen) - set(GROUPS)
    if unknown:
        parser.error(f"unknown group(s): {', '.join(sorted(unknown))}")
    sizes = common.QUICK if args.quick else common.Sizes()
    rows: list[common.Row] = []
    load_before = os.getloadavg()
    loads: list[str] = []  # per group: the 1-minute load average at its start and end
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="batchcancel-bench-") as tmp:
        for name in chosen:
            group_started, group_load = time.monotonic(), os.getloadavg()[0]
            print(f"benchmarks: {name} (load {group_load:.2f}) ...", file=sys.stderr, flush=True)
            rows += GROUPS[name].run(sizes, Path(tmp))
            took = time.monotonic() - group_started
            loads.append(f"{name} {group_load:.1f} \u2192 {os.getloadavg()[0]:.1f} ({took:.0f} s)")
            print(f"benchmarks: {name} took {took:.1f} s", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    load_after = os.getloadavg()
    print(report.text_table(rows))
    print(f"\n{report.goals_line(rows)}")
    print(report.goals_table(rows))
    if common.FAILURES:
        print("\nbenchmarks: correctness checks failed:", file=sys.stderr)
        for failure in common.FAILURES:
            print(f"  - {failure}", file=sys.stderr)
    if not args.no_write:
        command = "python -m benchmarks" + (" --quick" if args.quick else "")
        if set(chosen) != set(GROUPS):
            command += f" --only {','.join(chosen)}"
        DOCS.parent.mkdir(parents=True, exist_ok=True)
        DOCS.write_text(
            report.markdown(
                rows,
                machine={
                    **common.machine(),
                    "Load average (1 / 5 / 15 min) before / after": (
                        f"{_load(load_before)} / {_load(load_after)} on {os.cpu_count()} CPUs "
                        "(other work on the machine makes every figure noisier)"
                    ),
                    "Load average (1 min) at each group's start \u2192 end": ", ".join(loads),
                },
                command=command,
                seconds=seconds,
                methods=[GROUPS[name] for name in chosen],
                notes=report.kept_notes(DOCS),
            ),
            encoding="utf-8",
        )
        print(f"benchmarks: wrote {DOCS}", file=sys.stderr)
    return 1 if common.FAILURES else 0


def _load(averages: tuple[float, float, float]) -> str:
    return " ".join(f"{a:.2f}" for a in averages)


if __name__ == "__main__":
    sys.exit(main())
