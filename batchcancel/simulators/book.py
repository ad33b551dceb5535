"""A simulated venue's order book: orders and their states, what its list shows of them,
cancels and cancel-alls applied to it, and pending cancels that settle with time."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

__all__ = ["WORKING", "Arrival", "BookOrder", "OrderBook", "OrderState", "Runaway"]


class OrderState(StrEnum):
    """Where a simulated order stands."""

    OPEN = "open"  # a cancel completes at once
    OPEN_ASYNC = "open_async"  # a cancel is accepted and completes later (cancel pending)
    PENDING = "pending"  # a cancel is under way
    CANCELED = "canceled"
    FILLED = "filled"  # finished: nothing left to cancel


# The states a venue's list shows as working: a pending cancel is still working until it settles.
WORKING: Final = frozenset({OrderState.OPEN, OrderState.OPEN_ASYNC, OrderState.PENDING})


@dataclass(frozen=True, slots=True)
class BookOrder:
    """What a venue's list shows of an order besides its state. '' is the venue's default."""

    account_id: str = ""  # ETNA lists by account: an order without one lists under none
    symbol: str = ""
    side: str = ""  # "buy" | "sell"
    listed_as: str = ""  # the venue's status word while working (tanX "pending", ETNA "Held")
    created: float = 0.0  # time.time() when placed


@dataclass(frozen=True, slots=True)
class Runaway:
    """A runaway algorithm: `count` new working orders, one every `seconds / count`, starting
    at the simulator's first request (start="first_request") or when it starts serving
    (start="serve"). It stops by itself after `count` orders or `seconds` (plus one interval),
    whichever comes first; the keys it placed are in `Simulator.runaway_placed`."""

    count: int
    seconds: float
    account_id: str = ""
    symbol: str = ""
    side: str = ""
    state: OrderState = OrderState.OPEN
    start: Literal["first_request", "serve"] = "first_request"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One request as the simulator received it."""

    at: float  # time.time() at arrival
    key: str | None  # the order it was about, if any
    path: str


class OrderBook:
    """The book and the methods that change it; `Simulator` serves it over HTTP."""

    def __init__(self, *, settle_after: float) -> None:
        self.settle_after = settle_after
        self.book: dict[str, OrderState] = {}
        self.details: dict[str, BookOrder] = {}
        self.will_fill: set[str] = set()  # pending cancels that end filled instead
        self.pending_since: dict[str, float] = {}
        self.bulk_requests = 0  # bulk-cancel requests received
        self.bulk_ids: Counter[str] = Counter()  # times each order was named in a bulk cancel
        self.list_shows_closed = False  # also list cancelled and filled orders (as closed rows)
        self._serial = 0

    def new_key(self) -> str:
        """A fresh order key in the venue's id form (here: a number above every numeric key,
        so newer orders have larger ids, as sFOX's and tanX's do)."""
        top = max((int(k) for k in self.book if k.isdigit()), default=10**9)
        return str(top + 1)

    def _placed(self, key: str, order: BookOrder) -> None:
        """Hook: a venue keeping its own per-order tables (tanX markets, ZebPay symbols)."""

    # -- the book ---------------------------------------------------------------------------

    def seed(self, orders: Mapping[str, OrderState]) -> None:
        """Add orders to the book."""
        self.book.update(orders)

    def place(
        self,
        key: str | None = None,
        state: OrderState = OrderState.OPEN,
        *,
        account_id: str = "",
        symbol: str = "",
        side: str = "",
        listed_as: str = "",
    ) -> str:
        """Put one order in the book, as the venue's list will show it; its key (a fresh one
        from `new_key` when none is given). Newer orders list first."""
        if key is None:
            key = self.new_key()
        order = BookOrder(account_id, symbol, side.lower(), listed_as, time.time())
        self.book.pop(key, None)  # re-placed: it is the newest now
        self.book[key] = state
        self.details[key] = order
        self._placed(key, order)
        return key

    def place_many(
        self,
        count: int,
        state: OrderState = OrderState.OPEN,
        *,
        account_id: str = "",
        symbol: str = "",
        side: str = "",
        listed_as: str = "",
    ) -> list[str]:
        """`count` new orders with fresh keys, oldest first (see `place`); their keys."""
        return [
            self.place(
                None, state, account_id=account_id, symbol=symbol, side=side, listed_as=listed_as
            )
            for _ in range(count)
        ]

    def working_keys(self) -> list[str]:
        """The keys of the working orders (open, or with a cancel still pending), newest first."""
        return [k for k in reversed(self.book) if self.state_of(k) in WORKING]

    def listed_keys(self) -> list[str]:
        """What a list shows, newest first: the working orders, and the closed ones too when
        `list_shows_closed` is set."""
        if self.list_shows_closed:
            return [k for k in reversed(self.book) if self.state_of(k) is not None]
        return self.working_keys()

    def detail(self, key: str) -> BookOrder:
        """What the list shows of an order (defaults for one seeded without details)."""
        return self.details.get(key) or BookOrder()

    def state_of(self, key: str) -> OrderState | None:
        """The order's state, settling a pending cancel whose time has come."""
        state = self.book.get(key)
        if state is OrderState.PENDING:
            since = self.pending_since.get(key, 0.0)
            if time.monotonic() - since >= self.settle_after:
                state = OrderState.FILLED if key in self.will_fill else OrderState.CANCELED
                self.book[key] = state
        return state

    def cancel(self, key: str) -> OrderState | None:
        """Apply a cancel; return the state the order was in before it (None: unknown)."""
        state = self.state_of(key)
        if state is OrderState.OPEN:
            self.book[key] = OrderState.CANCELED
        elif state is OrderState.OPEN_ASYNC:
            self.book[key] = OrderState.PENDING
            self.pending_since[key] = time.monotonic()
        return state

    def sweep(self, keys: Iterable[str], limit: int | None = None) -> list[tuple[str, OrderState]]:
        """A cancel-all: cancel each open order among `keys` (at most `limit` of them), in
        order. Counted as one bulk request. The orders cancelled, each with its state before."""
        self.bulk_requests += 1
        swept: list[tuple[str, OrderState]] = []
        for key in keys:
            if limit is not None and len(swept) >= limit:
                break
            state = self.state_of(key)
            if state in (OrderState.OPEN, OrderState.OPEN_ASYNC):
                self.cancel(key)
                self.bulk_ids[key] += 1
                swept.append((key, state))
        return swept
