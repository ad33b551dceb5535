"""Cancel-all records: the requests that name no order (written ahead like every attempt),
the venues already swept, and the orders a cancel-all cancelled that the input did not list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, cast

import sqlalchemy as sa

from batchcancel.audit.db import Database
from batchcancel.audit.leases import Leases
from batchcancel.audit.records import BULK, DONE, SWEEP, SweptOrder, utcnow
from batchcancel.audit.tables import Attempt, Order, Request

__all__ = ["Sweeps"]

_orders: Final = cast(sa.Table, Order.__table__)
_attempts: Final = cast(sa.Table, Attempt.__table__)
_requests: Final = cast(sa.Table, Request.__table__)


class Sweeps:
    """The requests table, and the orders a cancel-all adds to a run (fenced by `leases`)."""

    def __init__(
        self, db: Database, *, leases: Leases, worker: str, clean: Callable[[str], str]
    ) -> None:
        self._db = db
        self._leases = leases
        self._worker = worker
        self._clean = clean

    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request about to leave (write-ahead); its key for `answer_request`.
        LaneLostError, and nothing written, once another worker holds the venue's lane."""
        with self._db.write() as conn:
            self._leases.require_lane(conn, run_id, venue)
            pk = conn.execute(
                _requests.insert()
                .values(
                    run_id=run_id,
                    venue=venue,
                    kind=kind,
                    target=self._clean(target),
                    worker=self._worker,
                    sent_at=utcnow(),
                    detail="",
                )
                .returning(_requests.c.pk)
            ).scalar_one()
        return int(pk)

    def answer_request(
        self,
        pk: int,
        *,
        answered_at: datetime,
        http_status: int | None,
        verdict: str,
        latency_ms: float,
        detail: str,
    ) -> None:
        """Record what came back for a request of `begin_request`."""
        with self._db.write() as conn:
            conn.execute(
                _requests.update()
                .where(_requests.c.pk == pk)
                .values(
                    answered_at=answered_at,
                    http_status=http_status,
                    verdict=verdict,
                    latency_ms=round(latency_ms, 3),
                    detail=self._clean(detail),
                )
            )

    def swept_venues(self, run_id: str) -> set[str]:
        """Venues of the run to which a cancel-all was ever sent (or was about to be): no
        later session sends one there again."""
        with self._db.read() as conn:
            return set(
                conn.execute(
                    sa.select(_requests.c.venue)
                    .where(_requests.c.run_id == run_id, _requests.c.kind == SWEEP)
                    .distinct()
                ).scalars()
            )

    def venue_order_ids(self, run_id: str, venue: str) -> list[str]:
        """Every order id of a venue in the run, whatever its state."""
        with self._db.read() as conn:
            return list(
                conn.execute(
                    sa.select(_orders.c.order_id).where(
                        _orders.c.run_id == run_id, _orders.c.venue == venue
                    )
                ).scalars()
            )

    def add_swept(
        self, run_id: str, venue: str, swept: Sequence[SweptOrder], *, sent_at: datetime
    ) -> int:
        """Record orders a cancel-all cancelled that the input did not list: each becomes an
        order of the run (seq 0: not from the source), final at once, with its one attempt."""
        with self._db.write() as conn:
            self._leases.require_lane(conn, run_id, venue)
            for order in swept:
                pk = conn.execute(
                    _orders.insert()
                    .values(
                        run_id=run_id,
                        seq=0,
                        venue=venue,
                        order_id=self._clean(order.order_id),
                        account_id="",
                        symbol=self._clean(order.symbol),
                        state=DONE,
                        outcome=order.outcome,
                        reason=self._clean(order.reason),
                        attempts=1,
                        last_http_status=order.http_status,
                        first_sent_at=sent_at,
                        last_answer_at=order.answered_at,
                    )
                    .returning(_orders.c.pk)
                ).scalar_one()
                conn.execute(
                    _attempts.insert().values(
                        order_pk=pk,
                        attempt=1,
                        run_id=run_id,
                        worker=self._worker,
                        kind=BULK,
                        sent_at=sent_at,
                        answered_at=order.answered_at,
                        http_status=order.http_status,
                        verdict=order.outcome,
                        latency_ms=round(order.latency_ms, 3),
                        detail=self._clean(order.detail),
                    )
                )
        return len(swept)
