"""Figure 7: batchcancel against two naive peers on the same book, simulator and limit.

- naive: one aiohttp request after another (spaced 1/limit apart when there is a limit).
- gather: `asyncio.gather` over every order, each through an asyncio-throttle Throttler
  (limit per 1 s; unthrottled = a limit as large as the book), default aiohttp session.

Neither peer audits anything; both retry a 429 after its Retry-After, or after 1 s (at most
MAX_ATTEMPTS times per order).
batchcancel runs with its SQLite audit at the same limit. Throughput = orders / wall time; at
a limit the last window is not waited out, so n orders take about (n / limit - 1) periods and
orders/s can exceed the limit.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
from asyncio_throttle.throttler import Throttler

from batchcancel.audit.store import AuditStore
from benchmarks.common import (
    CREDENTIALS,
    Row,
    Sizes,
    drain_run,
    new_run,
    order_ids,
    outcome_counts,
    planned,
    rate,
    require,
    sim_spec,
)
from benchmarks.simserver import SimProcess

HEADERS = {"Authorization": f"Bearer {CREDENTIALS['BATCHCANCEL_SFOX_API_KEY']}"}
MAX_ATTEMPTS = 20  # per order; a peer that still draws 429s after this gives the order up
# batchcancel / gather: at least even while auditing unthrottled, well ahead at a limit
UNTHROTTLED_GOAL, LIMIT_GOAL = 1.0, 1.5


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return float(response.headers.get("Retry-After", "1"))
    except ValueError:
        return 1.0


async def naive(base_url: str, ids: list[str], limit: int | None) -> None:
    """One request after another."""
    interval = 1.0 / limit if limit else 0.0
    next_at = time.monotonic()
    async with aiohttp.ClientSession() as session:
        for order_id in ids:
            for _ in range(MAX_ATTEMPTS):
                if interval:
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                    next_at = max(next_at, time.monotonic()) + interval
                async with session.delete(f"{base_url}/v1/orders/{order_id}", headers=HEADERS) as r:
                    await r.read()
                if r.status != 429:
                    break
                await asyncio.sleep(_retry_after(r))


async def gather(base_url: str, ids: list[str], limit: int | None) -> None:
    """Every order at once through a Throttler."""
    throttler = Throttler(rate_limit=limit or len(ids), period=1.0)
    async with aiohttp.ClientSession() as session:

        async def cancel(order_id: str) -> None:
            for _ in range(MAX_ATTEMPTS):
                async with throttler:
                    url = f"{base_url}/v1/orders/{order_id}"
                    async with session.delete(url, headers=HEADERS) as r:
                        await r.read()
                if r.status != 429:
                    return
                await asyncio.sleep(_retry_after(r))

        await asyncio.gather(*(cancel(order_id) for order_id in ids))


def run(sizes: Sizes, work: Path) -> list[Row]:
    """Figure 7, unthrottled and at `sizes.peer_limit` per 1 s."""
    n = sizes.peer_orders
    books = {"sfox": order_ids("sfox", n)}
    ids = [row["order_id"] for row in books["sfox"]]
    rows = []
    for limit in (None, sizes.peer_limit):
        label = f"{limit}/1 s" if limit else "unthrottled"
        rates: dict[str, float] = {}
        limited: dict[str, int] = {}
        with SimProcess(sim_spec(books, {"sfox": (limit, 1.0)}), work) as sim:
            for name in ("naive", "gather", "batchcancel"):
                if limit:
                    time.sleep(1.2)  # let the simulator's window and penalty run out
                sim.reset()
                started = time.perf_counter()
                if name == "batchcancel":
                    store = AuditStore(f"sqlite:///{work / f'peers-{limit}.db'}")
                    run_id = new_run(store, planned(books))
                    started = time.perf_counter()
                    drain_run(store, run_id, {"sfox": (sim.url("sfox"), limit or 0, 1.0)})
                    elapsed = time.perf_counter() - started
                    got = outcome_counts(store, run_id)
                    require(got == {"canceled": n}, f"peers ({label}): batchcancel ended {got}")
                    store.close()
                else:
                    script = naive if name == "naive" else gather
                    asyncio.run(script(sim.url("sfox"), ids, limit))
                    elapsed = time.perf_counter() - started
                s = sim.stats()["sfox"]
                require(
                    s["distinct"] == n and s["requests"] - s["rate_limited"] == n,
                    f"peers ({label}): {name} sent {s['requests']} requests "
                    f"({s['rate_limited']} x 429) for {s['distinct']} of {n} orders",
                )
                rates[name] = n / elapsed
                limited[name] = s["rate_limited"]
        bc = rates["batchcancel"]
        gather_goal = LIMIT_GOAL if limit else UNTHROTTLED_GOAL
        for peer, goal in (("naive", None), ("gather", gather_goal)):
            ratio = bc / rates[peer]
            what = "naive sequential loop" if peer == "naive" else "asyncio.gather + Throttler"
            rows.append(
                Row(
                    "7",
                    f"peers, sfox {label}, {n:,} orders: batchcancel (SQLite audit, "
                    f"{rate(bc)}, {limited['batchcancel']} x 429) / {what} "
                    f"({rate(rates[peer])}, {limited[peer]} x 429)",
                    f"{ratio:.2f}",
                    "" if goal is None else f">= {goal:g}",
                    None if goal is None else ratio >= goal,
                    {"ratio": ratio, "rate": rates[peer], "batchcancel": bc},
                )
            )
    return rows
