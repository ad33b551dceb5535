"""Listing a venue's own book (VENUES.md "List open"), sans-I/O: the walk's value types and the
helpers every adapter's `classify_list` shares."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from batchcancel.venues.parsing import early_verdict, excerpt, is_integer_id
from batchcancel.venues.values import OrderRow, Reply, Verdict

__all__ = [
    "LIST_MAX_BODY",
    "ListAnswer",
    "ListPage",
    "ListTarget",
    "ListedOrder",
    "RouteLimit",
    "Unreadable",
    "id_field",
    "in_scope",
    "int_field",
    "list_failure",
    "list_page",
    "malformed_list",
    "never_raises",
    "refused_list",
    "side_of",
    "symbol_key",
    "text_field",
]

# -- listing a venue's own book (VENUES.md "List open"; SPEC.md "The venues' own books") ------
#
# A list walk is a sequence of pages for one `ListTarget` (ETNA: one account; ZebPay: one
# symbol; tanX: one state; sFOX and Crux: the whole book, or one symbol/side where the venue
# filters). `build_list(page)` is the exact request for a page; `classify_list(page, reply)`
# reads the answer into a `ListAnswer`. The adapter applies the target's scope to every row it
# reads as well (a venue that ignored a filter touches nothing outside the scope), and keeps
# only working orders. Nothing here does I/O.


# A list page is larger than a cancel answer (up to 100 orders with all their fields): send
# list requests with `transport.send(..., max_body=LIST_MAX_BODY)`. A page cut short by a
# smaller limit reads as malformed, never as a shorter, complete list.
LIST_MAX_BODY: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """A limit of its own on one route, on top of the venue's (sFOX's list route)."""

    rate_limit: int  # requests per period
    period: float  # seconds
    cooldown: float  # pause of this route after a 429 on it (the venue has no Retry-After)


@dataclass(frozen=True, slots=True)
class ListTarget:
    """What one list walk covers. '' is "not narrowed". `symbol` and `side` are scope filters;
    `account_id` (ETNA), `symbol` (ZebPay) and `state` (tanX) are also what the venue needs."""

    account_id: str = ""
    symbol: str = ""  # as the operator wrote it; each adapter normalises it for its venue
    side: str = ""  # "buy" | "sell" | ""
    state: str = ""  # tanX: one state per walk ("wait", "pending")


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a walk: the target and the venue's cursor (None: the first page). The
    cursor is an opaque string (sFOX `before` id, ETNA page number, Crux start, tanX page), so
    it can be written to the audit and read back on resume."""

    target: ListTarget
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ListedOrder:
    """One working order a list showed: the row to cancel it by, and what the venue said."""

    venue: str
    order_id: str  # the cancel id, as OrderRow.order_id (tanX: decimal digits)
    account_id: str = ""
    symbol: str = ""
    side: str = ""  # "buy" | "sell" | "" (the venue gave none)
    state: str = ""  # the venue's own status word, as sent
    # The venue itself says a cancel is under way (sFOX "Cancel Pending", ETNA "PendingCancel").
    # Crux, tanX and ZebPay cannot say so: a pending cancel there lists as a plain working order.
    cancel_pending: bool = False

    def row(self) -> OrderRow:
        """The order as a row of the run."""
        return OrderRow(self.venue, self.order_id, self.account_id, self.symbol)


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """An adapter's reading of one list page.

    `verdict` is None for a usable list; otherwise it says why the page is not one, as for a
    cancel: transient (5xx, unparsable, a malformed page: `malformed` True), rate limited
    (`rate_limited`, `retry_after`), auth refused, or a 3xx (`redirect`). A page that is not
    usable lists nothing and proves nothing.

    `orders` are the working orders in scope, in the venue's order. `complete` is True when
    this page is the last of its walk (shorter than the limit, a total covered, a null cursor):
    a complete *first* page with no orders is the proof of a flat book for its target. `next`
    is the following page; None when complete, or when the venue cannot page (ZebPay: cancel,
    then list again).
    """

    verdict: Verdict | None
    orders: tuple[ListedOrder, ...] = ()
    complete: bool = False
    next: ListPage | None = None
    rows: int = 0  # rows on the page, working or not, in scope or not
    closed: int = 0  # rows in scope that are not working (filled, cancelled...)
    out_of_scope: int = 0  # working rows outside the target's scope (never to be touched)
    malformed: bool = False  # the page, or an entry of it, could not be read
    refused: bool = False  # the venue answered with an error (a 4xx, an error envelope)

    @property
    def usable(self) -> bool:
        """The page could be read as a list."""
        return self.verdict is None

    @property
    def flat(self) -> bool:
        """This page, if it is the first of its walk, proves nothing is working in scope."""
        return self.verdict is None and self.complete and not self.orders

    @classmethod
    def failed(
        cls, verdict: Verdict, *, malformed: bool = False, refused: bool = False
    ) -> ListAnswer:
        """A page that is not a usable list."""
        return cls(verdict, malformed=malformed, refused=refused)


