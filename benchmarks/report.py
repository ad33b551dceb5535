"""The results table, as plain text for the terminal and as docs/benchmarks.md."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

from benchmarks.common import Row

# Everything below this line in docs/benchmarks.md is written by hand and kept across runs.
NOTES_MARKER = (
    "<!-- Hand-written notes below this line are kept when the benchmarks rewrite this file. -->"
)


def text_table(rows: Sequence[Row]) -> str:
    """Fixed-width columns, the long figure description last."""
    header = ("fig", "result", "goal", "", "figure")
    lines = [(r.figure, r.value, r.goal, r.verdict, r.name) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(4)]
    out = []
    for line in [header, *lines]:
        cells = [line[i].ljust(widths[i]) for i in range(4)]
        out.append("  ".join([*cells, line[4]]).rstrip())
    return "\n".join(out)


def goals_line(rows: Sequence[Row]) -> str:
    """ "N of M goals met" (and how many goals could not be measured here)."""
    judged = [r for r in rows if r.judged]
    line = f"{sum(1 for r in judged if r.met)} of {len(judged)} goals met"
    skipped = sum(1 for r in rows if r.skipped)
    return line + (f" ({skipped} skipped: not measurable on this machine)" if skipped else "")


def goals_table(rows: Sequence[Row]) -> str:
    """Every row with a goal: figure, value, goal, met, and the start of its description."""
    header = ("fig", "value", "goal", "met", "figure")
    lines = [(r.figure, r.value, r.goal, r.verdict, _short(r.name)) for r in rows if r.goal]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(5)]
    return "\n".join(
        "  ".join(line[i].ljust(widths[i]) for i in range(5)).rstrip() for line in [header, *lines]
    )


def _short(name: str, width: int = 60) -> str:
    return name if len(name) <= width else name[: width - 1].rstrip() + "\u2026"


def markdown(
    rows: Sequence[Row],
    *,
    machine: Mapping[str, str],
    command: str,
    seconds: float,
    methods: Sequence[ModuleType],
    notes: str,
) -> str:
    """The whole of docs/benchmarks.md."""
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {when}, in {seconds:.0f} s. Every simulator runs in its "
        "own process on 127.0.0.1, so client and server never share a GIL; ratios compare "
        "figures measured in the same run (absolute rates on a shared machine are noisy). "
        f"**{goals_line(rows)}.**",
        "",
        "To refresh: `python -m benchmarks` (all figures; it rewrites everything above the "
        "hand-written notes and keeps them), `python -m benchmarks --only GROUP[,GROUP]` "
        "for some groups (throughput, pacing, startup, scale, peers, kill, postgres: the "
        'modules under "How each figure is measured"; the docs then show only those), '
        "`--no-write` to print only, `--quick` for tiny sizes whose figures mean nothing "
        "(the test suite's).",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine.items()),
        "",
        "## Results",
        "",
        "| # | figure | result | goal | |",
        "|---|---|---|---|---|",
        *(
            f"| {r.figure} | {r.name.replace('|', '/')} | {r.value} | {r.goal} | {r.verdict} |"
            for r in rows
        ),
        "",
        "## How each figure is measured",
        "",
    ]
    for module in methods:
        name = module.__name__.rsplit(".", 1)[-1]
        parts += [f"`benchmarks/{name}.py`:", "", (module.__doc__ or "").strip(), ""]
    parts += [NOTES_MARKER, "", notes.strip("\n"), ""]
    return "\n".join(parts)


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing docs/benchmarks.md."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    _, found, notes = text.partition(NOTES_MARKER)
    return notes if found else ""
