"""Records of the venues' own books (`--from-venues`): the orders a list showed working, joined
to the run (one order when the input named it too), and each venue's verdict.

Every write is fenced by the venue's lane lease and chained like every other fact: a list
that added orders is a `listed` fact naming the request that showed them; a verdict a `book`
fact. The list requests themselves are rows of the requests table (kind `list`, sweeps.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.chain import Chains, stamp
from batchcancel.audit.db import Database
from batchcancel.audit.leases import Leases
from batchcancel.audit.orders import set_orders
from batchcancel.audit.records import PENDING, BookRecord, KnownOrder
from batchcancel.audit.tables import Book, Order

__all__ = ["Books"]

_orders: Final = cast(sa.Table, Order.__table__)
_books: Final = cast(sa.Table, Book.__table__)
_BOOK_COLUMNS: Final = tuple(c.name for c in _books.columns if c.name not in ("run_id", "venue"))


class Books:
    """The orders lists add to a run, and the books table (fenced by `leases`)."""

    def __init__(
        self, db: Database, *, leases: Leases, clean: Callable[[str], str], chains: Chains
    ) -> None:
        self._db = db
        self._leases = leases
        self._clean = clean
        self._chains = chains

    def add_listed(
        self,
        run_id: str,
        venue: str,
        request_pk: int,
        listed: Sequence[tuple[str, str, str]],
    ) -> list[KnownOrder]:
        """The run's orders for these (order id, account id, symbol) a list request showed
        working: those the run did not hold are recorded now (seq 0, pending, `listed_by` the
        request); one the input named keeps its row and learns the request that listed it.
        LaneLostError, and nothing written, once another worker holds the venue's lane."""
        wanted = {self._clean(order_id): (order_id, a, s) for order_id, a, s in listed}
        if not wanted:
            return []
        known: list[KnownOrder] = []
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, venue)
            rows = conn.execute(
                sa.select(
                    _orders.c.pk,
                    _orders.c.order_id,
                    _orders.c.state,
                    _orders.c.outcome,
                    _orders.c.seq,
                    _orders.c.listed_by,
                ).where(
                    _orders.c.run_id == run_id,
                    _orders.c.venue == venue,
                    _orders.c.order_id.in_(list(wanted)),
                )
            ).all()
            first_listing = []
            for pk, order_id, state, outcome, seq, listed_by in rows:
                if order_id not in wanted:
                    continue  # a second row of one id (a duplicate input): the first speaks
                del wanted[order_id]
                known.append(KnownOrder(int(pk), order_id, state, outcome, seq > 0, False))
                if listed_by is None:
                    first_listing.append(int(pk))
            if first_listing:
                set_orders(
                    conn, facts, [_orders.c.pk.in_(first_listing)], {"listed_by": request_pk}
                )
            added = []
            for order_id, (_, account_id, symbol) in wanted.items():
                row = {
                    "seq": 0,
                    "venue": venue,
                    "order_id": order_id,
                    "account_id": self._clean(account_id),
                    "symbol": self._clean(symbol),
                    "state": PENDING,
                    "outcome": None,
                    "reason": "",
                    "attempts": 0,
                    "last_http_status": None,
                    "listed_by": request_pk,
                }
                pk = int(
                    conn.execute(
                        _orders.insert().values(run_id=run_id, **row).returning(_orders.c.pk)
                    ).scalar_one()
                )
                added.append({"pk": pk, **row, "first_sent_at": None, "last_answer_at": None})
                known.append(KnownOrder(pk, order_id, PENDING, None, False, True))
            if added:
                facts.append({"t": "listed", "request": request_pk, "orders": added})
        return known

    def scope_values(self, run_id: str, venue: str) -> tuple[list[str], list[str]]:
        """The account ids and symbols the run's input orders of a venue name (what ETNA and
        ZebPay need to be listed at all)."""
        with self._db.read() as conn:
            where = (_orders.c.run_id == run_id, _orders.c.venue == venue, _orders.c.seq > 0)
            accounts = conn.execute(
                sa.select(_orders.c.account_id).where(*where, _orders.c.account_id != "").distinct()
            ).scalars()
            symbols = conn.execute(
                sa.select(_orders.c.symbol).where(*where, _orders.c.symbol != "").distinct()
            ).scalars()
            return sorted(accounts), sorted(symbols)

    def record_book(self, run_id: str, record: BookRecord) -> None:
        """Write a venue's verdict (replacing an earlier session's: a resume lists again)."""
        values: dict[str, Any] = {
            name: getattr(record, name) for name in _BOOK_COLUMNS if name != "detail"
        }
        values["detail"] = self._clean(record.detail)
        if values["started_at"] is None:
            raise ValueError("a book's verdict needs the time its listing started")
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, record.venue)
            key = (_books.c.run_id == run_id, _books.c.venue == record.venue)
            conn.execute(_books.delete().where(*key))
            conn.execute(_books.insert().values(run_id=run_id, venue=record.venue, **values))
            fact = {k: stamp(v) if hasattr(v, "isoformat") else v for k, v in values.items()}
            del fact["seconds_to_flat"]
            seconds = record.seconds_to_flat
            fact["seconds_to_flat_us"] = None if seconds is None else round(seconds * 1_000_000)
            facts.append({"t": "book", "venue": record.venue, **fact})

    def books(self, run_id: str) -> dict[str, BookRecord]:
        """Each venue's verdict, by venue name."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_books).where(_books.c.run_id == run_id).order_by(_books.c.venue)
            ).mappings()
            return {
                row["venue"]: BookRecord(
                    venue=row["venue"], **{name: row[name] for name in _BOOK_COLUMNS}
                )
                for row in rows
            }
