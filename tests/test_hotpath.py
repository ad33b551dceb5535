"""Each raw SQL statement of the hot path (batchcancel/audit/hotpath.py), the lane fence
included, run as the store runs it on a freshly migrated SQLite and PostgreSQL database,
and its effect checked row by row (write_batch across a takeover: test_audit_leases.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchcancel.audit import hotpath
from batchcancel.audit.db import Database
from batchcancel.audit.migrate import upgrade_to_head
from batchcancel.audit.tables import metadata
from batchcancel.errors import AuditError

RUN = "20260101T000000Z-abcdef"
AT = datetime(2026, 1, 2, 3, 4, 5, 123456)  # naive UTC with microseconds, as the audit keeps
orders = metadata.tables["orders"]
attempts = metadata.tables["attempts"]
lanes = metadata.tables["lanes"]


@pytest.fixture
def db(audit_url: str) -> Iterator[Database]:
    """A migrated audit database holding run RUN and nothing else."""
    database = Database(audit_url)
    upgrade_to_head(database.engine)
    with database.write() as conn:
        conn.execute(
            metadata.tables["runs"]
            .insert()
            .values(id=RUN, command="run", status="running", created_at=AT)
        )
    yield database
    database.dispose()


def run(db: Database, statement: str, params: list[dict[str, Any]] | dict[str, Any]) -> int:
    """Run a hot-path statement in the driver's style, committed; the rows it matched."""
    with db.write() as conn:
        return int(conn.exec_driver_sql(db.sql(statement), params).rowcount)


def rows(db: Database, query: sa.Select[Any]) -> list[Mapping[str, Any]]:
    with db.read() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def order(seq: int, order_id: str, *, state: str = "pending", outcome: str | None = None) -> dict:
    return {
        "run_id": RUN,
        "seq": seq,
        "venue": "sfox",
        "order_id": order_id,
        "account_id": f"acct-{seq}",
        "symbol": "BTC-USD",
        "state": state,
        "outcome": outcome,
        "reason": "" if outcome is None else "not a number",
    }


def add_two(db: Database) -> list[int]:
    """Orders A (pending) and B (invalid), through ADD_ORDER; their keys."""
    run(db, hotpath.ADD_ORDER, [order(1, "A"), order(2, "B", state="done", outcome="invalid")])
    with db.read() as conn:
        return list(conn.execute(sa.select(orders.c.pk).order_by(orders.c.pk)).scalars())


def begin(db: Database, pk: int, attempt: int, *, kind: str = "cancel", at: datetime = AT) -> None:
    """BEGIN_ATTEMPT then BEGIN_ORDER, as write_batch runs them for one begin."""
    stamp = db.stamp(at)
    run(
        db,
        hotpath.BEGIN_ATTEMPT,
        [
            {
                "pk": pk,
                "attempt": attempt,
                "run_id": RUN,
                "worker": "w",
                "kind": kind,
                "sent_at": stamp,
            }
        ],
    )
    run(db, hotpath.BEGIN_ORDER, [{"pk": pk, "attempt": attempt, "sent_at": stamp, "kind": kind}])


def answer_params(pk: int, attempt: int, verdict: str, detail: str = "HTTP 200") -> dict:
    return {
        "pk": pk,
        "attempt": attempt,
        "answered_at": None,
        "http_status": 200,
        "verdict": verdict,
        "latency_ms": 12.5,
        "detail": detail,
    }


