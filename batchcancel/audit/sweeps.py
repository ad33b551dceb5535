"""Cancel-all records: the requests that name no order (written ahead like every attempt),
the venues already swept, and the orders a cancel-all cancelled that the input did not list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Final, cast

import sqlalchemy as sa

from batchcancel.audit.chain import Chains, micros, stamp
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
        self,
        db: Database,
        *,
        leases: Leases,
        worker: str,
        clean: Callable[[str], str],
        chains: Chains,
    ) -> None:
        self._db = db
        self._chains = chains
        self._request_runs: dict[int, str] = {}  # requests begun here, awaiting their answer
        self._leases = leases
        self._worker = worker
        self._clean = clean

    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request about to leave (write-ahead); its key for `answer_request`.
        LaneLostError, and nothing written, once another worker holds the venue's lane."""
        now = utcnow()
        row = {
            "venue": venue,
            "kind": kind,
            "target": self._clean(target),
            "worker": self._worker,
            "detail": "",
        }
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, venue)
            pk = int(
                conn.execute(
                    _requests.insert()
                    .values(run_id=run_id, sent_at=now, **row)
                    .returning(_requests.c.pk)
                ).scalar_one()
            )
            facts.append({"t": "request", "pk": pk, **row, "sent_at": stamp(now)})
        self._request_runs[pk] = run_id
        return pk

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
        run_id = self._request_runs.pop(pk, None)
        if run_id is None:
            with self._db.read() as conn:
                run_id = conn.execute(
                    sa.select(_requests.c.run_id).where(_requests.c.pk == pk)
                ).scalar_one()
        latency = round(latency_ms, 3)
        values = {"http_status": http_status, "verdict": verdict, "detail": self._clean(detail)}
        with self._chains.recorded(str(run_id)) as (conn, facts):
            conn.execute(
                _requests.update()
                .where(_requests.c.pk == pk)
                .values(answered_at=answered_at, latency_ms=latency, **values)
            )
            facts.append(
                {
                    "t": "request_answer",
                    "pk": pk,
                    "answered_at": stamp(answered_at),
                    "latency_us": micros(latency),
                    **values,
                }
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
        with self._chains.recorded(run_id) as (conn, facts):
            self._leases.require_lane(conn, run_id, venue)
            for order in swept:
                row = {
                    "seq": 0,
                    "venue": venue,
                    "order_id": self._clean(order.order_id),
                    "account_id": "",
                    "symbol": self._clean(order.symbol),
                    "state": DONE,
                    "outcome": order.outcome,
                    "reason": self._clean(order.reason),
                    "attempts": 1,
                    "last_http_status": order.http_status,
                }
                pk = conn.execute(
                    _orders.insert()
                    .values(
                        run_id=run_id,
                        first_sent_at=sent_at,
                        last_answer_at=order.answered_at,
                        **row,
                    )
                    .returning(_orders.c.pk)
                ).scalar_one()
                attempt = {
                    "run_id": run_id,
                    "worker": self._worker,
                    "kind": BULK,
                    "http_status": order.http_status,
                    "verdict": order.outcome,
                    "detail": self._clean(order.detail),
                }
                latency = round(order.latency_ms, 3)
                conn.execute(
                    _attempts.insert().values(
                        order_pk=pk,
                        attempt=1,
                        sent_at=sent_at,
                        answered_at=order.answered_at,
                        latency_ms=latency,
                        **attempt,
                    )
                )
                facts.append(
                    {
                        "t": "swept",
                        "pk": int(pk),
                        **row,
                        "first_sent_at": stamp(sent_at),
                        "last_answer_at": stamp(order.answered_at),
                        "attempt": {
                            **attempt,
                            "sent_at": stamp(sent_at),
                            "answered_at": stamp(order.answered_at),
                            "latency_us": micros(latency),
                        },
                    }
                )
        return len(swept)
