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
    met = sum(1 for r in rows if r.met)
    goals = sum(1 for r in rows if r.met is not None)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Benchmarks",
        "",
        f"Written by `{command}` on {when}, in {seconds:.0f} s. Every simulator runs in its "
        "own process on 127.0.0.1, so client and server never share a GIL; ratios compare "
        "figures measured in the same run (absolute rates on a shared machine are noisy). "
        f"{met} of {goals} goals met.",
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