class TestStatements:
    def test_add_order_inserts_each_row_as_given(self, db: Database) -> None:
        """ADD_ORDER stores every field of each row, with no attempts yet and no times."""
        a, b = add_two(db)
        got = rows(db, sa.select(orders).order_by(orders.c.pk))
        common = {"run_id": RUN, "venue": "sfox", "symbol": "BTC-USD", "attempts": 0}
        empty = {
            "last_http_status": None,
            "first_sent_at": None,
            "last_answer_at": None,
            "listed_by": None,  # an input order: no venue listing found it
        }
        assert got == [
            {
                "pk": a,
                "seq": 1,
                "order_id": "A",
                "account_id": "acct-1",
                "state": "pending",
                "outcome": None,
                "reason": "",
                **common,
                **empty,
            },
            {
                "pk": b,
                "seq": 2,
                "order_id": "B",
                "account_id": "acct-2",
                "state": "done",
                "outcome": "invalid",
                "reason": "not a number",
                **common,
                **empty,
            },
        ]

    def test_begin_attempt_writes_an_open_attempt(self, db: Database) -> None:
        """BEGIN_ATTEMPT writes the attempt row: who, what kind, when (to the microsecond),
        no answer yet."""
        a, _ = add_two(db)
        begin(db, a, 1)
        assert rows(db, sa.select(attempts)) == [
            {
                "order_pk": a,
                "attempt": 1,
                "run_id": RUN,
                "worker": "w",
                "kind": "cancel",
                "sent_at": AT,
                "answered_at": None,
                "http_status": None,
                "verdict": None,
                "latency_ms": None,
                "detail": "",
            },
        ]

    def test_begin_order_marks_a_cancel_in_flight_and_keeps_the_first_send(
        self, db: Database
    ) -> None:
        """BEGIN_ORDER: a cancel makes the order `sending` with its attempt number; a later
        attempt keeps the first send time; the other order is untouched."""
        a, b = add_two(db)
        begin(db, a, 1)
        begin(db, a, 2, at=AT + timedelta(seconds=5))
        got = rows(
            db,
            sa.select(
                orders.c.pk, orders.c.state, orders.c.attempts, orders.c.first_sent_at
            ).order_by(orders.c.pk),
        )
        assert got == [
            {"pk": a, "state": "sending", "attempts": 2, "first_sent_at": AT},
            {"pk": b, "state": "done", "attempts": 0, "first_sent_at": None},
        ]

    def test_begin_order_of_a_confirm_leaves_the_state(self, db: Database) -> None:
        """BEGIN_ORDER of a confirm (status) poll leaves a final order's state as it was."""
        _, b = add_two(db)
        begin(db, b, 1, kind="confirm")
        got = rows(db, sa.select(orders.c.state, orders.c.attempts).where(orders.c.pk == b))
        assert got == [{"state": "done", "attempts": 1}]
        assert rows(db, sa.select(attempts.c.kind)) == [{"kind": "confirm"}]

    def test_answer_attempt_fills_only_its_attempt(self, db: Database) -> None:
        """ANSWER_ATTEMPT fills the (order, attempt) row it names, and no other attempt."""
        a, _ = add_two(db)
        begin(db, a, 1)
        begin(db, a, 2)
        params = answer_params(a, 2, "canceled") | {"answered_at": db.stamp(AT)}
        assert run(db, hotpath.ANSWER_ATTEMPT, [params]) == 1
        got = rows(
            db,
            sa.select(
                attempts.c.attempt,
                attempts.c.answered_at,
                attempts.c.http_status,
                attempts.c.verdict,
                attempts.c.latency_ms,
                attempts.c.detail,
            ).order_by(attempts.c.attempt),
        )
        assert got == [
            {
                "attempt": 1,
                "answered_at": None,
                "http_status": None,
                "verdict": None,
                "latency_ms": None,
                "detail": "",
            },
            {
                "attempt": 2,
                "answered_at": AT,
                "http_status": 200,
                "verdict": "canceled",
                "latency_ms": 12.5,
                "detail": "HTTP 200",
            },
        ]

    def test_answer_order_sets_the_outcome_of_its_order_only(self, db: Database) -> None:
        """ANSWER_ORDER sets state, outcome, reason, last status and time of the order named."""
        a, b = add_two(db)
        begin(db, a, 1)
        params = {
            "pk": a,
            "state": "done",
            "outcome": "canceled",
            "reason": "ok",
            "http_status": 200,
            "answered_at": db.stamp(AT),
        }
        assert run(db, hotpath.ANSWER_ORDER, [params]) == 1
        got = rows(
            db,
            sa.select(
                orders.c.pk,
                orders.c.state,
                orders.c.outcome,
                orders.c.reason,
                orders.c.last_http_status,
                orders.c.last_answer_at,
            ).order_by(orders.c.pk),
        )
        assert got == [
            {
                "pk": a,
                "state": "done",
                "outcome": "canceled",
                "reason": "ok",
                "last_http_status": 200,
                "last_answer_at": AT,
            },
            {
                "pk": b,
                "state": "done",
                "outcome": "invalid",
                "reason": "not a number",
                "last_http_status": None,
                "last_answer_at": None,
            },
        ]

    def test_late_answer_reaches_only_an_open_attempt(self, db: Database) -> None:
        """ANSWER_LATE fills an attempt still open, and leaves one already closed (by the new
        holder of the lane) exactly as it was."""
        a, _ = add_two(db)
        begin(db, a, 1)
        begin(db, a, 2)
        closed = answer_params(a, 1, "transient", "taken over") | {"answered_at": None}
        run(db, hotpath.ANSWER_ATTEMPT, [closed])
        late = [answer_params(a, n, "canceled") | {"answered_at": db.stamp(AT)} for n in (1, 2)]
        run(db, hotpath.ANSWER_LATE, late)
        got = rows(
            db,
            sa.select(
                attempts.c.attempt, attempts.c.verdict, attempts.c.detail, attempts.c.answered_at
            ).order_by(attempts.c.attempt),
        )
        assert got == [
            {"attempt": 1, "verdict": "transient", "detail": "taken over", "answered_at": None},
            {"attempt": 2, "verdict": "canceled", "detail": "HTTP 200", "answered_at": AT},
        ]


