"""The order ledger: recording a run's orders, paging out those still to send, settling the
unsent, and closing what a dead or displaced holder left in flight."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.chain import Chains, Fact, stamp
from batchcancel.audit.db import Database
from batchcancel.audit.hotpath import ADD_ORDER
from batchcancel.audit.leases import Leases
from batchcancel.audit.records import (
    DONE,
    IN_FLIGHT_LOST,
    IN_FLIGHT_TAKEN_OVER,
    PENDING,
    SENDING,
    OrderToSend,
    PlannedOrder,
)
from batchcancel.audit.tables import Attempt, Order
from batchcancel.outcomes import FINAL, Outcome

__all__ = ["Ledger"]

# The fields of each loaded order a fact keeps (audit/verify.py reads them in this order).
_ORDER_FACT: Final = (
    "seq", "venue", "order_id", "account_id", "symbol", "state", "outcome", "reason",
)  # fmt: skip

_orders: Final = cast(sa.Table, Order.__table__)
_attempts: Final = cast(sa.Table, Attempt.__table__)


class Ledger:
    """The orders and attempts tables of every run, as the engine moves through them. A
    write to one venue's orders is fenced by `leases` (LaneLostError once the lane is lost)."""

    def __init__(
        self, db: Database, *, leases: Leases, clean: Callable[[str], str], chains: Chains
    ) -> None:
        self._db = db
        self._chains = chains
        self._leases = leases
        self._clean = clean

    def add_orders(self, run_id: str, planned: Iterable[PlannedOrder]) -> int:
        """Insert one chunk of planned orders; invalid ones are final at once."""
        invalid = Outcome.INVALID.value
        rows: list[dict[str, Any]] = [
            {
                "run_id": run_id,
                "seq": p.seq,
                "venue": p.venue,
                "order_id": p.order_id,
                "account_id": p.account_id,
                "symbol": p.symbol,
                "state": PENDING if p.invalid_reason is None else DONE,
                "outcome": None if p.invalid_reason is None else invalid,
                "reason": p.invalid_reason or "",
            }
            for p in planned
        ]
        # Every text of the chunk through clean() at once (0.35 s a million rows; each value
        # alone, 6 s): when nothing in it changes, nothing needs cleaning. A space joins
        # them: a match across two values can only make that check look too often.
        texts = ("venue", "order_id", "account_id", "symbol", "reason")
        joined = " ".join([" ".join([row[key] for row in rows]) for key in texts])
        if self._clean(joined) != joined:
            for row in rows:
                for key in texts:
                    row[key] = self._clean(row[key])
        if rows:
            with self._chains.recorded(run_id, "loader") as (conn, facts):
                conn.exec_driver_sql(self._db.sql(ADD_ORDER), rows)  # a million rows: plain SQL
                facts.append({"t": "orders", "rows": [[r[k] for k in _ORDER_FACT] for r in rows]})
        return len(rows)

    def max_seq(self, run_id: str) -> int:
        """The highest source row number recorded for the run (0 if none)."""
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.max(_orders.c.seq)).where(_orders.c.run_id == run_id)
            ).scalar()
        return int(value or 0)

    def order_count(self, run_id: str) -> int:
        """How many orders the run holds."""
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.count()).select_from(_orders).where(_orders.c.run_id == run_id)
            ).scalar()
        return int(value or 0)

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        """Orders still to send (or to confirm), per venue."""
        condition = (
            _orders.c.outcome == Outcome.CANCEL_PENDING.value
            if to_confirm
            else _orders.c.state != DONE
        )
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(_orders.c.venue, sa.func.count())
                .where(_orders.c.run_id == run_id, condition)
                .group_by(_orders.c.venue)
            ).all()
        return {venue: int(n) for venue, n in rows}

    def pending_page(
        self, run_id: str, venue: str, *, after_pk: int, limit: int, to_confirm: bool = False
    ) -> list[OrderToSend]:
        """The next orders of a venue still to send (or, `to_confirm`, whose cancel is still
        pending at the venue), in input order."""
        condition = (
            _orders.c.outcome == Outcome.CANCEL_PENDING.value
            if to_confirm
            else _orders.c.state == PENDING
        )
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(
                    _orders.c.pk,
                    _orders.c.venue,
                    _orders.c.order_id,
                    _orders.c.account_id,
                    _orders.c.symbol,
                    _orders.c.attempts,
                )
                .where(
                    _orders.c.run_id == run_id,
                    _orders.c.venue == venue,
                    _orders.c.pk > after_pk,
                    condition,
                )
                .order_by(_orders.c.pk)
                .limit(limit)
            ).all()
        return [OrderToSend(*row) for row in rows]

    def settle_unsent(self, run_id: str, venue: str | None, outcome: Outcome, reason: str) -> int:
        """Give every unsent order (of one venue, or all) a resumable outcome, e.g. skipped."""
        condition = [
            _orders.c.run_id == run_id,
            _orders.c.state == PENDING,
            sa.or_(_orders.c.outcome.is_(None), _orders.c.outcome == Outcome.SKIPPED.value),
        ]
        if venue is not None:
            condition.append(_orders.c.venue == venue)
        with self._chains.recorded(run_id) as (conn, facts):
            if venue is not None:
                self._leases.require_lane(conn, run_id, venue)
            values = {"outcome": outcome.value, "reason": self._clean(reason)}
            return set_orders(conn, facts, condition, values)

    def recover_in_flight(
        self, run_id: str, *, venue: str | None = None, reset_resumable: bool = True
    ) -> int:
        """Close attempts left unanswered by a dead process; their orders become resumable.

        Only for one venue when `venue` is given (a lane just taken over from a dead worker).
        With `reset_resumable`, failed and skipped orders lose that outcome: a new sending
        session retries them afresh (a confirm session leaves them alone).
        """
        in_run = [_orders.c.run_id == run_id]
        if venue is not None:
            in_run.append(_orders.c.venue == venue)
        order_pks = sa.select(_orders.c.pk).where(*in_run)
        with self._chains.recorded(run_id) as (conn, facts):
            if venue is not None:
                self._leases.require_lane(conn, run_id, venue)
            lost = set_attempts(
                conn,
                facts,
                [
                    _attempts.c.run_id == run_id,
                    _attempts.c.verdict.is_(None),
                    _attempts.c.order_pk.in_(order_pks),
                ],
                {"verdict": "transient", "detail": IN_FLIGHT_LOST},
            )
            set_orders(conn, facts, [*in_run, _orders.c.state == SENDING], {"state": PENDING})
            if reset_resumable:
                resumable = [*in_run, _orders.c.state == PENDING, _orders.c.outcome.is_not(None)]
                set_orders(conn, facts, resumable, {"outcome": None})
        return lost

    def reset_resumable(self, run_id: str, venue: str) -> None:
        """A new holder of the lane retries the venue's failed and skipped orders afresh."""
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, venue)
            resumable = [
                _orders.c.run_id == run_id,
                _orders.c.venue == venue,
                _orders.c.state == PENDING,
                _orders.c.outcome.is_not(None),
            ]
            set_orders(conn, facts, resumable, {"outcome": None})

    def in_flight_orders(self, run_id: str, venue: str) -> list[int]:
        """The venue's orders with an attempt in flight (the keys of their orders)."""
        with self._db.read() as conn:
            return list(
                conn.execute(
                    sa.select(_orders.c.pk).where(
                        _orders.c.run_id == run_id,
                        _orders.c.venue == venue,
                        _orders.c.state == SENDING,
                    )
                ).scalars()
            )

    def release_in_flight(
        self, run_id: str, venue: str, order_pks: Sequence[int]
    ) -> list[OrderToSend]:
        """Once the previous holder's request timeout is over, its in-flight orders: one whose
        attempt it answered after all (it recorded the answer late, fenced out of the order)
        takes that answer's outcome; the others' attempts are closed as lost and they become
        sendable again. Those orders, to send."""
        if not order_pks:
            return []
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, venue)
            rows = conn.execute(
                sa.select(
                    _orders.c.pk,
                    _orders.c.venue,
                    _orders.c.order_id,
                    _orders.c.account_id,
                    _orders.c.symbol,
                    _orders.c.attempts,
                    _attempts.c.verdict,
                    _attempts.c.detail,
                    _attempts.c.http_status,
                    _attempts.c.answered_at,
                )
                .select_from(
                    _orders.outerjoin(
                        _attempts,
                        sa.and_(
                            _attempts.c.order_pk == _orders.c.pk,
                            _attempts.c.attempt == _orders.c.attempts,
                        ),
                    )
                )
                .where(
                    _orders.c.run_id == run_id,
                    _orders.c.pk.in_(order_pks),
                    _orders.c.state == SENDING,
                )
                .order_by(_orders.c.pk)
            ).all()
            answered = [row for row in rows if row.verdict in FINAL]
            for row in answered:
                adopted = {
                    "state": DONE,
                    "outcome": row.verdict,
                    "reason": self._clean(
                        f"answered to the worker that lost the lane: {row.detail}"
                    ),
                    "last_http_status": row.http_status,
                    "last_answer_at": row.answered_at,
                }
                set_orders(conn, facts, [_orders.c.pk == row.pk], adopted)
            resend = [row for row in rows if row.verdict not in FINAL]
            pks = [row.pk for row in resend]
            if pks:
                lost = [_attempts.c.order_pk.in_(pks), _attempts.c.verdict.is_(None)]
                values = {"verdict": "transient", "detail": IN_FLIGHT_TAKEN_OVER}
                set_attempts(conn, facts, lost, values)
                set_orders(conn, facts, [_orders.c.pk.in_(pks)], {"state": PENDING})
        return [OrderToSend(*row[:6]) for row in resend]


