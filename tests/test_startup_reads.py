"""The reads `status` and `resume` start with, and the indexes of migration 0007 they walk.

The indexes exist after `db upgrade` on SQLite and PostgreSQL, and a downgrade to 0006 takes
them away (and brings ix_attempts_run back) until the next upgrade. The store's own
statements are captured as it runs them and explained: on SQLite each goes to its index
instead of every row of the run (on PostgreSQL, with sequential scans priced out, the index
is usable). The counts equal a plain count of the rows. No timing here: the figures are in
docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from batchcancel.audit.migrate import alembic_config, upgrade_to_head
from batchcancel.audit.records import SWEEP, Answer, Begin, PlannedOrder, SweptOrder, utcnow
from batchcancel.audit.store import AuditStore
from tests.conftest import cli_env

# Migration 0007's indexes: name -> (table, columns).
INDEXES = {
    "ix_orders_run_outcome": ("orders", ["run_id", "outcome", "venue", "pk"]),
    "ix_orders_run_state": ("orders", ["run_id", "state", "venue", "pk"]),
    "ix_attempts_run_verdict": ("attempts", ["run_id", "verdict"]),
}


def indexes(url: str) -> dict[str, tuple[str, list[str]]]:
    """The indexes of the orders and attempts tables: name -> (table, columns)."""
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        return {
            str(ix["name"]): (table, [str(c) for c in ix["column_names"]])
            for table in ("orders", "attempts")
            for ix in inspector.get_indexes(table)
        }
    finally:
        engine.dispose()


def migrate(url: str, revision: str) -> None:
    """Alembic's upgrade or downgrade to `revision`, on the database at `url`."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            config = alembic_config(conn)
            current = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            if str(current) > revision:
                command.downgrade(config, revision)
            else:
                command.upgrade(config, revision)
    finally:
        engine.dispose()


class TestMigration:
    def test_db_upgrade_creates_the_indexes(self, audit_url: str) -> None:
        """`batchcancel db upgrade` leaves every index of 0007 in place, and not the index
        (run_id) on attempts that ix_attempts_run_verdict replaces."""
        done = subprocess.run(
            [sys.executable, "-m", "batchcancel", "db", "upgrade"],
            env=cli_env(audit_url),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        found = indexes(audit_url)
        for name, spec in INDEXES.items():
            assert found.get(name) == spec
        assert "ix_attempts_run" not in found
        assert found["ix_orders_run_venue_pk"] == ("orders", ["run_id", "venue", "pk"])

    def test_downgrade_and_upgrade_again(self, audit_url: str) -> None:
        """Down to 0006 the indexes go and ix_attempts_run is back; up again they return."""
        engine = sa.create_engine(audit_url)
        try:
            upgrade_to_head(engine)
        finally:
            engine.dispose()
        migrate(audit_url, "0006")
        found = indexes(audit_url)
        assert not set(INDEXES) & set(found)
        assert found["ix_attempts_run"] == ("attempts", ["run_id"])
        migrate(audit_url, "0007")
        found = indexes(audit_url)
        assert {name: found.get(name) for name in INDEXES} == INDEXES
        assert "ix_attempts_run" not in found


@dataclass
class Captured:
    """The statements (and their parameters) the store ran on the database."""

    statements: list[tuple[str, Any]]

    def on(self, table: str) -> list[tuple[str, Any]]:
        """Those that read or change `table`, other than inserts."""
        return [
            (sql, params)
            for sql, params in self.statements
            if f" {table}" in sql and not sql.lstrip().upper().startswith("INSERT")
        ]


@pytest.fixture
def store(audit_url: str) -> Iterator[AuditStore]:
    audit = AuditStore(audit_url)
    yield audit
    audit.close()


def capture(store: AuditStore, call: Callable[[], Any]) -> tuple[Any, Captured]:
    """What `call` returns, and every statement the store sent to run it."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seen.append((sql, params))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        result = call()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    return result, Captured(seen)


def plan(store: AuditStore, sql: str, params: Any) -> str:
    """The database's plan for one captured statement, as one line per step."""
    with store.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            if store.dialect == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + sql, params or ())
                return "\n".join(str(row[3]) for row in cursor.fetchall())
            # Priced out, not forbidden: a usable index is then chosen over a scan.
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("EXPLAIN " + sql, params)
            return "\n".join(str(row[0]) for row in cursor.fetchall())
        finally:
            cursor.close()
            raw.rollback()


def new_run(store: AuditStore) -> str:
    """A run of 30 orders over two venues, in every state: final (canceled, cancel_pending,
    invalid), in flight (begun, no answer), answered but resumable, and never sent."""
    run_id = store.create_run(
        command="run",
        run_key=None,
        source="test",
        options={},
        reason="",
        command_line="batchcancel run test",
        dry_run=False,
    )
    store.add_orders(
        run_id,
        [
            PlannedOrder(
                seq,
                "sfox" if seq % 3 else "etna",
                f"id-{seq}",
                "",
                "",
                "not a number" if seq in (7, 8) else None,
            )
            for seq in range(1, 31)
        ],
    )
    with store.engine.connect() as conn:
        pks = conn.execute(
            sa.text("SELECT pk, seq FROM orders WHERE run_id = :r ORDER BY pk"), {"r": run_id}
        ).all()
    by_seq = {seq: pk for pk, seq in pks}
    sent = [by_seq[seq] for seq in range(1, 21) if seq not in (7, 8)]
    at = utcnow()
    store.write_batch(run_id, [Begin(pk, 1, at) for pk in sent], [])
    outcomes = {0: "canceled", 1: "cancel_pending", 2: None}  # seq 20 and up: no answer
    answers = [
        Answer(
            pk,
            1,
            at + timedelta(milliseconds=5),
            200 if outcomes[i % 3] else 503,
            outcomes[i % 3] or "transient",
            5.0,
            "",
            outcomes[i % 3],
            "",
        )
        for i, pk in enumerate(sent[:-3])
    ]
    store.write_batch(run_id, [], answers)
    return run_id