def list_failure(reply: Reply, *, auth: Sequence[int] = (401, 403)) -> ListAnswer | None:
    """What makes any list answer unusable before its body is read: a 3xx, 429, 5xx, or an
    auth refusal by status."""
    verdict = early_verdict(reply, auth)
    return ListAnswer.failed(verdict) if verdict is not None else None


def malformed_list(reply: Reply, why: str) -> ListAnswer:
    """A list page that cannot be read: transient (it says nothing about any order), marked
    malformed so that a venue whose list stays unreadable ends `not_flat` with the reason."""
    return ListAnswer.failed(
        Verdict.transient(f"malformed list answer (HTTP {reply.status}): {why}"), malformed=True
    )


_V = TypeVar("_V")


def never_raises(
    read: Callable[[_V, ListPage, Reply], ListAnswer],
) -> Callable[[_V, ListPage, Reply], ListAnswer]:
    """Wrap a `classify_list`: an answer it cannot read (JSON nested past the recursion limit,
    a shape nobody foresaw) is a malformed page, never an exception in the engine."""

    @functools.wraps(read)
    def guarded(self: _V, page: ListPage, reply: Reply) -> ListAnswer:
        try:
            return read(self, page, reply)
        except Exception as exc:  # the contract: a list answer never crashes the run
            return malformed_list(reply, f"unreadable ({type(exc).__name__})")

    return guarded


def refused_list(reply: Reply, message: str) -> ListAnswer:
    """A list answer that is an error (4xx, an error envelope): nothing listed. Retried as
    transient; the message is kept for a human."""
    text = excerpt(message.encode(errors="backslashreplace"), 120) if message.strip() else ""
    text = text or excerpt(reply.body, 120)
    return ListAnswer.failed(
        Verdict.transient(f"list refused, HTTP {reply.status}: {text}"), refused=True
    )


class Unreadable(ValueError):
    """An entry of a list page that cannot be read (raised and caught inside adapters)."""


def text_field(row: Mapping[str, object], *keys: str, required: bool = True) -> str:
    """A string field of a list row: a string, or a number given as one ([A] forms). '' when
    absent and not required; Unreadable when required and absent, or of another type."""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            raise Unreadable(f"{key} is a boolean")
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        raise Unreadable(f"{key} is not a string or an integer")
    if required:
        raise Unreadable(f"{'/'.join(keys)} missing")
    return ""


def id_field(row: Mapping[str, object], *keys: str, max_value: int | None = None) -> str:
    """An integer id of a list row (a JSON integer or its digits in a string) as its decimal
    string. A float is refused: it may have lost digits on the way."""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise Unreadable(f"{key} is not an integer id")
        text = value.strip() if isinstance(value, str) else str(value)
        if not is_integer_id(text):
            raise Unreadable(f"{key} {excerpt(text.encode(), 40)!r} is not an integer id")
        number = int(text)
        if max_value is not None and not 1 <= number <= max_value:
            raise Unreadable(f"{key} {number} is out of range 1..{max_value}")
        return str(number)
    raise Unreadable(f"{'/'.join(keys)} missing")


def side_of(value: str) -> str:
    """A venue's side word as "buy" / "sell", '' when it is neither."""
    word = value.strip().lower()
    return word if word in ("buy", "sell") else ""


def int_field(value: object) -> int | None:
    """A JSON count or cursor: an integer, or its digits in a string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def symbol_key(symbol: str) -> str:
    """A symbol compared across spellings: BTC-USD, btc/usd and BTCUSD are one."""
    return re.sub(r"[^a-z0-9]", "", symbol.lower())


def in_scope(target: ListTarget, order: ListedOrder, fields: frozenset[str]) -> bool:
    """True when a listed order is inside the target's scope. A filter the venue's rows do not
    carry (`fields`), or a row without the field, is outside: never touch what may not be ours."""
    if target.account_id and ("account_id" not in fields or order.account_id != target.account_id):
        return False
    if target.symbol and (
        "symbol" not in fields or symbol_key(order.symbol) != symbol_key(target.symbol)
    ):
        return False
    return not target.side or ("side" in fields and order.side == target.side)


def list_page(
    target: ListTarget,
    fields: frozenset[str],
    rows: Sequence[object],
    read: Callable[[Mapping[str, object]], tuple[ListedOrder, bool]],
    *,
    complete: bool,
    next_page: ListPage | None,
) -> ListAnswer:
    """A usable page from its rows: `read` gives each row's order and whether it is working,
    or raises Unreadable (the caller turns that into a malformed answer)."""
    orders: list[ListedOrder] = []
    closed = out = 0
    for item in rows:
        if not isinstance(item, dict):
            raise Unreadable("an entry is not an object")
        order, working = read(item)
        if not in_scope(target, order, fields):
            out += working
        elif working:
            orders.append(order)
        else:
            closed += 1
    return ListAnswer(
        None,
        tuple(orders),
        complete=complete,
        next=None if complete else next_page,
        rows=len(rows),
        closed=closed,
        out_of_scope=out,
    )
