"""Figure 10: a kill from the venues' own books, time to flat at five venues against the time
their limits physically allow, in the same run.

Each simulator holds `limit x pacing_seconds` working orders that no input lists (the demo's
limits per 1 s; ETNA's in two accounts, ZebPay's in two symbols, a quarter of Crux's waiting on
their supplier). The kill lists every book, cancels, lists again until each is flat
(`demo --kill`'s code, no runaway). The ideal is the slowest venue's orders / limit, except that
sFOX's list route (10 per 10 s, 50 orders a list, first pages only) may be slower still.
The simulators serve from a thread of this process, as in `demo`.
"""

from __future__ import annotations

import math
from pathlib import Path

from batchcancel.demo_kill import KILL_BOOKS, run_kill_demo
from benchmarks.common import Row, Sizes, require


def _physical(venue: str, orders: int, rate: int) -> float:
    """Seconds the venue's limits allow at best: its cancels at its limit, and at sFOX its
    list route too (10 lists per 10 s, 50 orders a list, one more list for the proof)."""
    cancels = orders / rate
    if venue != "sfox":
        return cancels
    lists = math.ceil(orders / 50) + 1
    return max(cancels, max(0, lists - 10) * 1.0)


def run(sizes: Sizes, tmp: Path) -> list[Row]:
    """Figure 10 (context: the issue names no goal for it)."""
    books = {
        venue: (rate * sizes.pacing_seconds, rate) for venue, (_, rate) in KILL_BOOKS.items()
    }
    result = run_kill_demo(tmp / "books", books=books, runaway=None)
    summary_books = result.summary.books or {}
    flat = {venue: book["seconds_to_flat"] for venue, book in summary_books.items()}
    require(
        all(seconds is not None for seconds in flat.values()),
        f"figure 10: not every book ended flat: {summary_books}",
    )
    require(not any(result.still_working.values()), f"figure 10: {result.still_working}")
    ideal = max(_physical(venue, count, rate) for venue, (count, rate) in books.items())
    took = max((s for s in flat.values() if s is not None), default=float("nan"))
    per_venue = ", ".join(f"{v} {s:.2f} s" for v, s in sorted(flat.items()) if s is not None)
    return [
        Row(
            "10",
            "kill from the books: time to flat at five venues / limits' physical time",
            f"{took / ideal:.2f} ({took:.2f} s vs {ideal:.2f} s; {per_venue})",
            numbers={"seconds_to_flat": flat, "ideal_s": ideal, "orders": books},
        )
    ]
