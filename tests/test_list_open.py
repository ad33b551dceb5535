"""Listing each venue's own book (VENUES.md "List open"), adapter against simulator over HTTP.

Each venue's list adapter walks its simulator's list route on 127.0.0.1 through
`batchcancel.transport.send`: a seeded book (orders no input names) lists exactly, page after
page to the end; filters and scopes leave the rest untouched; the simulator's cancels (single,
bulk, cancel-all) take orders off the list, while a Crux cancel still with its supplier keeps it
there; a runaway's new orders show up and are cancelled until a complete list is empty; the
sFOX list route's own 429; faults, malformed pages and refused credentials on list requests.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import aiohttp
import pytest

from batchcancel.outcomes import Outcome
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import Answer, Fault, FaultPlan, OrderState, Runaway, Simulator
from batchcancel.simulators.etna import EtnaSimulator
from batchcancel.transport import open_session, send
from batchcancel.venues import VENUES
from batchcancel.venues.base import (
    LIST_MAX_BODY,
    ListAnswer,
    ListedOrder,
    ListPage,
    ListTarget,
    ListVenue,
    OrderRow,
    Reply,
    VerdictKind,
    supports_list,
)
from batchcancel.venues.sfox import SfoxVenue
from batchcancel.venues.tanx import MAX_ORDER_ID, TanxVenue
from batchcancel.venues.zebpay import ZebpayVenue
from tests.conftest import CREDENTIALS, SECRET_VALUES, ServeSimulators

VENUE_NAMES = list(SIMULATORS)
VENUE_PARAMS = [pytest.param(name, id=name) for name in VENUE_NAMES]
TIMEOUT = 2.0  # seconds per request (loopback)
MAX_PAGES = 30  # every walk here is bounded
# ZebPay with a JWT alone; with CREDENTIALS the adapter signs with the API key.
ZEBPAY_JWT_ONLY = {k: v for k, v in CREDENTIALS.items() if k == "BATCHCANCEL_ZEBPAY_JWT"}


def adapter(venue: str, credentials: Mapping[str, str] = CREDENTIALS) -> ListVenue:
    cls = VENUES[venue]
    made = cls({k: v for k, v in credentials.items() if k in cls.credential_vars})
    assert supports_list(made)
    return cast(ListVenue, made)


def simulator(venue: str, **kwargs: object) -> Simulator:
    """An unthrottled simulator (the sFOX list route unthrottled too, unless asked)."""
    kwargs.setdefault("rate_limit", None)
    kwargs.setdefault("list_rate_limit", None)
    return SIMULATORS[venue](credentials=CREDENTIALS, **kwargs)  # type: ignore[arg-type]


def key_of(venue: str, n: int) -> str:
    """Order n's id in the venue's form."""
    if venue == "crux":
        return str(uuid.UUID(int=n + 1, version=4))
    if venue == "zebpay":
        return f"book-{n}"
    return str({"sfox": 700_000, "etna": 800_000, "tanx": 900_000}[venue] + n)


# Where a plain target of each venue lists: ETNA needs an account, ZebPay a symbol.
ACCOUNT = "77"
SYMBOL = "BTCUSDT"


def plain_target(venue: str) -> ListTarget:
    targets = adapter(venue).list_targets(
        accounts=[ACCOUNT] if venue == "etna" else [],
        symbols=[SYMBOL] if venue == "zebpay" else [],
    )
    return targets[0]  # tanX: the "wait" walk first


def place_book(sim: Simulator, venue: str, count: int, start: int = 0) -> list[str]:
    """`count` working orders at the plain target, oldest first; their keys."""
    return [
        sim.place(
            key_of(venue, start + n),
            account_id=ACCOUNT if venue == "etna" else "",
            symbol=SYMBOL if venue == "zebpay" else "",
        )
        for n in range(count)
    ]


@dataclass
class Walk:
    answers: list[ListAnswer]

    @property
    def orders(self) -> list[ListedOrder]:
        return [order for answer in self.answers for order in answer.orders]

    @property
    def ids(self) -> list[str]:
        return [order.order_id for order in self.orders]

    @property
    def last(self) -> ListAnswer:
        return self.answers[-1]


class Client:
    """One venue's adapter and a session to its simulator."""

    def __init__(self, venue: str, session: aiohttp.ClientSession, base: str) -> None:
        self.venue = venue
        self.session = session
        self.base = base
        self.adapter = adapter(venue)

    async def reply(self, page: ListPage, *, using: ListVenue | None = None) -> Reply:
        request = (using or self.adapter).build_list(page, now=time.time())
        return await send(self.session, self.base, request, timeout=TIMEOUT)

    async def page(self, page: ListPage, *, using: ListVenue | None = None) -> ListAnswer:
        return (using or self.adapter).classify_list(page, await self.reply(page, using=using))

    async def walk(self, target: ListTarget, *, using: ListVenue | None = None) -> Walk:
        """Pages from the first until one is complete, unusable or has no next."""
        answers = []
        page: ListPage | None = ListPage(target)
        for _ in range(MAX_PAGES):
            assert page is not None
            answer = await self.page(page, using=using)
            answers.append(answer)
            if not answer.usable or answer.complete or answer.next is None:
                break
            page = answer.next
        return Walk(answers)

    async def cancel(self, order: ListedOrder) -> Outcome | None:
        request = self.adapter.build_cancel(order.row(), now=time.time())
        verdict = self.adapter.classify(
            await send(self.session, self.base, request, timeout=TIMEOUT)
        )
        assert verdict.kind is VerdictKind.FINAL, verdict
        return verdict.outcome


class serve:
    """`async with serve(serve_simulators, sim) as client`: the simulator and a client."""

    def __init__(self, serve_simulators: ServeSimulators, sim: Simulator) -> None:
        self.serve_simulators = serve_simulators
        self.sim = sim

    async def __aenter__(self) -> Client:
        self._server = self.serve_simulators({self.sim.name: self.sim})
        server = await self._server.__aenter__()
        self._session = open_session(max_connections=2)
        return Client(self.sim.name, self._session, server.url(self.sim.name))

    async def __aexit__(self, *exc: object) -> None:
        await self._session.close()
        await self._server.__aexit__(None, None, None)