def set_orders(
    conn: sa.Connection, facts: list[Fact], where: Sequence[Any], values: dict[str, Any]
) -> int:
    """UPDATE orders, and record which rows took which values (the chain's fact); how many."""
    statement = _orders.update().where(*where).values(**values).returning(_orders.c.pk)
    pks = [int(pk) for pk in conn.execute(statement).scalars()]
    if pks:
        facts.append({"t": "orders_set", "pks": pks, "values": _fact_values(values)})
    return len(pks)


def set_attempts(
    conn: sa.Connection, facts: list[Fact], where: Sequence[Any], values: dict[str, Any]
) -> int:
    """UPDATE attempts, and record which rows took which values; how many."""
    statement = (
        _attempts.update()
        .where(*where)
        .values(**values)
        .returning(_attempts.c.order_pk, _attempts.c.attempt)
    )
    keys = [[int(pk), int(n)] for pk, n in conn.execute(statement)]
    if keys:
        facts.append(
            {
                "t": "orders_set",
                "pks": [],
                "values": {},
                "attempts": keys,
                "attempt_values": _fact_values(values),
            }
        )
    return len(keys)


def _fact_values(values: dict[str, Any]) -> dict[str, Any]:
    return {k: stamp(v) if isinstance(v, datetime) else v for k, v in values.items()}
