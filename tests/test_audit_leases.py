"""write_batch across a lane takeover, in one process, on SQLite and PostgreSQL: the fence
keeps a displaced worker's begins out and its answers off rows the new holder closed.
(The multi-process cases, SIGSTOP and clock skew, are tests/test_fencing.py.)"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from batchcancel.audit.db import Database
from batchcancel.audit.store import Answer, AuditStore, Begin, PlannedOrder
from tests.test_hotpath import AT, attempts, lanes, orders, rows


class TestWriteBatchAcrossATakeover:
    def test_lost_lane_writes_no_begin_and_only_late_answers(self, audit_url: str) -> None:
        """Once another worker took the lane over, write_batch reports it lost, writes none
        of its begins, and its answers reach only attempts still open; another lane's
        writes in the same batch commit."""
        old, new = AuditStore(audit_url), AuditStore(audit_url)
        try:
            run_id = old.create_run(
                command="run",
                run_key=None,
                source="t",
                options={},
                reason="",
                command_line="t",
                dry_run=False,
            )
            planned = [
                PlannedOrder(1, "sfox", "S1", "", ""),
                PlannedOrder(2, "sfox", "S2", "", ""),
                PlannedOrder(3, "etna", "E1", "a", ""),
            ]
            old.add_orders(run_id, planned)
            s1, s2, e1 = (
                o.pk
                for v in ("sfox", "etna")
                for o in old.pending_page(run_id, v, after_pk=0, limit=9)
            )
            assert old.claim_lanes(run_id, ["sfox", "etna"], limit=2, lease=60) == {
                "etna": 0.0,
                "sfox": 0.0,
            }
            at = AT
            assert (
                old.write_batch(
                    run_id, [Begin(s1, 1, at, venue="sfox"), Begin(s2, 1, at, venue="sfox")], []
                )
                == set()
            )
            with new.engine.begin() as conn:  # the lease ran out: the database hands it on
                conn.execute(
                    lanes.update()
                    .where(lanes.c.venue == "sfox")
                    .values(lease_until=datetime(2000, 1, 1))
                )
            assert new.claim_lanes(run_id, ["sfox"], limit=1, lease=60) == {"sfox": 0.0}
            new.release_in_flight(run_id, "sfox", [s2])  # the new holder closes S2's attempt

            def answer(pk: int, venue: str) -> Answer:
                return Answer(pk, 1, at, 200, "canceled", 1.0, "HTTP 200", "canceled", "", venue)

            lost = old.write_batch(
                run_id,
                [Begin(e1, 1, at, venue="etna"), Begin(s1, 2, at, venue="sfox")],
                [answer(s1, "sfox"), answer(s2, "sfox")],
            )
            assert lost == {"sfox"}
            assert not old.holds_lane(run_id, "sfox") and old.holds_lane(run_id, "etna")
        finally:
            old.close()
            new.close()
        got = rows_of(
            audit_url,
            sa.select(attempts.c.order_pk, attempts.c.attempt, attempts.c.verdict).order_by(
                attempts.c.order_pk, attempts.c.attempt
            ),
        )
        assert got == [
            {"order_pk": s1, "attempt": 1, "verdict": "canceled"},  # late, reached the open row
            {"order_pk": s2, "attempt": 1, "verdict": "transient"},  # closed by the new holder
            {"order_pk": e1, "attempt": 1, "verdict": None},  # the other lane's begin
        ]
        states = rows_of(
            audit_url,
            sa.select(orders.c.pk, orders.c.state, orders.c.outcome).order_by(orders.c.pk),
        )
        assert states == [
            {"pk": s1, "state": "sending", "outcome": None},  # the order is the new holder's
            {"pk": s2, "state": "pending", "outcome": None},
            {"pk": e1, "state": "sending", "outcome": None},
        ]


def rows_of(url: str, query: sa.Select[Any]) -> list[Mapping[str, Any]]:
    database = Database(url)
    try:
        return list(rows(database, query))
    finally:
        database.dispose()
