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
)
from tests.test_list_open import ACCOUNT, SYMBOL, place_book, simulator

# Limits high enough that the venues' own pacing never makes a test slow (loopback).
FAST: Mapping[str, object] = {"rate_limit": 1000, "period": 1.0}
BOOKS_KEYS = {"verdict", "listed", "cancelled", "working_at_end", "seconds_to_flat"}


def venues_config(
    path: Path, server: SimulatorServer, venues: Mapping[str, Mapping[str, object]]
) -> Path:
    """Each named venue at `server` (unless its keys give another base_url) with FAST limits
    and its keys (ETNA's account and ZebPay's symbol to list by, unless its keys say
    otherwise; a key set to None is left out)."""
    lines = []
    for name, keys in venues.items():
        table: dict[str, object] = {"base_url": server.url(name), **FAST}
        if name == "etna":
            table["accounts"] = [ACCOUNT]
        if name == "zebpay":
            table["symbols"] = [SYMBOL]
        table.update(keys)
        lines.append(f"[venues.{name}]")
        lines.extend(
            f"{key} = {json.dumps(value)}" for key, value in table.items() if value is not None
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sqlite(db: Path) -> str:
    return f"sqlite:///{db}"


def unix(value: object) -> float:
    """An audit timestamp (naive UTC) as seconds since the epoch."""
    stamp = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return stamp.replace(tzinfo=UTC).timestamp()


def row_of(venue: str, key: str) -> Mapping[str, str]:
    """An input row for order `key` as place_book placed it."""
    return {
        "venue": venue,
        "order_id": key,
        "account_id": ACCOUNT if venue == "etna" else "",
        "symbol": SYMBOL if venue == "zebpay" else "",
    }


def working(sim: Simulator) -> list[str]:
    return sim.working_keys()


def cancels(sim: Simulator, key: str) -> int:
    """Cancel requests that named order `key`: single, or in a bulk request (sFOX's ids)."""
    return sim.requests[key] + sim.bulk_ids[key]


async def kill(*args: str, db: Path, env: Mapping[str, str] | None = None) -> Any:
    """`batchcancel kill ARGS --json`: (exit code, summary, stderr)."""
    result = await run_cli("kill", *args, "--json", env=env or cli_env(db))
    assert result.stdout, result.stderr
    return result.code, json.loads(result.stdout), result.stderr


def assert_books_shape(summary: Mapping[str, Any]) -> None:
    """SPEC's `--json` summary of a --from-venues run: its keys, and per venue exactly
    verdict, listed, cancelled, working_at_end and seconds_to_flat, of their types."""
    assert set(summary) == {
        "run_id", "run_key", "status", "orders", "outcomes", "venues", "elapsed_s", "digest",
        "books",
    }  # fmt: skip
    for venue, entry in summary["books"].items():
        assert set(entry) == BOOKS_KEYS, venue
        assert entry["verdict"] in ("flat", "draining", "not_flat"), venue
        for key in ("listed", "cancelled", "working_at_end"):
            assert type(entry[key]) is int and entry[key] >= 0, (venue, key)
        seconds = entry["seconds_to_flat"]
        assert (seconds is None) == (entry["verdict"] != "flat"), (venue, entry)
        assert seconds is None or (type(seconds) is float and seconds >= 0), (venue, seconds)


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
    assert_books_shape(summary)
    assert summary["orders"] == 2 * (12 + 4)
    assert summary["outcomes"]["canceled"] == 2 * 12
    assert summary["outcomes"]["already_closed"] == 2 * 4
    url = sqlite(db)
    for name, sim in sims.items():
        # The input is sent while the books are listed: an input order of the book that was
        # cancelled before the first list reached the venue is never shown working by one.
        listed_inputs = db_rows(
            sqlite(db),
            f"SELECT count(*) FROM orders WHERE venue = '{name}' AND seq > 0 "
            "AND listed_by IS NOT NULL",
        )[0][0]
        entry = summary["books"][name]
        assert (entry["verdict"], entry["listed"], entry["working_at_end"]) == (
            "flat",
            7 + listed_inputs,
            0,
        )
        assert entry["cancelled"] == 12
        assert working(sim) == [], name
        # Each order of the book and of the input was sent exactly one cancel.
        assert {k: sim.requests[k] for k in book[name] + closed[name]} == dict.fromkeys(
            book[name] + closed[name], 1
        )
        assert sum(sim.requests.values()) == 16
        rows_ = db_rows(
            url,
            "SELECT order_id, seq, listed_by, outcome, pk FROM orders "
            f"WHERE venue = '{name}' ORDER BY order_id",
        )
        assert len(rows_) == 16 == len({r[0] for r in rows_})  # one row an order
        by_id = {r[0]: r for r in rows_}
        first_list = db_rows(
            url, f"SELECT min(sent_at) FROM requests WHERE kind = 'list' AND venue = '{name}'"
        )[0][0]
        for key in both[name]:  # in the input and the book: the input's row, listed too...
            pk, seq, listed_by = by_id[key][4], by_id[key][1], by_id[key][2]
            assert seq > 0, by_id[key]
            if listed_by is None:  # ...unless its cancel left before the first list
                sent = db_rows(url, f"SELECT min(sent_at) FROM attempts WHERE order_pk = {pk}")
                assert sent[0][0] < first_list, (by_id[key], first_list)
        for key in book[name][5:]:  # listed only: a venue order of the run
            assert by_id[key][1] == 0 and by_id[key][2] is not None, by_id[key]
        for key in closed[name]:  # in the input only: never listed, already closed
            assert by_id[key][1] > 0 and by_id[key][2] is None, by_id[key]
            assert by_id[key][3] == "already_closed"
        assert db_rows(url, f"SELECT from_input FROM books WHERE venue = '{name}'") == [
            (listed_inputs,)
        ]
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
        # It stopped before the kill did (a loaded loop may stop it short of its count).
        assert not running[name] and 0 < len(placed) <= 400, (name, len(placed))
        assert working(sim) == [], (name, len(working(sim)))
        assert all(sim.book[k] is OrderState.CANCELED for k in placed + seeded[name])
        assert all(cancels(sim, k) == 1 for k in placed + seeded[name])
        entry = summary["books"][name]
        assert entry["verdict"] == "flat", (name, entry)
        assert entry["listed"] == entry["cancelled"] == 10 + len(placed), (name, entry)
        assert len(list_rows(db, name)) >= 3  # the runaway's orders came over several lists
    listed = db_rows(sqlite(db), "SELECT count(*) FROM orders WHERE listed_by IS NOT NULL")
    assert listed == [(sum(10 + len(sim.runaway_placed) for sim in sims.values()),)]


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
    assert_books_shape(summary)
    assert summary["status"] == "attention"
    entry = summary["books"]["crux"]
    assert entry["verdict"] == "draining", (entry, stderr)
    assert entry["working_at_end"] == 6 and entry["listed"] == 6
    assert entry["seconds_to_flat"] is None
    assert summary["outcomes"]["cancel_pending"] == 6
    assert sorted(working(sim)) == sorted(keys)
    assert all(sim.book[k] is OrderState.PENDING for k in keys)
    assert all(cancels(sim, k) == 1 for k in keys)  # pending: not sent again
    assert "deadline" in book_detail(db, "crux")  # the reason it is not flat


# -- 3. sFOX's list route answers 429 -----------------------------------------------------------


async def test_sfox_list_route_429_pauses_the_route_and_the_book_still_ends_flat(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """120 orders need four lists of sFOX's first page (50 a page); the simulator's list route
    allows two per 10 s, so the third answers the route's own 429. The route waits out its
    10 s (the simulator's lock: one more list before then would be a second 429), the venue's
    IP limit is never hit, the 429 has its row in the requests table, and the book ends flat."""
    sim = simulator("sfox", list_rate_limit=2)
    keys = place_book(sim, "sfox", 120)
    db = tmp_path / "audit.db"
    async with serve_simulators({"sfox": sim}) as server:
        config = venues_config(tmp_path / "v.toml", server, {"sfox": {}})
        code, summary, stderr = await kill(
            "--from-venues", "sfox", "--venues-config", str(config), db=db
        )
    assert code == 0, stderr
    assert summary["books"]["sfox"]["verdict"] == "flat", stderr
    assert working(sim) == [] and all(sim.book[k] is OrderState.CANCELED for k in keys)
    assert sim.list_rate_limited == 1  # the route was paused: no second 429
    assert sim.rate_limited == 0  # the venue's own limit untouched
    rows = list_rows(db, "sfox")
    assert len(rows) == sim.list_requests
    assert [(r[2], r[3]) for r in rows if r[2] == 429] == [(429, "transient")]
    assert sum(sim.bulk_ids.values()) == 120 and max(sim.bulk_ids.values()) == 1


async def test_sfox_list_route_429_does_not_hold_the_inputs_cancels(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """The first list answers 429 (no Retry-After: the route's documented 10 s pause). That
    pauses the list route only (VENUES.md): the input's five sFOX orders are cancelled within
    a 4 s deadline, long before the route may list again."""
    sim = simulator("sfox", faults=FaultPlan().script_list(Fault.RATE_LIMIT_BARE))
    keys = place_book(sim, "sfox", 8)
    orders = write_orders_csv(tmp_path / "orders.csv", [row_of("sfox", k) for k in keys[:5]])
    db = tmp_path / "audit.db"
    async with serve_simulators({"sfox": sim}) as server:
        config = venues_config(tmp_path / "v.toml", server, {"sfox": {}})
        _, summary, stderr = await kill(
            str(orders), "--from-venues", "sfox", "--venues-config", str(config),
            "--deadline", "4", db=db,
        )  # fmt: skip
    assert sim.list_requests >= 1 and sim.list_rate_limited == 0
    assert [sim.book[k] for k in keys[:5]] == [OrderState.CANCELED] * 5, stderr
    assert summary["outcomes"]["canceled"] >= 5


# -- 4. a venue that cannot be listed ------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_venue_that_cannot_be_listed_is_not_flat_the_others_are(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """tanX answers 500 to every list request and ZebPay's base_url points where nothing
    listens: both end `not_flat` with the reason recorded, exit 1; ETNA and sFOX end flat.
    tanX's input order is cancelled all the same."""
    plan = FaultPlan().script_list(*[Fault.SERVER_ERROR] * 200)
    sims = {
        "etna": simulator("etna"),
        "sfox": simulator("sfox"),
        "tanx": simulator("tanx", faults=plan),
    }
    book = {name: place_book(sim, name, 6) for name, sim in sims.items()}
    orders = write_orders_csv(tmp_path / "orders.csv", [row_of("tanx", book["tanx"][0])])
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        nowhere = f"http://127.0.0.1:{free_port()}/zebpay"
        config = venues_config(
            tmp_path / "v.toml",
            server,
            {"etna": {}, "sfox": {}, "tanx": {}, "zebpay": {"base_url": nowhere}},
        )
        code, summary, stderr = await kill(
            str(orders), "--from-venues", "etna,sfox,tanx,zebpay", "--venues-config", str(config),
            db=db,
        )  # fmt: skip
    assert code == 1, stderr
    assert_books_shape(summary)
    assert summary["status"] == "attention"
    books = summary["books"]
    assert set(books) == {"etna", "sfox", "tanx", "zebpay"}
    for name in ("etna", "sfox"):
        assert books[name]["verdict"] == "flat", (name, books[name], stderr)
        assert working(sims[name]) == []
    for name in ("tanx", "zebpay"):
        assert books[name]["verdict"] == "not_flat", (name, books[name])
        assert books[name]["seconds_to_flat"] is None
        assert book_detail(db, name), name  # the reason it is not flat
    assert "listed" in book_detail(db, "tanx")
    assert sims["tanx"].list_requests >= 1 and sims["tanx"].book[book["tanx"][0]] is (
        OrderState.CANCELED
    )
    assert sorted(working(sims["tanx"])) == sorted(book["tanx"][1:])  # never listed
    assert {r[2] for r in list_rows(db, "tanx")} == {500}
    assert {r[2] for r in list_rows(db, "zebpay")} == {None}  # no answer came


# -- 5. scope filters leave everything else alone ----------------------------------------------


async def test_account_and_side_scope_at_etna_leaves_the_rest_working(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """Three ETNA accounts, both sides: `--account 101 --side buy` cancels exactly account
    101's buy orders; its sell orders and the other accounts' orders stay working, never
    sent a cancel, and no other account is even listed."""
    sim = simulator("etna")
    placed = {
        (account, side): [sim.place(None, account_id=account, side=side) for _ in range(n)]
        for account, n in (("101", 5), ("102", 4), ("103", 3))
        for side in ("buy", "sell")
    }
    db = tmp_path / "audit.db"
    async with serve_simulators({"etna": sim}) as server:
        config = venues_config(
            tmp_path / "v.toml", server, {"etna": {"accounts": ["101", "102", "103"]}}
        )
        code, summary, stderr = await kill(
            "--from-venues", "etna", "--account", "101", "--side", "buy",
            "--venues-config", str(config), db=db,
        )  # fmt: skip
    assert code == 0, stderr
    entry = summary["books"]["etna"]
    assert (entry["verdict"], entry["listed"], entry["cancelled"]) == ("flat", 5, 5)
    inside = placed["101", "buy"]
    outside = [k for scope, keys in placed.items() if scope != ("101", "buy") for k in keys]
    assert all(sim.book[k] is OrderState.CANCELED for k in inside)
    assert sorted(working(sim)) == sorted(outside) and len(outside) == 5 + 4 * 2 + 3 * 2
    assert sum(cancels(sim, k) for k in outside) == 0
    assert {k for k, n in sim.requests.items() if n} == set(inside)
    assert sim.list_paths and all("/accounts/101/" in p for p in sim.list_paths)
    assert summary["orders"] == 5


async def test_symbol_and_side_scope_leaves_other_symbols_and_sides_working(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """sFOX, tanX and ZebPay each with BTCUSDT and ETHUSDT orders on both sides:
    `--symbol BTCUSDT --side sell` cancels exactly the BTCUSDT sells at each venue; the
    other eight orders of each stay working and were never sent a cancel."""
    names = ("sfox", "tanx", "zebpay")
    sims = {name: simulator(name) for name in names}
    placed = {
        name: {
            (symbol, side): [sim.place(None, symbol=symbol, side=side) for _ in range(n)]
            for symbol, n in (("BTCUSDT", 3), ("ETHUSDT", 2))
            for side in ("buy", "sell")
        }
        for name, sim in sims.items()
    }
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = venues_config(
            tmp_path / "v.toml", server, {"sfox": {}, "tanx": {}, "zebpay": {"symbols": None}}
        )
        code, summary, stderr = await kill(
            "--from-venues", ",".join(names), "--symbol", "BTCUSDT", "--side", "sell",
            "--venues-config", str(config), db=db,
        )  # fmt: skip
    assert code == 0, stderr
    for name, sim in sims.items():
        entry = summary["books"][name]
        assert (entry["verdict"], entry["listed"]) == ("flat", 3), (name, entry, stderr)
        inside = placed[name]["BTCUSDT", "sell"]
        outside = [k for s, keys in placed[name].items() if s != ("BTCUSDT", "sell") for k in keys]
        assert all(sim.book[k] is OrderState.CANCELED for k in inside), name
        assert sorted(working(sim)) == sorted(outside) and len(outside) == 3 + 2 + 2, name
        assert [cancels(sim, k) for k in inside] == [1] * 3, name
        assert sum(cancels(sim, k) for k in outside) == 0, name
    for name in ("tanx", "zebpay"):  # no cancel-all: the scope is narrower than it
        assert sims[name].bulk_requests == 0, name
    assert summary["orders"] == 9


# -- 6. ETNA with several accounts, ZebPay with several symbols under HMAC ---------------------


async def test_etna_accounts_and_zebpay_symbols_under_hmac_each_end_flat(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """ETNA lists each account of its config (`accounts = [...]`), one of them with more
    than a page; ZebPay, with only an API key and secret (every request signed, the list's
    query with its timestamp), finds its symbols at its markets endpoint and lists each.
    Every account and every symbol ends with nothing working; no signature was refused."""
    etna, zebpay = simulator("etna"), simulator("zebpay")
    accounts = {"101": 130, "102": 4, "103": 0}
    cast(EtnaSimulator, etna).accounts.add("103")
    etna_keys = {a: [etna.place(None, account_id=a) for _ in range(n)] for a, n in accounts.items()}
    symbols = {"BTCUSDT": 5, "ETHUSDT": 3, "SOLUSDT": 1}
    zebpay_keys = {s: [zebpay.place(None, symbol=s) for _ in range(n)] for s, n in symbols.items()}
    hmac_only = {k: v for k, v in CREDENTIALS.items() if k != "BATCHCANCEL_ZEBPAY_JWT"}
    db = tmp_path / "audit.db"
    async with serve_simulators({"etna": etna, "zebpay": zebpay}) as server:
        config = venues_config(
            tmp_path / "v.toml",
            server,
            {"etna": {"accounts": list(accounts)}, "zebpay": {"symbols": None}},
        )
        code, summary, stderr = await kill(
            "--from-venues", "etna,zebpay", "--venues-config", str(config),
            db=db, env=cli_env(db, credentials=hmac_only),
        )  # fmt: skip
    assert code == 0, stderr
    assert summary["books"]["etna"]["listed"] == 134
    assert summary["books"]["zebpay"]["listed"] == 9
    for name, sim in (("etna", etna), ("zebpay", zebpay)):
        assert summary["books"][name]["verdict"] == "flat", (name, summary["books"], stderr)
        assert working(sim) == [], name
        assert sim.auth_refused == 0, name
    assert all(etna.book[k] is OrderState.CANCELED for keys in etna_keys.values() for k in keys)
    assert all(zebpay.book[k] is OrderState.CANCELED for ks in zebpay_keys.values() for k in ks)
    for account in accounts:  # each account listed, the empty one too
        assert any(f"/accounts/{account}/" in p for p in etna.list_paths), account
    for symbol in symbols:
        assert any(f"symbol={symbol}" in p for p in zebpay.list_paths), symbol
    assert all("timestamp=" in p for p in zebpay.list_paths)  # the signed query
    targets = {r[1] for r in list_rows(db, "zebpay")}
    assert "markets" in targets and all(
        any(f"symbol {s}" in t for t in targets) for s in symbols
    ), targets


# -- 8. SIGKILL mid-kill, then resume: it lists again ------------------------------------------


async def test_sigkill_mid_kill_then_resume_lists_again_and_ends_flat(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """A kill from ETNA's book, paced at 10 cancels a second, is SIGKILLed after a dozen
    cancels; then five new orders appear (no list of the dead session has seen them).
    `resume` lists the book again (new list requests, after the kill's) rather than trusting
    the old list, cancels the new orders and the rest, and ends flat; no order final before
    the SIGKILL is sent again, and none is sent more than twice (once in flight at the kill)."""
    sim = simulator("etna")
    first = place_book(sim, "etna", 40)
    db = tmp_path / "audit.db"
    env = cli_env(db)
    async with serve_simulators({"etna": sim}) as server:
        config = venues_config(
            tmp_path / "v.toml", server, {"etna": {"rate_limit": 10, "period": 1.0, "timeout": 1.0}}
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "batchcancel", "kill", "--from-venues", "etna",
            "--venues-config", str(config), "--run-key", "crash-kill",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2000):  # bounded: at most 20 s
            if sum(sim.requests.values()) >= 12 or process.returncode is not None:
                break
            await asyncio.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == -signal.SIGKILL, err.decode()
        url = sqlite(db)
        final = {r[0] for r in db_rows(url, "SELECT order_id FROM orders WHERE state = 'done'")}
        sent_before = dict(sim.requests)
        lists_before = sim.list_requests
        last_list = max(r[0] for r in list_rows(db, "etna"))
        assert 12 <= sum(sent_before.values()) < 40 and final, "killed too late or too early"
        assert working(sim), "nothing left for the resume to do"
        late = place_book(sim, "etna", 5, start=1000)  # placed after the kill's lists
        resumed = await run_cli(
            "resume", "crash-kill", "--venues-config", str(config), "--json", env=env
        )
    assert resumed.code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert_books_shape(summary)
    assert summary["books"]["etna"]["verdict"] == "flat", resumed.stderr
    assert working(sim) == []
    assert all(sim.book[k] is OrderState.CANCELED for k in first + late)
    assert sim.list_requests > lists_before
    newer = [r for r in list_rows(db, "etna") if r[0] > last_list]
    assert len(newer) == sim.list_requests - lists_before  # the resume's own lists
    for key in final:  # final before the SIGKILL: never sent again
        assert sim.requests[key] == sent_before.get(key, 0), key
    assert max(sim.requests.values()) <= 2
    twice = {k for k, n in sim.requests.items() if n == 2}
    assert not twice & final  # only an order in flight at the SIGKILL is sent twice
    assert all(sim.requests[k] == 1 for k in late)
    rows = db_rows(url, "SELECT order_id, attempts FROM orders WHERE venue = 'etna'")
    assert len(rows) == 45 == len({r[0] for r in rows})
    # An attempt row for every request; one more where the SIGKILL fell between the two.
    assert all(attempts >= sim.requests[order_id] for order_id, attempts in rows)
    assert_audit_intact(url, "crash-kill")


# -- 9, 10. every request written ahead; the summary's books -------------------------------------


async def test_every_request_listings_included_has_its_record_before_it_left(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """A run from all five books (single cancels, so that every request the simulators saw
    without an order is a listing, or ZebPay's markets): each venue's list requests and the
    requests table's list rows are as many, the k-th arrived after the k-th row was
    stamped sent, every cancel arrived after its attempt row, and `verify` says intact."""
    names = ("crux", "etna", "sfox", "tanx", "zebpay")
    sims = {name: simulator(name) for name in names}
    for name, sim in sims.items():
        place_book(sim, name, 8)
    db = tmp_path / "audit.db"
    url = sqlite(db)
    async with serve_simulators(sims) as server:
        config = venues_config(
            tmp_path / "v.toml",
            server,
            {n: {"symbols": None} if n == "zebpay" else {} for n in names},
        )
        result = await run_cli(
            "run", "--from-venues", "all", "--venues-config", str(config), "--json",
            env=cli_env(db),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert_books_shape(summary)
    for name, sim in sims.items():
        assert summary["books"][name]["verdict"] == "flat", (name, result.stderr)
        rows = db_rows(
            url,
            "SELECT sent_at FROM requests "
            f"WHERE kind = 'list' AND venue = '{name}' ORDER BY sent_at",
        )
        arrivals = sorted(a.at for a in sim.arrivals if a.key is None)
        markets = sum(a.path.endswith("/market/markets") for a in sim.arrivals)
        assert len(arrivals) == len(rows) == sim.list_requests + markets, name
        assert name != "zebpay" or markets == 1
        for arrived, (sent_at,) in zip(arrivals, rows, strict=True):
            assert arrived >= unix(sent_at) - 0.001, name
        attempts: dict[str, list[float]] = defaultdict(list)
        for order_id, sent_at in db_rows(
            url,
            "SELECT o.order_id, a.sent_at FROM attempts a JOIN orders o ON o.pk = a.order_pk "
            f"WHERE o.venue = '{name}' ORDER BY a.order_pk, a.attempt",
        ):
            attempts[str(order_id)].append(unix(sent_at))
        cancelled = Counter(a.key for a in sim.arrivals if a.key is not None)
        assert cancelled == {k: len(v) for k, v in attempts.items()}, name
        for arrival in sim.arrivals:
            if arrival.key is not None:
                assert arrival.at >= attempts[arrival.key][0] - 0.001, (name, arrival)
    verify = await run_cli("verify", summary["run_id"], env=cli_env(db))
    assert verify.code == 0 and "intact" in verify.stdout, (verify.stdout, verify.stderr)


async def test_all_open_never_sweeps_wider_than_the_scope(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """ZebPay's cancel-all cancels every open order of the account: with `--all-open` and a
    `--symbol` narrower than that, it is not used (SPEC "Nothing else is touched"); the
    symbol's orders are cancelled one by one, the other symbol's stay working."""
    sim = simulator("zebpay")
    inside = [sim.place(None, symbol="BTCUSDT") for _ in range(4)]
    outside = [sim.place(None, symbol="ETHUSDT") for _ in range(3)]
    db = tmp_path / "audit.db"
    async with serve_simulators({"zebpay": sim}) as server:
        config = venues_config(tmp_path / "v.toml", server, {"zebpay": {"symbols": None}})
        code, summary, stderr = await kill(
            "--from-venues", "zebpay", "--all-open", "--symbol", "BTCUSDT",
            "--venues-config", str(config), db=db,
        )  # fmt: skip
    assert code == 0, stderr
    assert summary["books"]["zebpay"]["verdict"] == "flat", stderr
    assert sim.bulk_requests == 0
    assert sorted(working(sim)) == sorted(outside)
    assert [sim.requests[k] for k in inside] == [1] * 4
    assert sum(sim.requests[k] for k in outside) == 0
