"""Issue 15's "Done when" over the real CLI and simulators: `kill --from-venues` with an input
beside the books, a runaway, sFOX's list route limit, a venue that cannot be listed, scope
filters, ETNA accounts and ZebPay symbols under HMAC, Crux draining, SIGKILL then resume, a
write-ahead record for every request, and the `--json` books keys (SPEC "The venues' own
books"). Everything is counted at the simulators, never taken from our own summary alone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections import Counter, defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from batchcancel.simulators.base import Fault, FaultPlan, OrderState, Runaway, Simulator
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.simulators.server import SimulatorServer
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    assert_audit_intact,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.test_list_open import ACCOUNT, SYMBOL, place_book, simulator

# Limits high enough that the venues' own pacing never makes a test slow (loopback).
FAST: Mapping[str, object] = {"rate_limit": 1000, "period": 1.0}
BOOKS_KEYS = {"verdict", "listed", "cancelled", "working_at_end", "seconds_to_flat"}


def venues_config(
    path: Path, server: SimulatorServer, venues: Mapping[str, Mapping[str, object]]
) -> Path:
    """Each named venue at `server` with FAST limits and its keys (ETNA's account and
    ZebPay's symbol to list by, unless a venue's keys say otherwise)."""
    tables: dict[str, dict[str, object]] = {}
    for name, keys in venues.items():
        table: dict[str, object] = dict(FAST)
        if name == "etna":
            table["accounts"] = [ACCOUNT]
        if name == "zebpay":
            table["symbols"] = [SYMBOL]
        table.update(keys)
        tables[name] = {k: v for k, v in table.items() if v is not None}
    return write_venues_toml(path, server, **tables)


def sqlite(db: Path) -> str:
    return f"sqlite:///{db}"


def unix(value: object) -> float:
    """An audit timestamp (naive UTC) as seconds since the epoch."""
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC).timestamp()


def row_of(venue: str, key: str) -> dict[str, str]:
    """An input row for order `key` as place_book placed it."""
    return {
        "venue": venue,
        "order_id": key,
        "account_id": ACCOUNT if venue == "etna" else "",
        "symbol": SYMBOL if venue == "zebpay" else "",
    }


def working(sim: Simulator) -> list[str]:
    return sim.working_keys()


async def kill(*args: str, db: Path, env: Mapping[str, str] | None = None) -> Any:
    """`batchcancel kill ARGS --json`: (exit code, summary, stderr)."""
    result = await run_cli("kill", *args, "--json", env=env or cli_env(db))
    assert result.stdout, result.stderr
    return result.code, json.loads(result.stdout), result.stderr


def list_rows(db: Path, venue: str) -> list[tuple[Any, ...]]:
    """The requests table's list rows of a venue: (pk, target, http_status, verdict, sent_at)."""
    return db_rows(
        sqlite(db),
        "SELECT pk, target, http_status, verdict, sent_at FROM requests "
        f"WHERE kind = 'list' AND venue = '{venue}' ORDER BY pk",
    )


def book_detail(db: Path, venue: str) -> str:
    return str(db_rows(sqlite(db), f"SELECT detail FROM books WHERE venue = '{venue}'")[0][0])


# -- 1. the input and the books: one set of orders ------------------------------------------