def plain_counts(store: AuditStore, run_id: str) -> tuple[dict[str, dict[str, int]], Counter[str]]:
    """Orders per venue per outcome and per state, counted in Python from every row."""
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT venue, outcome, state FROM orders WHERE run_id = :r"), {"r": run_id}
        ).all()
    by_outcome: dict[str, Counter[str]] = {}
    for venue, outcome, _ in rows:
        by_outcome.setdefault(venue, Counter())[outcome or ""] += 1
    return {v: dict(c) for v, c in by_outcome.items()}, Counter(state for _, _, state in rows)


class TestReads:
    def test_counts_are_those_of_the_rows(self, store: AuditStore) -> None:
        """counts and state_counts give what counting every row gives, states in order."""
        run_id = new_run(store)
        outcomes, states = plain_counts(store, run_id)
        assert store.counts(run_id) == outcomes
        assert store.state_counts(run_id) == dict(sorted(states.items()))
        assert set(states) == {"done", "pending", "sending"}  # every state is exercised

    def test_status_reads_walk_their_indexes(self, store: AuditStore) -> None:
        """The counts by outcome and by state read their index alone (SQLite: covering,
        in the index's order, no sort of the run's rows)."""
        run_id = new_run(store)
        for call, index in (
            (lambda: store.counts(run_id), "ix_orders_run_outcome"),
            (lambda: store.state_counts(run_id), "ix_orders_run_state"),
        ):
            _, captured = capture(store, call)
            [(sql, params)] = captured.on("orders")
            steps = plan(store, sql, params)
            assert index in steps
            if store.dialect == "sqlite":
                assert f"USING COVERING INDEX {index} (run_id=?)" in steps
                assert "TEMP B-TREE" not in steps

    def test_resume_reads_seek_their_rows(self, store: AuditStore) -> None:
        """The first page to send (or to confirm), the orders left to confirm, and closing
        what was in flight: each seeks its rows by index, none walks the run's orders."""
        run_id = new_run(store)
        assert store.claim_lanes(run_id, ["sfox", "etna"], limit=2, lease=30) == {
            "etna": 0.0,
            "sfox": 0.0,
        }
        expected = {
            "pending_page": ["ix_orders_run_state (run_id=? AND state=? AND venue=? AND pk>?)"],
            "confirm_page": ["ix_orders_run_outcome (run_id=? AND outcome=? AND venue=? AND pk>?)"],
            "to_confirm": ["COVERING INDEX ix_orders_run_outcome (run_id=? AND outcome=?)"],
            "recover_in_flight": [
                "ix_attempts_run_verdict (run_id=? AND verdict=?)",
                "ix_orders_run_state (run_id=? AND state=? AND venue=?)",
            ],
        }
        calls: dict[str, Callable[[], Any]] = {
            "pending_page": lambda: store.pending_page(run_id, "sfox", after_pk=0, limit=5),
            "confirm_page": lambda: store.pending_page(
                run_id, "sfox", after_pk=0, limit=5, to_confirm=True
            ),
            "to_confirm": lambda: store.venues_with_work(run_id, to_confirm=True),
            "recover_in_flight": lambda: store.recover_in_flight(run_id, venue="sfox"),
        }
        for name, call in calls.items():
            result, captured = capture(store, call)
            assert result, name  # each finds something in this run
            steps = [plan(store, sql, params) for sql, params in captured.on("orders")]
            steps += [plan(store, sql, params) for sql, params in captured.on("attempts")]
            if store.dialect == "sqlite":
                for wanted in expected[name]:
                    assert any(wanted in s for s in steps), (name, steps)
                # Not one walks the run through the (run_id, venue, pk) index or the table.
                assert not any("SCAN orders" in s or "SCAN attempts" in s for s in steps)
                assert not any("INDEX ix_orders_run_venue_pk (run_id=?)" in s for s in steps)
            else:
                index = next(w for w in expected[name][0].split() if w.startswith("ix_"))
                assert any(index in s for s in steps), (name, steps)

    def test_not_in_input_reads_no_order_without_a_cancel_all(self, store: AuditStore) -> None:
        """A run that sent no cancel-all holds no order from one: its summary does not walk
        its orders to find out. Once a cancel-all found one, it is counted."""
        run_id = new_run(store)
        found, captured = capture(store, lambda: store.not_in_input(run_id))
        assert found == {}
        assert captured.on("orders") == []
        store.claim_lanes(run_id, ["sfox"], limit=1, lease=30)
        store.begin_request(run_id, "sfox", kind=SWEEP, target="all")
        at = utcnow()
        swept = [SweptOrder("extra-1", "", "canceled", "not in the input", 200, at, 3.0, "")]
        store.add_swept(run_id, "sfox", swept, sent_at=at)
        assert store.not_in_input(run_id) == {"sfox": 1}