# -- a seeded book lists exactly, to the end --------------------------------------------------

# Orders per venue, and the list requests a walk takes: sFOX and tanX pages of 50, ETNA and
# Crux of 100; ZebPay lists up to 100 with no cursor, so its book fits one page here.
BOOKS = {"sfox": (120, 3), "etna": (230, 3), "crux": (200, 3), "tanx": (100, 3), "zebpay": (73, 1)}


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_a_seeded_book_lists_exactly_page_by_page(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """Working orders no input names, among closed ones the list also shows: the walk finds
    every working one once, newest first where the venue sorts, reads the closed ones as
    closed, and ends on a complete page after exactly the pages the book needs."""
    count, pages = BOOKS[venue]
    sim = simulator(venue)
    sim.list_shows_closed = True  # closed rows on the page, for the adapter to leave out
    closed = place_book(sim, venue, 6, start=10_000)
    for n, key in enumerate(closed):
        sim.book[key] = OrderState.CANCELED if n % 2 else OrderState.FILLED
    working = place_book(sim, venue, count)
    async with serve(serve_simulators, sim) as client:
        walk = await client.walk(plain_target(venue))
    assert all(answer.usable for answer in walk.answers), walk.last
    assert walk.last.complete and walk.last.next is None
    assert sorted(walk.ids) == sorted(working)
    assert len(walk.ids) == len(set(walk.ids)) == count
    assert len(walk.answers) == sim.list_requests == pages
    assert sim.total_requests == pages and sum(sim.requests.values()) == 0
    assert sum(a.closed for a in walk.answers) == (0 if venue == "tanx" else len(closed))
    if venue != "crux":  # Crux orders are listed in book order, not by id
        assert walk.ids == sorted(walk.ids, key=lambda k: (len(k), k), reverse=True)
    first = walk.orders[0]
    assert first.venue == venue
    assert first.row() == OrderRow(venue, first.order_id, first.account_id, first.symbol)
    if venue == "etna":
        assert {o.account_id for o in walk.orders} == {ACCOUNT}
    if venue == "zebpay":
        assert {o.symbol for o in walk.orders} == {SYMBOL}


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_an_empty_book_is_a_complete_first_page(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """The proof a flat book gives: one complete, usable, empty first page."""
    sim = simulator(venue)
    if venue == "etna":
        cast(EtnaSimulator, sim).accounts.add(ACCOUNT)
    async with serve(serve_simulators, sim) as client:
        answer = await client.page(ListPage(plain_target(venue)))
    assert answer.flat and answer.usable and answer.complete
    assert answer.orders == () and answer.rows == 0
    assert sim.list_requests == 1


@pytest.mark.parametrize("venue", ["sfox", "tanx"])
async def test_a_page_exactly_full_needs_one_more(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """A page as long as the limit is not the last: the next one, empty, is."""
    sim = simulator(venue)
    working = place_book(sim, venue, 50)
    async with serve(serve_simulators, sim) as client:
        walk = await client.walk(plain_target(venue))
    assert [a.rows for a in walk.answers] == [50, 0]
    assert [a.complete for a in walk.answers] == [False, True]
    assert sorted(walk.ids) == sorted(working)
    if venue == "sfox":  # the second page is before=<smallest id of the first>
        assert walk.answers[0].next == ListPage(plain_target(venue), min(working, key=int))


# -- cancels take orders off the list ------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_cancelled_orders_no_longer_list(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """Cancel three of eight listed orders through the simulator's own cancel route: the list
    then shows exactly the other five."""
    sim = simulator(venue)
    working = place_book(sim, venue, 8)
    async with serve(serve_simulators, sim) as client:
        before = await client.walk(plain_target(venue))
        gone = before.orders[:3]
        outcomes = [await client.cancel(order) for order in gone]
        after = await client.walk(plain_target(venue))
    assert sorted(before.ids) == sorted(working)
    expected = Outcome.CANCEL_PENDING if venue == "crux" else Outcome.CANCELED
    assert outcomes == [expected] * 3
    if venue == "crux":  # the OPEN orders here settle at once; see the supplier test below
        assert {sim.book[o.order_id] for o in gone} == {OrderState.CANCELED}
    assert sorted(after.ids) == sorted(set(working) - {o.order_id for o in gone})
    assert after.last.complete


async def test_sfox_bulk_cancel_takes_orders_off_the_list(
    serve_simulators: ServeSimulators,
) -> None:
    sim = simulator("sfox")
    working = place_book(sim, "sfox", 10)
    venue = SfoxVenue(CREDENTIALS)
    rows = [OrderRow("sfox", key) for key in working[:4]]
    async with serve(serve_simulators, sim) as client:
        bulk = await send(
            client.session,
            client.base,
            venue.build_bulk_cancel(rows, now=0),
            timeout=TIMEOUT,
        )
        after = await client.walk(ListTarget())
    assert bulk.status == 200
    assert sorted(after.ids) == sorted(working[4:])


async def test_tanx_bulk_cancel_of_one_side_leaves_the_other(
    serve_simulators: ServeSimulators,
) -> None:
    """tanX's bulk cancel by market and side: the buys of btcusdt go, the sells and the
    ethusdt buys still list, in both of their states."""
    sim = simulator("tanx")
    buys = [sim.place(str(100 + n), symbol="btcusdt", side="buy") for n in range(4)]
    sells = [sim.place(str(200 + n), symbol="btcusdt", side="sell") for n in range(3)]
    eth = [
        sim.place(str(300 + n), symbol="ethusdt", side="buy", listed_as="pending") for n in range(2)
    ]
    venue = TanxVenue(CREDENTIALS)
    async with serve(serve_simulators, sim) as client:
        sweep = await send(
            client.session,
            client.base,
            venue.build_sweep("btcusdt/buy", now=0),
            timeout=TIMEOUT,
        )
        listed = [await client.walk(t) for t in venue.list_targets()]
    assert sweep.status == 200
    assert [t.state for t in venue.list_targets()] == ["wait", "pending"]
    assert sorted(listed[0].ids) == sorted(sells)
    assert sorted(listed[1].ids) == sorted(eth)
    assert {o.state for o in listed[1].orders} == {"pending"}
    assert not set(buys) & set(listed[0].ids + listed[1].ids)


async def test_zebpay_cancel_all_leaves_every_symbol_flat(
    serve_simulators: ServeSimulators,
) -> None:
    sim = simulator("zebpay")
    for n in range(5):
        sim.place(f"z-{n}", symbol="BTCUSDT" if n % 2 else "ETHUSDT")
    venue = ZebpayVenue(CREDENTIALS)
    targets = venue.list_targets(symbols=["BTCUSDT", "eth-usdt"])
    async with serve(serve_simulators, sim) as client:
        before = [await client.walk(t) for t in targets]
        cancel_all = await send(
            client.session,
            client.base,
            venue.build_sweep("all", now=time.time()),
            timeout=TIMEOUT,
        )
        after = [await client.page(ListPage(t)) for t in targets]
    assert [t.symbol for t in targets] == ["BTCUSDT", "ETHUSDT"]
    assert [sorted(w.ids) for w in before] == [["z-1", "z-3"], ["z-0", "z-2", "z-4"]]
    assert cancel_all.status == 200
    assert [a.flat for a in after] == [True, True]


async def test_crux_orders_with_their_supplier_still_list_as_working(
    serve_simulators: ServeSimulators,
) -> None:
    """A Crux cancel is handed to the supplier: until the supplier confirms, the order lists
    as working (it has no status of its own), and only then is the book flat."""
    sim = simulator("crux", settle_after=0.6)
    keys = [sim.place(key_of("crux", n), OrderState.OPEN_ASYNC) for n in range(3)]
    async with serve(serve_simulators, sim) as client:
        first = await client.walk(ListTarget())
        outcomes = [await client.cancel(order) for order in first.orders]
        pending = await client.walk(ListTarget())
        await asyncio.sleep(0.8)
        settled = await client.page(ListPage(ListTarget()))
    assert sorted(first.ids) == sorted(keys)
    assert outcomes == [Outcome.CANCEL_PENDING] * 3
    assert sorted(pending.ids) == sorted(keys)
    assert not any(o.cancel_pending for o in pending.orders)  # Crux cannot say so
    assert {o.state for o in pending.orders} == {"Allocated"}
    assert not pending.last.flat
    assert settled.flat


@pytest.mark.parametrize("venue", ["sfox", "etna"])
async def test_a_pending_cancel_lists_as_working_and_says_so(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """sFOX "Cancel Pending" and ETNA "PendingCancel" still list, marked cancel_pending."""
    sim = simulator(venue, settle_after=30.0)
    keys = place_book(sim, venue, 2)
    sim.book[keys[0]] = OrderState.OPEN_ASYNC
    async with serve(serve_simulators, sim) as client:
        listed = await client.walk(plain_target(venue))
        await client.cancel(next(o for o in listed.orders if o.order_id == keys[0]))
        after = await client.walk(plain_target(venue))
    states = {o.order_id: (o.state, o.cancel_pending) for o in after.orders}
    want = ("Cancel Pending", True) if venue == "sfox" else ("PendingCancel", True)
    assert states == {keys[0]: want, keys[1]: (states[keys[1]][0], False)}
    assert not after.last.flat


# -- filters and scope -------------------------------------------------------------------------


async def test_sfox_filters_by_pair_and_action(serve_simulators: ServeSimulators) -> None:
    """`currency_pair` and `action` travel in the query (lower-case pair, Buy/Sell), and the
    list holds exactly the orders of that pair and side."""
    sim = simulator("sfox")
    placed = {
        (pair, side): [sim.place(None, symbol=pair, side=side) for _ in range(3)]
        for pair in ("btcusd", "ethusd")
        for side in ("buy", "sell")
    }
    venue = adapter("sfox")
    (target,) = venue.list_targets(symbols=["BTC-USD"], side="sell")
    request = venue.build_list(ListPage(target), now=0)
    async with serve(serve_simulators, sim) as client:
        walk = await client.walk(target)
        everything = await client.walk(ListTarget())
    assert request.path == "/v1/orders?limit=50&currency_pair=btcusd&action=Sell"
    assert sorted(walk.ids) == sorted(placed["btcusd", "sell"])
    assert {(o.symbol, o.side) for o in walk.orders} == {("btcusd", "sell")}
    assert len(everything.ids) == 12
    assert venue.list_targets(accounts=["1"]) == []  # an sFOX key names no account


@pytest.mark.parametrize("venue", ["sfox", "tanx", "zebpay", "etna"])
async def test_rows_outside_the_scope_are_never_listed(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """A venue that ignores a filter (a canned page of both sides and two symbols): the
    adapter keeps only the rows in scope and counts the others out."""
    page = {
        "sfox": [
            {"id": 11, "pair": "btcusd", "action": "Buy", "status": "Started"},
            {"id": "10", "pair": "btcusd", "action": "Sell", "status": "Started"},
            {"id": 9, "pair": "ethusd", "action": "Buy", "status": "Started"},
        ],
        "tanx": {
            "status": "success",
            "message": "Orders Retrieved Successfully",
            "payload": [
                {"id": 11, "market": "btcusdt", "side": "buy", "state": "wait"},
                {"id": "10", "market": "btcusdt", "side": "sell", "state": "wait"},
                {"id": 9, "market": "ethusdt", "side": "buy", "state": "wait"},
            ],
        },
        "zebpay": {
            "statusDescription": "OK",
            "statusCode": 200,
            "customMessage": ["OK"],
            "data": {
                "data": [
                    {"clientOrderId": "a", "symbol": "BTCUSDT", "side": "BUY", "status": "new"},
                    {"clientOrderId": "b", "symbol": "BTCUSDT", "side": "SELL", "status": "new"},
                    {"clientOrderId": "c", "symbol": "ETHUSDT", "side": "BUY", "status": "new"},
                ],
                "totalCount": 3,
                "nextTimestamp": None,
            },
        },
        "etna": {
            "Result": [
                {"Id": 11, "AccountId": 77, "Symbol": "BTCUSD", "Side": "Buy", "Status": "New"},
                {"Id": 10, "AccountId": "77", "Symbol": "BTCUSD", "Side": "Sell", "Status": "New"},
                {"Id": 9, "AccountId": 78, "Symbol": "BTCUSD", "Side": "Buy", "Status": "New"},
            ],
            "NextPageLink": None,
            "TotalCount": 3,
        },
    }[venue]
    sim = simulator(venue, faults=FaultPlan().script_list(Answer.json(200, page)))
    venue_adapter = adapter(venue)
    symbol = "BTCUSD" if venue in ("sfox", "etna") else "BTCUSDT"
    target = venue_adapter.list_targets(
        accounts=[ACCOUNT] if venue == "etna" else [], symbols=[symbol], side="buy"
    )[0]
    async with serve(serve_simulators, sim) as client:
        answer = await client.page(ListPage(target))
    assert answer.usable and answer.complete
    assert [o.order_id for o in answer.orders] == (["a"] if venue == "zebpay" else ["11"])
    assert answer.out_of_scope == 2 and answer.rows == 3


async def test_etna_lists_each_account_apart(serve_simulators: ServeSimulators) -> None:
    """Three accounts: each walk lists that account's orders only, across pages; a wrong
    account answers 500, read as transient, naming the account."""
    sim = simulator("etna")
    books = {
        account: [sim.place(None, account_id=account) for _ in range(count)]
        for account, count in (("101", 150), ("102", 3), ("103", 0))
    }
    cast(EtnaSimulator, sim).accounts.add("103")
    venue = adapter("etna")
    targets = venue.list_targets(accounts=["101", "102", "103", "101"])
    async with serve(serve_simulators, sim) as client:
        walks = {t.account_id: await client.walk(t) for t in targets}
        wrong = await client.page(ListPage(ListTarget(account_id="999")))
    assert [t.account_id for t in targets] == ["101", "102", "103"]
    for account, keys in books.items():
        assert sorted(walks[account].ids) == sorted(keys), account
        assert {o.account_id for o in walks[account].orders} <= {account}
    assert [len(w.answers) for w in walks.values()] == [2, 1, 1]
    assert walks["103"].last.flat
    assert wrong.verdict is not None and wrong.verdict.kind is VerdictKind.TRANSIENT
    assert "999" in wrong.verdict.reason and not wrong.malformed
    assert venue.list_targets() == []  # ETNA cannot list without accounts
    assert venue.list_needs_account and not venue.list_needs_symbol


async def test_tanx_walks_each_state_and_filters(serve_simulators: ServeSimulators) -> None:
    sim = simulator("tanx")
    wait_btc_buy = [sim.place(str(10 + n), symbol="btcusdt", side="buy") for n in range(60)]
    wait_btc_sell = [sim.place(str(100 + n), symbol="btcusdt", side="sell") for n in range(5)]
    pending_btc_buy = [
        sim.place(str(200 + n), symbol="btcusdt", side="buy", listed_as="pending") for n in range(4)
    ]
    sim.place("300", symbol="ethusdt", side="buy")
    venue = adapter("tanx")
    targets = venue.list_targets(symbols=["BTC/USDT"], side="buy")
    async with serve(serve_simulators, sim) as client:
        walks = [await client.walk(t) for t in targets]
    assert [(t.state, t.symbol, t.side) for t in targets] == [
        ("wait", "btcusdt", "buy"),
        ("pending", "btcusdt", "buy"),
    ]
    assert venue.build_list(ListPage(targets[1], "2"), now=0).path == (
        "/sapi/v1/orders/?state=pending&limit=50&page=2&market=btcusdt&side=buy"
    )
    assert sorted(walks[0].ids, key=int) == wait_btc_buy
    assert sorted(walks[1].ids, key=int) == pending_btc_buy
    assert [len(w.answers) for w in walks] == [2, 1]
    assert not set(wait_btc_sell) & set(walks[0].ids)
    assert {o.symbol for o in walks[0].orders} == {"BTCUSDT"}


@pytest.mark.parametrize("signed", [True, False], ids=["hmac", "jwt"])
async def test_zebpay_lists_per_symbol(serve_simulators: ServeSimulators, signed: bool) -> None:
    """One walk per symbol, signed with the API key (timestamp in the query) or with a JWT;
    the markets endpoint names the symbols when nothing else does."""
    sim = simulator("zebpay")
    books = {
        s: [sim.place(None, symbol=s) for _ in range(n)]
        for s, n in (("BTCUSDT", 4), ("ETHUSDT", 2), ("SOLUSDT", 1))
    }
    venue = ZebpayVenue(CREDENTIALS if signed else ZEBPAY_JWT_ONLY)
    async with serve(serve_simulators, sim) as client:
        markets = await send(
            client.session, client.base, venue.build_markets(now=0), timeout=TIMEOUT
        )
        problem, symbols = venue.classify_markets(markets)
        targets = venue.list_targets(symbols=symbols)
        walks = {t.symbol: await client.walk(t, using=venue) for t in targets}
    assert problem is None and symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert {s: sorted(w.ids) for s, w in walks.items()} == {s: sorted(k) for s, k in books.items()}
    assert sim.auth_refused == 0 and sim.list_requests == 3
    request = venue.build_list(ListPage(targets[0]), now=1712345678.901)
    headers = dict(request.headers)
    if signed:
        assert request.path.endswith("?symbol=BTCUSDT&limit=100&timestamp=1712345678901")
        assert "x-auth-signature" in headers and "Authorization" not in headers
    else:
        assert request.path.endswith("?symbol=BTCUSDT&limit=100")
        assert headers["Authorization"].startswith("Bearer ")
    assert venue.list_targets() == [] and venue.list_needs_symbol
    assert "x-auth-apikey" not in dict(venue.build_markets(now=0).headers)


async def test_zebpay_more_than_a_page_means_list_again(serve_simulators: ServeSimulators) -> None:
    """130 orders of one symbol: the first list holds 100 and is not complete, but has no
    next page (ZebPay pages by nothing usable): cancel, list again."""
    sim = simulator("zebpay")
    keys = [sim.place(None, symbol="BTCUSDT") for _ in range(130)]
    target = plain_target("zebpay")
    async with serve(serve_simulators, sim) as client:
        first = await client.page(ListPage(target))
        for order in first.orders:
            await client.cancel(order)
        second = await client.page(ListPage(target))
    assert len(first.orders) == 100 and not first.complete and first.next is None
    assert sorted([o.order_id for o in first.orders + second.orders]) == sorted(keys)
    assert second.complete and len(second.orders) == 30


def test_crux_and_account_scopes() -> None:
    """Crux orders name no account, symbol or side: any such scope lists nothing there."""
    crux = adapter("crux")
    assert crux.list_targets() == [ListTarget()]
    assert crux.list_targets(symbols=["BTCUSD"]) == []
    assert crux.list_targets(side="buy") == []
    assert crux.list_targets(accounts=["77"]) == []
    for name in ("sfox", "tanx", "zebpay"):
        assert adapter(name).list_targets(accounts=["77"], symbols=["BTCUSDT"]) == []


# -- a runaway keeps placing orders --------------------------------------------------------------


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_a_runaway_is_listed_and_cancelled_until_flat(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """Eight new orders over 0.8 s from the first request, beside three in the book: list the
    first page, cancel what it shows, list again, until the runaway has stopped and a
    complete first page is empty. Every runaway order was found and cancelled."""
    runaway = Runaway(
        count=8,
        seconds=0.8,
        account_id=ACCOUNT if venue == "etna" else "",
        symbol=SYMBOL if venue == "zebpay" else "",
    )
    sim = simulator(venue, runaway=runaway)
    seeded = place_book(sim, venue, 3)
    targets = [plain_target(venue)] if venue != "tanx" else adapter(venue).list_targets()
    cancelled: list[str] = []
    rounds = 0
    deadline = time.monotonic() + 10
    async with serve(serve_simulators, sim) as client:
        while time.monotonic() < deadline:
            rounds += 1
            answers = [await client.page(ListPage(t)) for t in targets]
            assert all(a.usable for a in answers), answers
            if len(sim.runaway_placed) == runaway.count and all(a.flat for a in answers):
                break
            for answer in answers:
                for order in answer.orders:
                    await client.cancel(order)
                    cancelled.append(order.order_id)
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"not flat by the deadline; placed {sim.runaway_placed}")
    assert len(sim.runaway_placed) == 8 == len(set(sim.runaway_placed))
    assert not set(sim.runaway_placed) & set(seeded)
    assert sorted(cancelled) == sorted(seeded + sim.runaway_placed)
    assert rounds >= 3  # the runaway's orders came over several lists
    assert all(sim.book[k] is OrderState.CANCELED for k in cancelled)


async def test_a_runaway_stops_by_itself(serve_simulators: ServeSimulators) -> None:
    """Bounded in count and time: one started on serving places its five orders without any
    request and stops; one of 1000 orders over 0.3 s is done within a second and a half, with
    at most its 1000 orders; a runaway still running when the server stops is stopped."""
    sim = simulator("sfox", runaway=Runaway(count=5, seconds=0.2, start="serve"))
    fast = simulator("tanx", runaway=Runaway(count=1000, seconds=0.3, start="serve"))
    slow = simulator("crux", runaway=Runaway(count=3, seconds=60.0))
    async with serve(serve_simulators, sim):
        await asyncio.sleep(0.6)
        assert len(sim.runaway_placed) == 5 and not sim.runaway_running
        assert sim.total_requests == 0
    assert [sim.book[k] for k in sim.runaway_placed] == [OrderState.OPEN] * 5
    assert sim.runaway_placed == sorted(sim.runaway_placed, key=int)
    async with serve(serve_simulators, fast):
        deadline = time.monotonic() + 1.5
        while fast.runaway_running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not fast.runaway_running
    assert 0 < len(fast.runaway_placed) <= 1000
    async with serve(serve_simulators, slow) as client:
        assert not slow.runaway_running  # it starts with the first request
        await client.page(ListPage(ListTarget()))
        assert slow.runaway_running
    assert not slow.runaway_running and len(slow.runaway_placed) <= 1


# -- the sFOX list route's own limit -----------------------------------------------------------


async def test_sfox_list_route_answers_429_past_ten_in_ten_seconds(
    serve_simulators: ServeSimulators,
) -> None:
    """Ten list requests pass, the eleventh is 429 with no Retry-After: rate limited for the
    route's 10 s. Cancels still pass meanwhile (the route alone pauses)."""
    sim = simulator("sfox", list_rate_limit=-1)  # the documented 10 per 10 s
    key = sim.place("1")
    target = ListTarget()
    async with serve(serve_simulators, sim) as client:
        answers = [await client.page(ListPage(target)) for _ in range(11)]
        raw = await client.reply(ListPage(target))
        outcome = await client.cancel(ListedOrder("sfox", key))
    assert [a.usable for a in answers] == [True] * 10 + [False]
    verdict = answers[-1].verdict
    assert verdict is not None and verdict.rate_limited and verdict.retry_after == 10.0
    assert verdict.kind is VerdictKind.TRANSIENT
    assert raw.status == 429 and "retry-after" not in raw.headers
    assert sim.list_rate_limited == 2 and sim.rate_limited == 0
    assert outcome is Outcome.CANCELED
    limit = adapter("sfox").list_limit
    assert limit is not None and (limit.rate_limit, limit.period, limit.cooldown) == (
        10,
        10.0,
        10.0,
    )


async def test_sfox_list_requests_count_toward_the_ip_limit(
    serve_simulators: ServeSimulators,
) -> None:
    """Three list requests under an IP limit of three: the next cancel is the IP's 429."""
    sim = simulator("sfox", rate_limit=3, period=10.0, list_rate_limit=-1)
    key = sim.place("5")
    async with serve(serve_simulators, sim) as client:
        answers = [await client.page(ListPage(ListTarget())) for _ in range(3)]
        request = client.adapter.build_cancel(OrderRow("sfox", key), now=0)
        reply = await send(client.session, client.base, request, timeout=TIMEOUT)
    assert all(a.usable for a in answers)
    assert reply.status == 429 and sim.rate_limited == 1 and sim.book[key] is OrderState.OPEN


# -- faults, malformed pages, refused credentials ----------------------------------------------


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_faults_on_list_requests(serve_simulators: ServeSimulators, venue: str) -> None:
    """429 (with and without Retry-After), 5xx, a dropped connection, junk, a truncated body
    and a malformed page, one per list request: none is usable and none raises; the next
    list reads the book exactly. Faults scripted on lists leave cancels alone."""
    plan = FaultPlan(retry_after=0.5)
    sim = simulator(venue, faults=plan)
    plan.script_list(
        Fault.RATE_LIMIT,
        Fault.RATE_LIMIT_BARE,
        Fault.SERVER_ERROR,
        Fault.UNAVAILABLE,
        Fault.JUNK,
        Fault.TRUNCATED,
        sim.malformed_list_answer(),
        Answer.redirect(302, "https://elsewhere.example/"),
    )
    keys = place_book(sim, venue, 4)
    target = plain_target(venue)
    async with serve(serve_simulators, sim) as client:
        answers = [await client.page(ListPage(target)) for _ in range(8)]
        good = await client.walk(target)
        outcome = await client.cancel(good.orders[0])
    limited, bare, error, unavailable, junk, truncated, malformed, moved = answers
    for answer in answers:
        assert not answer.usable and answer.orders == () and not answer.flat
    assert limited.verdict is not None and limited.verdict.rate_limited
    assert limited.verdict.retry_after == 0.5
    assert bare.verdict is not None and bare.verdict.rate_limited
    # Only sFOX has a route cooldown for a bare 429; the others use the venue's cooldown.
    assert bare.verdict.retry_after == (10.0 if venue == "sfox" else None)
    for answer in (error, unavailable):
        assert answer.verdict is not None and answer.verdict.kind is VerdictKind.TRANSIENT
        assert not answer.malformed and not answer.verdict.rate_limited
    for answer in (junk, truncated, malformed):
        assert answer.malformed, answer
        assert answer.verdict is not None and answer.verdict.kind is VerdictKind.TRANSIENT
    assert moved.verdict is not None and moved.verdict.redirect
    assert moved.verdict.kind is VerdictKind.AUTH_REFUSED
    assert sorted(good.ids) == sorted(keys) and good.last.complete
    assert outcome in (Outcome.CANCELED, Outcome.CANCEL_PENDING)
    assert sim.list_requests == 8 + len(good.answers)


async def test_a_dropped_list_connection_is_a_transport_error(
    serve_simulators: ServeSimulators,
) -> None:
    from batchcancel.errors import TransientVenueError

    sim = simulator("tanx", faults=FaultPlan().script_list(Fault.DROP))
    async with serve(serve_simulators, sim) as client:
        with pytest.raises(TransientVenueError):
            await client.reply(ListPage(ListTarget(state="wait")))
        answer = await client.page(ListPage(ListTarget(state="wait")))
    assert answer.flat


WRONG = {k: f"wrong-{n}" for n, k in enumerate(CREDENTIALS)}


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_refused_credentials_on_a_list(serve_simulators: ServeSimulators, venue: str) -> None:
    """Wrong credentials: the list route refuses as the cancel route does, read as auth
    refused; no secret in the reason."""
    sim = simulator(venue)
    place_book(sim, venue, 2)
    wrong = adapter(venue, WRONG)
    async with serve(serve_simulators, sim) as client:
        answer = await client.page(ListPage(plain_target(venue)), using=wrong)
    assert answer.verdict is not None and answer.verdict.kind is VerdictKind.AUTH_REFUSED
    assert sim.auth_refused == 1 and sim.list_requests == 1
    assert not any(secret in answer.verdict.reason for secret in (*SECRET_VALUES, *WRONG.values()))


async def test_etna_app_key_and_token_are_both_checked(serve_simulators: ServeSimulators) -> None:
    sim = simulator("etna")
    place_book(sim, "etna", 1)
    bad_key = dict(CREDENTIALS, BATCHCANCEL_ETNA_APP_KEY="nope")
    bad_token = dict(CREDENTIALS, BATCHCANCEL_ETNA_TOKEN="nope")
    async with serve(serve_simulators, sim) as client:
        replies = [
            await client.reply(ListPage(plain_target("etna")), using=adapter("etna", c))
            for c in (bad_key, bad_token)
        ]
    assert [r.status for r in replies] == [403, 401]
    verdicts = [
        adapter("etna").classify_list(ListPage(plain_target("etna")), r).verdict for r in replies
    ]
    assert [v.kind if v else None for v in verdicts] == [VerdictKind.AUTH_REFUSED] * 2


async def test_zebpay_signature_and_stale_timestamp_on_a_list(
    serve_simulators: ServeSimulators,
) -> None:
    """A wrong secret is "Invalid signature" (auth refused); a stale timestamp is transient
    once, auth refused if it repeats (as for cancels)."""
    sim = simulator("zebpay")
    place_book(sim, "zebpay", 1)
    target = plain_target("zebpay")
    wrong_secret = adapter("zebpay", dict(CREDENTIALS, BATCHCANCEL_ZEBPAY_API_SECRET="x"))
    venue = adapter("zebpay")
    async with serve(serve_simulators, sim) as client:
        signature = await client.page(ListPage(target), using=wrong_secret)
        request = venue.build_list(ListPage(target), now=time.time() - 120)
        stale = venue.classify_list(
            ListPage(target), await send(client.session, client.base, request, timeout=TIMEOUT)
        )
    assert signature.verdict is not None and signature.verdict.kind is VerdictKind.AUTH_REFUSED
    assert stale.verdict is not None and stale.verdict.kind is VerdictKind.TRANSIENT
    assert stale.verdict.escalate_on_repeat


# -- [A] forms read robustly -------------------------------------------------------------------


async def test_tanx_ids_up_to_two_to_the_53_minus_one_list_exactly(
    serve_simulators: ServeSimulators,
) -> None:
    sim = simulator("tanx")
    sim.place(str(MAX_ORDER_ID))
    sim.place("9007199254740990")
    async with serve(serve_simulators, sim) as client:
        walk = await client.walk(ListTarget(state="wait"))
        outcome = await client.cancel(walk.orders[0])
    assert walk.ids == ["9007199254740990", str(MAX_ORDER_ID)]  # newest first
    assert outcome is Outcome.CANCELED


def _tanx_page(*rows: object) -> dict[str, object]:
    return {"status": "success", "message": "Orders Retrieved Successfully", "payload": list(rows)}


# (venue, canned body, ids expected, or None for a malformed page)
ROBUST_CASES: list[tuple[str, object, list[str] | None]] = [
    # sFOX: ids as strings or numbers, unknown status working, closed codes, extra fields.
    (
        "sfox",
        [
            {"id": "12", "pair": "btcusd", "action": "Buy", "status": "Started", "x": [1]},
            {"id": 11, "status": "Weird new state"},
            {"id": 10, "status_code": "210"},
            {"id": 9, "status": "Done", "status_code": 300},
            {"id": 8},
        ],
        ["12", "11", "8"],
    ),
    ("sfox", [{"id": 3, "status": "Started"}, "junk"], None),
    ("sfox", [{"id": None, "status": "Started"}], None),
    ("sfox", [{"id": 1.5}], None),
    ("sfox", {"orders": []}, None),  # an object, not the bare array: refused, not malformed
    # ETNA: ids as strings, TotalCount as a string, unknown status working, closed names.
    (
        "etna",
        {
            "Result": [
                {"Id": "5", "AccountId": "77", "Status": "Held"},
                {"Id": 4, "AccountId": 77, "Status": "SomethingNew"},
                {"Id": 3, "AccountId": 77, "Status": "DoneForDay"},
                {"Id": 2, "AccountId": 77, "Status": "Canceled", "Extra": {}},
            ],
            "NextPageLink": "",
            "TotalCount": "4",
        },
        ["5", "4"],
    ),
    ("etna", {"Result": [{"Id": "x5", "AccountId": 77}], "TotalCount": 1}, None),
    ("etna", {"Result": [{"Id": 6, "Status": "New"}], "TotalCount": 1}, ["6"]),  # no AccountId
    ("etna", {"Message": "Authorization has been denied"}, None),  # an error in a 200
    ("etna", {"Result": None, "TotalCount": 0}, None),
    # Crux: total as a string, an order with any line not closed is working.
    (
        "crux",
        {
            "total_results": "3",
            "orders": [
                {
                    "uuid": str(uuid.UUID(int=1)),
                    "line_items": [{"status": "Cancelled"}, {"status": "Backordered"}],
                },
                {
                    "uuid": str(uuid.UUID(int=2)),
                    "line_items": [{"status": "Cancelled"}, {"status": "HasTracking"}],
                },
                {"uuid": str(uuid.UUID(int=3)).upper(), "line_items": []},
            ],
        },
        [str(uuid.UUID(int=1)), str(uuid.UUID(int=3)).upper()],
    ),
    ("crux", {"total_results": 1, "orders": [{"uuid": "not-a-uuid"}]}, None),
    ("crux", {"total_results": 5, "orders": []}, None),
    # tanX: {} for an empty payload, ids as strings, 2^53 out of range, floats refused.
    ("tanx", {"status": "success", "message": "ok", "payload": {}}, []),
    ("tanx", _tanx_page({"id": "42", "state": "wait"}, {"id": 41, "state": "done"}), ["42"]),
    ("tanx", _tanx_page({"id": 2**53, "state": "wait"}), None),
    ("tanx", {"status": "success", "message": "No orders found", "payload": []}, []),
    ("tanx", {"status": "error", "message": "Something went wrong", "payload": ""}, None),
    ("tanx", _tanx_page({"id": 7.0, "state": "wait"}), None),
    ("tanx", _tanx_page({"id": True, "state": "wait"}), None),
    # ZebPay: `items` for the inner data, statuses read case-insensitively.
    (
        "zebpay",
        {
            "statusDescription": "OK",
            "statusCode": "200",
            "data": {
                "items": [
                    {"clientOrderId": "k1", "symbol": "BTCUSDT", "status": "NEW"},
                    {"clientOrderId": "k2", "symbol": "BTCUSDT", "status": "Filled"},
                    {"clientOrderId": "k3", "symbol": "BTCUSDT", "status": "untriggered"},
                ],
                "totalCount": 3,
                "nextTimestamp": None,
            },
        },
        ["k1", "k3"],
    ),
    (
        "zebpay",
        {"statusDescription": "OK", "statusCode": 200, "data": {"data": [{"symbol": "BTCUSDT"}]}},
        None,
    ),
    ("zebpay", {"statusDescription": "OK", "statusCode": 200, "data": []}, None),
    (
        "zebpay",
        {
            "statusDescription": "No open orders found",
            "statusCode": 200,
            "data": {"data": [], "totalCount": 0, "nextTimestamp": None},
        },
        [],
    ),
    ("zebpay", {"statusDescription": "Bad request", "statusCode": 400, "data": {}}, None),
]


@pytest.mark.parametrize(
    ("venue", "body", "ids"),
    [pytest.param(*case, id=f"{case[0]}-{n}") for n, case in enumerate(ROBUST_CASES)],
)
async def test_assumed_forms_are_read_robustly(
    serve_simulators: ServeSimulators, venue: str, body: object, ids: list[str] | None
) -> None:
    sim = simulator(venue, faults=FaultPlan().script_list(Answer.json(200, body)))
    async with serve(serve_simulators, sim) as client:
        answer = await client.page(ListPage(plain_target(venue)))
    if ids is None:
        assert not answer.usable and answer.orders == ()
        assert answer.malformed or answer.refused
        assert answer.verdict is not None and answer.verdict.kind is VerdictKind.TRANSIENT
    else:
        assert answer.usable, answer.verdict
        assert [o.order_id for o in answer.orders] == ids


@pytest.mark.parametrize("venue", VENUE_PARAMS)
def test_classify_list_never_raises(venue: str) -> None:
    """Random JSON of every shape, at every status the venues use: always a ListAnswer."""
    rng = random.Random(venue)
    venue_adapter = adapter(venue)
    page = ListPage(plain_target(venue))

    def value(depth: int) -> object:
        kind = rng.randrange(9 if depth < 3 else 6)
        scalars: list[object] = [None, True, 1, -1, 2**64, 1.5, "", "wait", "new", "Started"]
        if kind < 6:
            return rng.choice(scalars)
        if kind < 8:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = [
            "id",
            "Id",
            "uuid",
            "clientOrderId",
            "status",
            "Status",
            "state",
            "data",
            "items",
            "payload",
            "orders",
            "Result",
            "statusCode",
            "line_items",
            "TotalCount",
            "total_results",
            "nextTimestamp",
            "AccountId",
            "symbol",
        ]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(5))}

    for _ in range(400):
        body = json.dumps(value(0)).encode()
        status = rng.choice([200, 200, 200, 204, 400, 401, 403, 404, 409, 422, 429, 500])
        answer = venue_adapter.classify_list(page, Reply(status, {}, body))
        assert isinstance(answer, ListAnswer)
        assert answer.usable or answer.orders == ()


def test_capabilities_are_declared() -> None:
    """What the engine plans with, without a probe."""
    table = {
        name: (
            cls.list_page_size,
            cls.list_needs_account,
            cls.list_needs_symbol,
            cls.list_states,
            sorted(cls.list_fields),
            cls.list_limit is not None,
        )
        for name, cls in ((n, cast("type[ListVenue]", c)) for n, c in VENUES.items())
    }
    assert table == {
        "sfox": (50, False, False, (), ["side", "symbol"], True),
        "etna": (100, True, False, (), ["account_id", "side", "symbol"], False),
        "crux": (100, False, False, (), [], False),
        "tanx": (50, False, False, ("wait", "pending"), ["side", "symbol"], False),
        "zebpay": (100, False, True, (), ["side", "symbol"], False),
    }
    assert all(supports_list(cls) for cls in VENUES.values())


async def test_a_page_larger_than_a_cancel_answer_needs_the_list_body_limit(
    serve_simulators: ServeSimulators,
) -> None:
    """A full sFOX page of large rows (about 150 KiB): cut short by the cancel's 64 KiB body
    limit it reads as malformed, never as a shorter complete list; read with LIST_MAX_BODY it
    is the full page."""
    rows = [{"id": 1000 - n, "status": "Started", "pad": "x" * 3000} for n in range(50)]
    plan = FaultPlan().script_list(Answer.json(200, rows), Answer.json(200, rows))
    sim = simulator("sfox", faults=plan)
    venue = adapter("sfox")
    page = ListPage(ListTarget())
    async with serve(serve_simulators, sim) as client:
        request = venue.build_list(page, now=0)
        short = await send(client.session, client.base, request, timeout=TIMEOUT)
        full = await send(
            client.session, client.base, request, timeout=TIMEOUT, max_body=LIST_MAX_BODY
        )
    cut, whole = venue.classify_list(page, short), venue.classify_list(page, full)
    assert cut.malformed and not cut.usable and not cut.complete
    assert whole.usable and len(whole.orders) == 50 and not whole.complete
    assert whole.next == ListPage(ListTarget(), "951")


async def test_etna_total_count_wins_over_a_missing_next_link(
    serve_simulators: ServeSimulators,
) -> None:
    """A page with no NextPageLink but a TotalCount it does not cover is not the last."""
    body = {
        "Result": [{"Id": 9, "AccountId": 77, "Status": "New"}],
        "NextPageLink": None,
        "TotalCount": 150,
    }
    sim = simulator("etna", faults=FaultPlan().script_list(Answer.json(200, body)))
    async with serve(serve_simulators, sim) as client:
        answer = await client.page(ListPage(plain_target("etna")))
    assert answer.usable and not answer.complete
    assert answer.next == ListPage(plain_target("etna"), "1")


async def test_etna_orders_seeded_without_an_account_list_under_the_default(
    serve_simulators: ServeSimulators,
) -> None:
    """`seed()` names no account: such orders list under `default_account` when it is set,
    beside orders placed with that account, and never under another account."""
    sim = simulator("etna")
    sim.seed({"500001": OrderState.OPEN, "500002": OrderState.OPEN})
    placed = sim.place_many(2, account_id=ACCOUNT)
    other = sim.place_many(1, account_id="78")
    async with serve(serve_simulators, sim) as client:
        hidden = await client.walk(plain_target("etna"))
        cast(EtnaSimulator, sim).default_account = ACCOUNT
        shown = await client.walk(plain_target("etna"))
        elsewhere = await client.walk(ListTarget(account_id="78"))
    assert sorted(hidden.ids) == sorted(placed)
    assert sorted(shown.ids) == sorted(["500001", "500002", *placed])
    assert elsewhere.ids == other
    assert sim.list_paths[0] == (
        f"/etna/v1.0/accounts/{ACCOUNT}/orders?pageNumber=0&pageSize=100&sortField=Id&desc=true"
    )


@pytest.mark.parametrize("venue", VENUE_PARAMS)
async def test_json_nested_past_the_recursion_limit_is_a_malformed_page(
    serve_simulators: ServeSimulators, venue: str
) -> None:
    """A page Python's JSON reader cannot even parse (it raises RecursionError): malformed,
    as unreadable as a body that is not JSON."""
    deep = Answer(200, b"[" * 60_000 + b"]" * 60_000)
    sim = simulator(venue, faults=FaultPlan().script_list(deep))
    page = ListPage(plain_target(venue))
    async with serve(serve_simulators, sim) as client:
        request = client.adapter.build_list(page, now=time.time())
        reply = await send(
            client.session, client.base, request, timeout=TIMEOUT, max_body=LIST_MAX_BODY
        )
    answer = client.adapter.classify_list(page, reply)
    assert len(reply.body) == 120_000
    assert answer.malformed and not answer.usable and answer.orders == ()
    assert answer.verdict is not None and "not JSON" in answer.verdict.reason.replace(" a ", " ")