async def test_input_and_books_are_one_set_of_orders(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """Twelve working orders in each book, five of them also in the input, and four input
    orders the venue already closed (so no list shows them): 12 + 4 orders per venue, each
    order once; the book's orders cancelled exactly once each, the closed ones
    already_closed; both books flat, exit 0."""
    names = ("etna", "tanx")
    sims = {name: simulator(name) for name in names}
    book = {name: place_book(sim, name, 12) for name, sim in sims.items()}
    closed = {name: place_book(sim, name, 4, start=500) for name, sim in sims.items()}
    for name, sim in sims.items():
        for key in closed[name]:
            sim.book[key] = OrderState.CANCELED
    both = {name: book[name][:5] for name in names}
    rows = [row_of(n, k) for n in names for k in both[n] + closed[n]]
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = venues_config(tmp_path / "v.toml", server, {n: {} for n in names})
        code, summary, stderr = await kill(
            str(orders), "--from-venues", ",".join(names), "--venues-config", str(config), db=db
        )
    assert code == 0, stderr
    assert summary["orders"] == 2 * (12 + 4)
    assert summary["outcomes"]["canceled"] == 2 * 12
    assert summary["outcomes"]["already_closed"] == 2 * 4
    url = sqlite(db)
    for name, sim in sims.items():
        entry = summary["books"][name]
        assert (entry["verdict"], entry["listed"], entry["working_at_end"]) == ("flat", 12, 0)
        assert entry["cancelled"] == 12
        assert working(sim) == [], name
        # Each order of the book and of the input was sent exactly one cancel.
        assert {k: sim.requests[k] for k in book[name] + closed[name]} == dict.fromkeys(
            book[name] + closed[name], 1
        )
        assert sum(sim.requests.values()) == 16
        rows_ = db_rows(
            url,
            "SELECT order_id, seq, listed_by, outcome FROM orders "
            f"WHERE venue = '{name}' ORDER BY order_id",
        )
        assert len(rows_) == 16 == len({r[0] for r in rows_})  # one row an order
        by_id = {r[0]: r for r in rows_}
        for key in both[name]:  # in the input and listed: the input's row, listed too
            assert by_id[key][1] > 0 and by_id[key][2] is not None, by_id[key]
        for key in book[name][5:]:  # listed only: a venue order of the run
            assert by_id[key][1] == 0 and by_id[key][2] is not None, by_id[key]
        for key in closed[name]:  # in the input only: never listed, already closed
            assert by_id[key][1] > 0 and by_id[key][2] is None, by_id[key]
            assert by_id[key][3] == "already_closed"
        assert db_rows(url, f"SELECT from_input FROM books WHERE venue = '{name}'") == [(5,)]
    assert_audit_intact(url, summary["run_id"])


# -- 2. a runaway keeps placing orders during the kill ---------------------------------------


async def test_a_runaway_is_cancelled_until_flat(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """A runaway places an order every 2 ms for the first second of the kill (from the first
    request on), beside ten already in each book: the kill lists again and again until the
    runaway has stopped; every order it placed is cancelled, each book ends flat."""
    names = ("etna", "tanx")
    runaways = {
        name: Runaway(count=400, seconds=0.8, account_id=ACCOUNT if name == "etna" else "")
        for name in names
    }
    sims = {name: simulator(name, runaway=runaways[name]) for name in names}
    seeded = {name: place_book(sim, name, 10) for name, sim in sims.items()}
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = venues_config(tmp_path / "v.toml", server, {n: {} for n in names})
        code, summary, stderr = await kill(
            "--from-venues", ",".join(names), "--venues-config", str(config), db=db
        )
        running = {name: sim.runaway_running for name, sim in sims.items()}
    assert code == 0, stderr
    for name, sim in sims.items():
        placed = sim.runaway_placed
        assert not running[name] and len(placed) == 400, (name, len(placed))
        assert working(sim) == [], (name, len(working(sim)))
        assert all(sim.book[k] is OrderState.CANCELED for k in placed + seeded[name])
        assert all(sim.requests[k] == 1 for k in placed + seeded[name])
        entry = summary["books"][name]
        assert entry["verdict"] == "flat" and entry["listed"] == 410, (name, entry)
        assert len(list_rows(db, name)) >= 3  # the runaway's orders came over several lists
    listed = db_rows(sqlite(db), "SELECT count(*) FROM orders WHERE listed_by IS NOT NULL")
    assert listed == [(2 * 410,)]


# -- 7. Crux ends draining -------------------------------------------------------------------


async def test_crux_ends_draining_while_its_supplier_holds_the_cancels(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """Crux cancels go to the supplier, who settles them only after 60 s; until then the
    orders still list as working. With a 3 s deadline the book is `draining` (only cancels
    still pending at the venue remain), every order still working at the end, exit 1."""
    sim = simulator("crux", settle_after=60.0)
    keys = [sim.place(None, OrderState.OPEN_ASYNC) for _ in range(6)]
    db = tmp_path / "audit.db"
    async with serve_simulators({"crux": sim}) as server:
        config = venues_config(tmp_path / "v.toml", server, {"crux": {}})
        code, summary, stderr = await kill(
            "--from-venues", "crux", "--venues-config", str(config), "--deadline", "3", db=db
        )
    assert code == 1, stderr
    assert summary["status"] == "attention"
    entry = summary["books"]["crux"]
    assert entry["verdict"] == "draining", (entry, stderr)
    assert entry["working_at_end"] == 6 and entry["listed"] == 6
    assert entry["seconds_to_flat"] is None
    assert summary["outcomes"]["cancel_pending"] == 6
    assert sorted(working(sim)) == sorted(keys)
    assert all(sim.book[k] is OrderState.PENDING for k in keys)
    assert all(sim.requests[k] == 1 for k in keys)  # pending: not sent again
    assert "deadline" in book_detail(db, "crux")  # the reason it is not flat
