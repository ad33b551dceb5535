"""Figure 4: five venues at their limits at once, and one venue at a tight limit.

Simulators and batchcancel use the same demo-sized limits (period 1 s); each venue gets
`limit x pacing_seconds` orders. Achieved rate counts whole windows at the simulator:
n / (last arrival - first arrival + period). 429s are counted by the simulators. The slot
cycle is the median time from request i to request i + limit at the simulator: the period,
plus batchcancel's 1 % margin, plus what its window counts beyond the period (the time from a
slot's grant to its answer). The goal is judged on the worst venue.
The tight limit is 25 per 1 s (sFOX's real 250 per 10 s would take minutes for the same
number of windows).
4c (context for 9b): the same five-venue run's wall time (one `asyncio.run` of the drain:
session start, lane claims, every request, the last commit) over the ideal, the earliest the
slowest venue's last window can open: (ceil(n / limit) - 1) x period.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from batchcancel.audit.store import AuditStore
from benchmarks.common import (
    Row,
    Sizes,
    check_once_each,
    drain_run,
    expected_outcomes,
    median,
    new_run,
    order_ids,
    outcome_counts,
    planned,
    require,
    sim_spec,
)
from benchmarks.simserver import SimProcess

FIVE = {"sfox": 200, "etna": 100, "crux": 50, "tanx": 80, "zebpay": 80}  # per 1 s
TIGHT = {"sfox": 25}
PERIOD = 1.0


def ideal_seconds(limits: Mapping[str, int], counts: Mapping[str, int]) -> float:
    """The earliest the slowest venue's last window can open."""
    return max((-(-counts[v] // limit) - 1) * PERIOD for v, limit in limits.items())


def paced_run(
    limits: Mapping[str, int], counts: Mapping[str, int], db_url: str, work: Path
) -> tuple[dict[str, tuple[float, int, float]], float]:
    """Run every venue at once at its limit; per venue (achieved / limit, 429s, median slot
    cycle in seconds), and the drain's wall seconds."""
    books = {venue: order_ids(venue, counts[venue]) for venue in limits}
    spec = sim_spec(books, {venue: (limit, PERIOD) for venue, limit in limits.items()})
    result = {}
    with SimProcess(spec, work) as sim:
        store = AuditStore(db_url)
        try:
            run_id = new_run(store, planned(books))
            wall, _ = drain_run(
                store, run_id, {v: (sim.url(v), limit, PERIOD) for v, limit in limits.items()}
            )
            got, want = outcome_counts(store, run_id), expected_outcomes(counts)
            require(got == want, f"pacing: outcomes {got}, expected {want}")
        finally:
            store.close()
        stats = sim.stats(times=True)
    for venue, limit in limits.items():
        s = stats[venue]
        check_once_each(stats, venue, counts[venue], "pacing")
        achieved = s["requests"] / (s["last"] - s["first"] + PERIOD) if s["requests"] else 0.0
        times = s["times"]
        # How long one slot takes to come round: arrival of request i to that of i + limit.
        cycle = median([times[i + limit] - times[i] for i in range(len(times) - limit)] or [0.0])
        result[venue] = (achieved / limit, s["rate_limited"], cycle)
    return result, wall


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figures 4 (five venues), 4b (a tight limit) and 4c (the five-venue wall time)."""
    counts = {v: limit * sizes.pacing_seconds for v, limit in FIVE.items()}
    five, wall = paced_run(FIVE, counts, f"sqlite:///{work / 'five.db'}", work)
    tight, _ = paced_run(
        TIGHT, {"sfox": sizes.tight_orders}, f"sqlite:///{work / 'tight.db'}", work
    )
    rows = []
    for venue, limit in FIVE.items():
        share, limited, cycle = five[venue]
        rows.append(
            Row(
                "4",
                f"pacing, five venues at once: {venue} at {limit}/1 s "
                f"({counts[venue]} orders): achieved/limit, 429s",
                f"{share:.3f}, {limited} x 429{_cycle(cycle)}",
                numbers={"share": share, "rate_limited": limited, "cycle": cycle},
            )
        )
    worst = min(FIVE, key=lambda v: five[v][0])
    limited_all = sum(five[v][1] for v in FIVE)
    rows.append(
        Row(
            "4",
            f"pacing, five venues at once: the worst venue ({worst}): achieved/limit; "
            "429s at all five",
            f"{five[worst][0]:.3f}, {limited_all} x 429",
            ">= 0.97 every venue, 0 x 429",
            five[worst][0] >= 0.97 and limited_all == 0,
            {"share": five[worst][0], "rate_limited": limited_all},
        )
    )
    share, limited, cycle = tight["sfox"]
    rows.append(
        Row(
            "4b",
            f"pacing, tight limit: sfox at 25/1 s ({sizes.tight_orders} orders; stands in for "
            "250/10 s): achieved/limit, 429s",
            f"{share:.3f}, {limited} x 429{_cycle(cycle)}",
            ">= 0.95, 0 x 429",
            share >= 0.95 and limited == 0,
            {"share": share, "rate_limited": limited, "cycle": cycle},
        )
    )
    ideal = ideal_seconds(FIVE, counts)
    rows.append(
        Row(
            "4c",
            f"five venues on SQLite, one process: drain wall / ideal ({wall:.2f} s / "
            f"{ideal:.2f} s)",
            f"{wall / ideal:.2f}",
            numbers={"wall": wall, "ideal": ideal, "ratio": wall / ideal},
        )
    )
    return rows


def _cycle(seconds: float) -> str:
    return f" (slot cycle {seconds:.3f} s)" if seconds else ""
