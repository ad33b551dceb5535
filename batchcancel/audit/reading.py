"""The store's own read-back for status, summaries and reports: counts per outcome and
state, and the order, attempt and request rows of a run, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.db import Database
from batchcancel.audit.records import CONFIRMED_PREFIX, SWEEP
from batchcancel.audit.tables import Attempt, Order, Request
from batchcancel.outcomes import Outcome

__all__ = ["Reading"]

_orders: Final = cast(sa.Table, Order.__table__)
_attempts: Final = cast(sa.Table, Attempt.__table__)
_requests: Final = cast(sa.Table, Request.__table__)


class Reading:
    """Read-only queries over one audit database (a failing read is an AuditError)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Orders per venue per outcome ("" for orders without one yet)."""
        # Grouped in the order of ix_orders_run_outcome, which SQLite then counts along
        # (a covering read of the index, no sort of the run's rows).
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_orders.c.venue, _orders.c.outcome, sa.func.count())
                .where(_orders.c.run_id == run_id)
                .group_by(_orders.c.outcome, _orders.c.venue)
            ).all()
        result: dict[str, dict[str, int]] = {}
        for venue, outcome, n in rows:
            result.setdefault(venue, {})[outcome or ""] = int(n)
        return {venue: dict(sorted(by.items())) for venue, by in sorted(result.items())}

    def state_counts(self, run_id: str) -> dict[str, int]:
        """Orders per state (pending / sending / done)."""
        # Grouped by venue too, the order of ix_orders_run_state, which SQLite counts along.
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_orders.c.state, sa.func.count())
                .where(_orders.c.run_id == run_id)
                .group_by(_orders.c.state, _orders.c.venue)
            ).all()
        result: dict[str, int] = {}
        for state, n in rows:
            result[state] = result.get(state, 0) + int(n)
        return dict(sorted(result.items()))

    def not_in_input(self, run_id: str) -> dict[str, int]:
        """Per venue, the orders a cancel-all cancelled that the input did not list."""
        with self._db.read() as conn:
            # Such an order is recorded only from the answer to a cancel-all, and a cancel-all
            # is recorded before it leaves: only venues that were sent one can hold any. This
            # spares every summary a walk over all the run's orders (no index holds seq).
            swept = (
                conn.execute(
                    sa.select(_requests.c.venue)
                    .where(_requests.c.run_id == run_id, _requests.c.kind == SWEEP)
                    .distinct()
                )
                .scalars()
                .all()
            )
            if not swept:
                return {}
            rows = conn.execute(
                sa.select(_orders.c.venue, sa.func.count())
                .where(
                    _orders.c.run_id == run_id,
                    _orders.c.venue.in_(swept),
                    _orders.c.seq == 0,
                    _orders.c.listed_by.is_(None),  # a list found it (--from-venues)
                )
                .group_by(_orders.c.venue)
            ).all()
        return {venue: int(n) for venue, n in rows}

    def filled_while_pending(self, run_id: str, limit: int = 20) -> list[tuple[str, str]]:
        """(venue, order_id) of orders whose pending cancel the confirm pass found filled."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_orders.c.venue, _orders.c.order_id)
                .where(
                    _orders.c.run_id == run_id,
                    _orders.c.outcome == Outcome.ALREADY_CLOSED.value,
                    _orders.c.reason.like(f"{CONFIRMED_PREFIX}%"),
                )
                .order_by(_orders.c.pk)
                .limit(limit)
            ).all()
        return [(venue, order_id) for venue, order_id in rows]

    def order_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order of a run in input order, streamed."""
        query = (
            sa.select(
                _orders.c.venue,
                _orders.c.order_id,
                _orders.c.account_id,
                _orders.c.symbol,
                _orders.c.outcome,
                _orders.c.reason,
                _orders.c.attempts,
                _orders.c.last_http_status,
                _orders.c.first_sent_at,
                _orders.c.last_answer_at,
            )
            .where(_orders.c.run_id == run_id)
            .order_by(_orders.c.pk)
        )
        yield from self._db.stream(query)

    def attempt_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every attempt of a run, by order then attempt number, streamed."""
        query = (
            sa.select(
                _orders.c.venue,
                _orders.c.order_id,
                _attempts.c.attempt,
                _attempts.c.sent_at,
                _attempts.c.answered_at,
                _attempts.c.http_status,
                _attempts.c.verdict,
                _attempts.c.latency_ms,
                _attempts.c.detail,
            )
            .join(_orders, _orders.c.pk == _attempts.c.order_pk)
            .where(_attempts.c.run_id == run_id)
            .order_by(_attempts.c.order_pk, _attempts.c.attempt)
        )
        yield from self._db.stream(query)

    def request_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order-less request of a run, in the order they were sent, streamed."""
        query = (
            sa.select(
                _requests.c.venue,
                _requests.c.kind,
                _requests.c.target,
                _requests.c.sent_at,
                _requests.c.answered_at,
                _requests.c.http_status,
                _requests.c.verdict,
                _requests.c.latency_ms,
                _requests.c.detail,
            )
            .where(_requests.c.run_id == run_id)
            .order_by(_requests.c.pk)
        )
        yield from self._db.stream(query)