class TestFence:
    @pytest.fixture
    def lane(self, db: Database) -> Database:
        with db.write() as conn:
            conn.execute(lanes.insert().values(run_id=RUN, venue="sfox", owner="me", epoch=3))
            conn.execute(lanes.insert().values(run_id=RUN, venue="etna", owner="me", epoch=3))
        return db

    @pytest.mark.parametrize(
        ("venue", "owner", "epoch", "matched"),
        [
            pytest.param("sfox", "me", 3, 1, id="held"),
            pytest.param("sfox", "me", 2, 0, id="older-epoch"),
            pytest.param("sfox", "other", 3, 0, id="other-owner"),
            pytest.param("zebpay", "me", 3, 0, id="no-such-lane"),
        ],
    )
    def test_fence_matches_only_the_holder_at_its_epoch(
        self, lane: Database, venue: str, owner: str, epoch: int, matched: int
    ) -> None:
        """FENCE matches the lane row only for its owner at its epoch, and changes nothing."""
        params = {"run_id": RUN, "venue": venue, "owner": owner, "epoch": epoch}
        assert run(lane, hotpath.FENCE, params) == matched
        got = rows(
            lane, sa.select(lanes.c.venue, lanes.c.owner, lanes.c.epoch).order_by(lanes.c.venue)
        )
        assert got == [
            {"venue": "etna", "owner": "me", "epoch": 3},
            {"venue": "sfox", "owner": "me", "epoch": 3},
        ]

    def test_fence_holds_the_lane_row_until_its_write_commits(self, lane: Database) -> None:
        """While a fenced write is open, a takeover of that lane cannot commit: it waits on
        the row lock (PostgreSQL) or the write lock (SQLite), and here gives up at once."""
        params = {"run_id": RUN, "venue": "sfox", "owner": "me", "epoch": 3}
        takeover = lanes.update().where(lanes.c.venue == "sfox").values(owner="new", epoch=4)
        rival = sa.create_engine(
            lane.engine.url,
            connect_args={"timeout": 0} if lane.dialect == "sqlite" else {},
        )
        try:
            with lane.write() as conn:
                assert conn.exec_driver_sql(lane.sql(hotpath.FENCE), params).rowcount == 1
                with pytest.raises(sa.exc.OperationalError), rival.begin() as other:
                    if lane.dialect == "postgresql":
                        other.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
                    other.execute(takeover)
        finally:
            rival.dispose()
        assert rows(lane, sa.select(lanes.c.owner).where(lanes.c.venue == "sfox")) == [
            {"owner": "me"}
        ]


def test_a_failing_statement_is_an_audit_error(db: Database) -> None:
    """A hot-path statement the database refuses (an attempt of no order) is an AuditError,
    and nothing of its transaction is kept."""
    with pytest.raises(AuditError, match="audit database write failed"):
        begin(db, 999_999, 1)
    assert rows(db, sa.select(attempts)) == []
