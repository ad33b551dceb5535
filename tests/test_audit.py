"""AuditStore and AuditWriter on real SQLite files: runs, orders, attempts, locks, secrets, reports."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchcancel.audit.store import (
    IN_FLIGHT_LOST,
    Answer,
    AuditStore,
    Begin,
    PlannedOrder,
    utcnow,
)
from batchcancel.audit.tables import metadata
from batchcancel.audit.writer import AuditWriter
from batchcancel.errors import AuditError, RunLockedError, RunNotFoundError
from batchcancel.outcomes import Outcome
from batchcancel.report import write_report
from tests.conftest import db_bytes

runs = metadata.tables["runs"]
orders = metadata.tables["orders"]
attempts = metadata.tables["attempts"]

ORDER_HEADER = (
    "run_id,venue,order_id,account_id,symbol,outcome,reason,attempts,last_http_status,"
    "first_sent_at,last_answer_at"
)
ATTEMPT_HEADER = (
    "run_id,venue,order_id,attempt,sent_at,answered_at,http_status,verdict,latency_ms,detail"
)
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


# -- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture
def db_url(audit_url: str) -> str:
    """A fresh audit database: every test here runs on SQLite and on PostgreSQL."""
    return audit_url


@pytest.fixture
def store(db_url: str) -> Iterator[AuditStore]:
    """A store on a fresh, migrated SQLite file."""
    store = AuditStore(db_url)
    yield store
    store.close()


@pytest.fixture
def other(db_url: str) -> Iterator[sa.Engine]:
    """A separate engine on the same file: what another process or a reviewer would see."""
    engine = sa.create_engine(db_url)
    yield engine
    engine.dispose()


def new_run(store: AuditStore, *, run_key: str | None = None, **fields: Any) -> str:
    values: dict[str, Any] = {
        "command": "run",
        "run_key": run_key,
        "source": "orders.csv",
        "options": {"max_attempts": 5},
        "reason": "end of day",
        "command_line": "batchcancel run orders.csv",
        "dry_run": False,
    }
    values.update(fields)
    return store.create_run(**values)


def planned(seq: int, venue: str = "sfox", invalid: str | None = None) -> PlannedOrder:
    return PlannedOrder(
        seq=seq,
        venue=venue,
        order_id=f"ord-{seq}",
        account_id="",
        symbol="BTCUSD",
        invalid_reason=invalid,
    )


def order_pks(store: AuditStore, run_id: str, venue: str = "sfox") -> list[int]:
    return [o.pk for o in store.pending_page(run_id, venue, after_pk=0, limit=10_000)]


def order_row(engine: sa.Engine, pk: int) -> sa.Row[Any]:
    with engine.connect() as conn:
        return conn.execute(sa.select(orders).where(orders.c.pk == pk)).one()


def attempt_rows(engine: sa.Engine, pk: int) -> list[sa.Row[Any]]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.select(attempts).where(attempts.c.order_pk == pk).order_by(attempts.c.attempt)
            )
        )


def answer(
    pk: int,
    attempt: int,
    *,
    outcome: str | None,
    status: int | None = 200,
    verdict: str | None = None,
    detail: str = '{"status": "canceled"}',
    reason: str = "",
    at: datetime | None = None,
) -> Answer:
    return Answer(
        order_pk=pk,
        attempt=attempt,
        answered_at=at or utcnow(),
        http_status=status,
        verdict=verdict or outcome or "transient",
        latency_ms=12.3456,
        detail=detail,
        outcome=outcome,
        reason=reason,
    )


# A child process prints the lock token it would hold (host:pid:identity:token), then exits.
PRINT_TOKEN = (
    "import os, socket; from batchcancel.audit.store import _process_identity; "
    "print(f'{socket.gethostname()}:{os.getpid()}:{_process_identity()}:c0de', flush=True)"
)


def set_lock(engine: sa.Engine, run_id: str, *, owner: str | None = None, age_s: float) -> None:
    """Write the lock columns directly, as another process (or time passing) would leave them."""
    values: dict[str, Any] = {"lock_heartbeat": utcnow() - timedelta(seconds=age_s)}
    if owner is not None:
        values["lock_owner"] = owner
    with engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == run_id).values(**values))


def lock_owner(engine: sa.Engine, run_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(runs.c.lock_owner).where(runs.c.id == run_id)).scalar()


# -- runs -------------------------------------------------------------------------------------


class TestRuns:
    def test_find_run_by_id(self, store: AuditStore) -> None:
        """create_run records the run; find_run by its id returns what was recorded."""
        run_id = new_run(store, run_key="eod-2026-01-02", reason="cleanup", dry_run=True)
        run = store.find_run(run_id)
        assert run.id == run_id
        assert run.run_key == "eod-2026-01-02"
        assert run.command == "run"
        assert run.source == "orders.csv"
        assert run.reason == "cleanup"
        assert run.dry_run is True
        assert dict(run.options) == {"max_attempts": 5}
        assert run.finished_at is None

    def test_find_run_by_key(self, store: AuditStore) -> None:
        """find_run also accepts the run key, and picks the run that carries it."""
        new_run(store, run_key="a-key")
        wanted = new_run(store, run_key="b-key")
        assert store.find_run("b-key").id == wanted
        assert store.find_run_key("b-key") is not None
        assert store.find_run_key("nope") is None

    def test_unknown_run(self, store: AuditStore) -> None:
        """An id or key that matches nothing raises RunNotFoundError."""
        new_run(store, run_key="known")
        with pytest.raises(RunNotFoundError):
            store.find_run("unknown")

    def test_run_ids_are_unique(self, store: AuditStore) -> None:
        """Runs created in the same second still get distinct ids."""
        ids = {new_run(store) for _ in range(20)}
        assert len(ids) == 20


# -- orders -----------------------------------------------------------------------------------


class TestOrders:
    def test_invalid_order_is_final_at_once(self, store: AuditStore, other: sa.Engine) -> None:
        """A PlannedOrder with an invalid_reason is stored done/invalid with that reason."""
        run_id = new_run(store)
        assert store.add_orders(run_id, [planned(1), planned(2, invalid="bad id form")]) == 2
        with other.connect() as conn:
            rows = conn.execute(
                sa.select(orders.c.seq, orders.c.state, orders.c.outcome, orders.c.reason)
                .where(orders.c.run_id == run_id)
                .order_by(orders.c.seq)
            ).all()
        assert [tuple(r) for r in rows] == [
            (1, "pending", None, ""),
            (2, "done", "invalid", "bad id form"),
        ]

    def test_pending_page_pages_in_pk_order_per_venue(self, store: AuditStore) -> None:
        """Pages of one venue follow pk order, resume after `after_pk`, and exclude other venues."""
        run_id = new_run(store)
        store.add_orders(
            run_id, [planned(i, venue="sfox" if i % 3 else "etna") for i in range(1, 13)]
        )
        seen: list[int] = []
        after = 0
        while page := store.pending_page(run_id, "sfox", after_pk=after, limit=3):
            assert len(page) <= 3
            assert all(o.venue == "sfox" for o in page)
            seen.extend(o.pk for o in page)
            after = page[-1].pk
        assert seen == sorted(seen)
        assert len(seen) == len(set(seen)) == 8
        assert [o.order_id for o in store.pending_page(run_id, "etna", after_pk=0, limit=99)] == [
            "ord-3",
            "ord-6",
            "ord-9",
            "ord-12",
        ]

    def test_pending_page_skips_done_orders(self, store: AuditStore) -> None:
        """Invalid orders and orders with a final answer are never offered for sending."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1), planned(2, invalid="x"), planned(3), planned(4)])
        first, _third, _fourth = order_pks(store, run_id)
        store.write_batch(run_id, [Begin(first, 1, utcnow())], [])
        store.write_batch(run_id, [], [answer(first, 1, outcome=Outcome.CANCELED.value)])
        page = store.pending_page(run_id, "sfox", after_pk=0, limit=10)
        assert [o.order_id for o in page] == ["ord-3", "ord-4"]

    def test_orders_of_other_runs_are_not_offered(self, store: AuditStore) -> None:
        """pending_page only returns orders of the run asked for."""
        run_a, run_b = new_run(store), new_run(store)
        store.add_orders(run_a, [planned(1)])
        store.add_orders(run_b, [planned(1), planned(2)])
        assert len(store.pending_page(run_a, "sfox", after_pk=0, limit=10)) == 1


# -- write-ahead attempts and answers ---------------------------------------------------------


class TestWriteBatch:
    def test_begin_then_final_answer(self, store: AuditStore, other: sa.Engine) -> None:
        """A Begin writes an unanswered attempt and marks the order sending; its final Answer
        fills the attempt and makes the order done with outcome, status and times."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1)])
        (pk,) = order_pks(store, run_id)
        sent = datetime(2026, 1, 2, 3, 4, 5, 123456)
        store.write_batch(run_id, [Begin(pk, 1, sent)], [])

        (row,) = attempt_rows(other, pk)
        assert (row.run_id, row.attempt, row.sent_at) == (run_id, 1, sent)
        assert row.worker == store.worker
        assert row.verdict is None and row.answered_at is None and row.http_status is None
        order = order_row(other, pk)
        assert (order.state, order.outcome, order.attempts) == ("sending", None, 1)
        assert order.first_sent_at == sent

        answered = sent + timedelta(milliseconds=40)
        store.write_batch(
            run_id,
            [],
            [
                answer(
                    pk,
                    1,
                    outcome="cancel_pending",
                    status=200,
                    reason="venue: cancel pending",
                    detail='{"status": "cancel pending"}',
                    at=answered,
                )
            ],
        )
        (row,) = attempt_rows(other, pk)
        assert row.answered_at == answered
        assert row.http_status == 200
        assert row.verdict == "cancel_pending"
        assert row.latency_ms == pytest.approx(12.346)
        assert row.detail == '{"status": "cancel pending"}'
        order = order_row(other, pk)
        assert (order.state, order.outcome, order.reason) == (
            "done",
            "cancel_pending",
            "venue: cancel pending",
        )
        assert order.attempts == 1
        assert order.last_http_status == 200
        assert order.last_answer_at == answered
        assert order.first_sent_at == sent

    def test_transient_answer_leaves_order_pending(
        self, store: AuditStore, other: sa.Engine
    ) -> None:
        """An Answer without outcome (e.g. a 503) keeps the order pending and offered again;
        the retry's Begin bumps attempts but keeps first_sent_at."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1)])
        (pk,) = order_pks(store, run_id)
        first = datetime(2026, 1, 2, 3, 4, 5, 1)
        store.write_batch(run_id, [Begin(pk, 1, first)], [])
        store.write_batch(
            run_id, [], [answer(pk, 1, outcome=None, status=503, verdict="transient", detail="")]
        )
        order = order_row(other, pk)
        assert (order.state, order.outcome, order.attempts) == ("pending", None, 1)
        assert order.last_http_status == 503
        assert [o.pk for o in store.pending_page(run_id, "sfox", after_pk=0, limit=5)] == [pk]

        second = first + timedelta(seconds=1)
        store.write_batch(run_id, [Begin(pk, 2, second)], [])
        order = order_row(other, pk)
        assert (order.state, order.attempts, order.first_sent_at) == ("sending", 2, first)
        assert [r.attempt for r in attempt_rows(other, pk)] == [1, 2]

    def test_answer_and_next_begin_in_one_batch(self, store: AuditStore, other: sa.Engine) -> None:
        """One batch holding attempt 1's answer and attempt 2's begin leaves the order sending."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1)])
        (pk,) = order_pks(store, run_id)
        store.write_batch(run_id, [Begin(pk, 1, utcnow())], [])
        store.write_batch(
            run_id,
            [Begin(pk, 2, utcnow())],
            [answer(pk, 1, outcome=None, status=500, verdict="transient")],
        )
        order = order_row(other, pk)
        assert (order.state, order.attempts) == ("sending", 2)
        assert [r.verdict for r in attempt_rows(other, pk)] == ["transient", None]


# -- resume: recovery and settling ------------------------------------------------------------


class TestRecovery:
    def test_recover_in_flight(self, store: AuditStore, other: sa.Engine) -> None:
        """Unanswered attempts become transient with the 'no answer recorded' detail and their
        orders pending again; answered attempts and final orders are left alone."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1), planned(2)])
        lost, done = order_pks(store, run_id)
        store.write_batch(run_id, [Begin(lost, 1, utcnow()), Begin(done, 1, utcnow())], [])
        store.write_batch(run_id, [], [answer(done, 1, outcome="canceled")])

        assert store.recover_in_flight(run_id) == 1

        (row,) = attempt_rows(other, lost)
        assert row.verdict == "transient"
        assert row.detail == IN_FLIGHT_LOST
        assert row.detail.startswith("no answer recorded")
        assert order_row(other, lost).state == "pending"
        (row,) = attempt_rows(other, done)
        assert (row.verdict, row.detail) == ("canceled", '{"status": "canceled"}')
        assert (order_row(other, done).state, order_row(other, done).outcome) == (
            "done",
            "canceled",
        )
        assert [o.pk for o in store.pending_page(run_id, "sfox", after_pk=0, limit=5)] == [lost]

    def test_recover_resets_resumable_outcomes(self, store: AuditStore, other: sa.Engine) -> None:
        """failed and skipped orders get their outcome cleared for a new session's retry."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1), planned(2), planned(3, invalid="bad")])
        failed, skipped = order_pks(store, run_id)
        store.write_batch(run_id, [Begin(failed, 1, utcnow())], [])
        store.write_batch(
            run_id, [], [answer(failed, 1, outcome="failed", status=503, verdict="transient")]
        )
        assert store.settle_unsent(run_id, None, Outcome.SKIPPED, "deadline passed") == 1
        assert order_row(other, failed).outcome == "failed"
        assert order_row(other, skipped).outcome == "skipped"

        store.recover_in_flight(run_id)

        for pk in (failed, skipped):
            order = order_row(other, pk)
            assert (order.state, order.outcome) == ("pending", None)
        with other.connect() as conn:
            invalid = conn.execute(
                sa.select(orders.c.outcome).where(orders.c.run_id == run_id, orders.c.seq == 3)
            ).scalar()
        assert invalid == "invalid"

    def test_recover_touches_only_its_run(self, store: AuditStore, other: sa.Engine) -> None:
        """Recovering one run leaves another run's in-flight attempt as it is."""
        run_a, run_b = new_run(store), new_run(store)
        store.add_orders(run_a, [planned(1)])
        store.add_orders(run_b, [planned(1)])
        (pk_b,) = order_pks(store, run_b)
        store.write_batch(run_b, [Begin(pk_b, 1, utcnow())], [])
        assert store.recover_in_flight(run_a) == 0
        assert order_row(other, pk_b).state == "sending"
        assert attempt_rows(other, pk_b)[0].verdict is None

    def test_settle_unsent(self, store: AuditStore, other: sa.Engine) -> None:
        """settle_unsent marks pending orders skipped with the reason, but leaves failed, done
        and other venues' orders alone."""
        run_id = new_run(store)
        store.add_orders(
            run_id, [planned(1), planned(2), planned(3), planned(4, venue="etna"), planned(5)]
        )
        failed, unsent, done, later = order_pks(store, run_id)
        (etna,) = order_pks(store, run_id, "etna")
        store.write_batch(run_id, [Begin(failed, 1, utcnow()), Begin(done, 1, utcnow())], [])
        store.write_batch(
            run_id,
            [],
            [
                answer(failed, 1, outcome="failed", status=503, verdict="transient"),
                answer(done, 1, outcome="not_found", status=404),
            ],
        )

        assert store.settle_unsent(run_id, "sfox", Outcome.SKIPPED, "credentials refused") == 2

        assert {pk: order_row(other, pk).outcome for pk in (failed, unsent, done, later, etna)} == {
            failed: "failed",
            unsent: "skipped",
            done: "not_found",
            later: "skipped",
            etna: None,
        }
        assert order_row(other, unsent).reason == "credentials refused"
        assert order_row(other, unsent).state == "pending"


# -- the run lock -----------------------------------------------------------------------------


@pytest.fixture
def second(db_url: str) -> Iterator[AuditStore]:
    """Another AuditStore on the same file: another process, as far as the lock can tell."""
    store = AuditStore(db_url)
    yield store
    store.close()


class TestRunLock:
    def test_second_store_is_refused_while_held(
        self, store: AuditStore, second: AuditStore
    ) -> None:
        """While one store holds a fresh lock, another gets RunLockedError naming the holder."""
        run_id = new_run(store)
        store.lock_run(run_id)
        with pytest.raises(RunLockedError, match=r"process \d+ on "):
            second.lock_run(run_id)

    def test_holder_may_lock_again(self, store: AuditStore, second: AuditStore) -> None:
        """The holder re-locking (or heartbeating) its own run is fine and keeps it locked."""
        run_id = new_run(store)
        store.lock_run(run_id)
        store.heartbeat(run_id)
        store.lock_run(run_id)
        with pytest.raises(RunLockedError):
            second.lock_run(run_id)

    def test_unlock_releases(self, store: AuditStore, second: AuditStore, other: sa.Engine) -> None:
        """After unlock_run the other store can lock; a non-holder's unlock releases nothing."""
        run_id = new_run(store)
        store.lock_run(run_id)
        second.unlock_run(run_id)
        with pytest.raises(RunLockedError):
            second.lock_run(run_id)
        store.unlock_run(run_id)
        assert lock_owner(other, run_id) is None
        second.lock_run(run_id)
        with pytest.raises(RunLockedError):
            store.lock_run(run_id)

    def test_fresh_heartbeat_under_a_minute_still_holds(
        self, store: AuditStore, second: AuditStore, other: sa.Engine
    ) -> None:
        """A heartbeat 30 s old is still fresh: the lock is not taken over."""
        run_id = new_run(store)
        store.lock_run(run_id)
        set_lock(other, run_id, age_s=30)
        with pytest.raises(RunLockedError):
            second.lock_run(run_id)

    def test_stale_heartbeat_is_taken_over(
        self, store: AuditStore, second: AuditStore, other: sa.Engine
    ) -> None:
        """A lock whose heartbeat is older than 60 s is taken over; the old holder is refused."""
        run_id = new_run(store)
        store.lock_run(run_id)
        before = lock_owner(other, run_id)
        set_lock(other, run_id, age_s=61)
        second.lock_run(run_id)
        assert lock_owner(other, run_id) != before
        with pytest.raises(RunLockedError):
            store.lock_run(run_id)

    def test_dead_pid_on_this_host_is_taken_over(self, store: AuditStore, other: sa.Engine) -> None:
        """A fresh lock whose owner is a dead process on this host is taken over at once."""
        proc = subprocess.run([sys.executable, "-c", PRINT_TOKEN], capture_output=True, text=True)
        dead = proc.stdout.strip()
        run_id = new_run(store)
        set_lock(other, run_id, owner=dead, age_s=0)
        store.lock_run(run_id)
        assert lock_owner(other, run_id) not in (None, dead)

    def test_live_pid_on_this_host_is_not_taken_over(
        self, store: AuditStore, other: sa.Engine
    ) -> None:
        """A fresh lock whose owner is a live process on this host is respected."""
        proc = subprocess.Popen(
            [sys.executable, "-c", f"{PRINT_TOKEN}; import time; time.sleep(30)"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            live = proc.stdout.readline().strip()
            run_id = new_run(store)
            set_lock(other, run_id, owner=live, age_s=0)
            with pytest.raises(RunLockedError):
                store.lock_run(run_id)
        finally:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    @pytest.mark.parametrize(
        "where",
        ["another pid namespace", "another boot", "a token without identity"],
    )
    def test_same_hostname_elsewhere_is_not_judged_dead(
        self, store: AuditStore, other: sa.Engine, where: str
    ) -> None:
        """Containers share a hostname: a pid that does not exist *here* may be a live process
        of another pid namespace or machine. Only its lease or heartbeat expiry frees it."""
        proc = subprocess.run([sys.executable, "-c", PRINT_TOKEN], capture_output=True, text=True)
        host, pid, identity, token = proc.stdout.strip().split(":")
        boot, namespace, started = identity.split(".", 2)
        owner = {
            "another pid namespace": f"{host}:{pid}:{boot}.1{namespace}.{started}:{token}",
            "another boot": f"{host}:{pid}:{boot[::-1]}x.{namespace}.{started}:{token}",
            "a token without identity": f"{host}:{pid}:{token}",
        }[where]
        run_id = new_run(store)
        set_lock(other, run_id, owner=owner, age_s=0)
        with pytest.raises(RunLockedError):
            store.lock_run(run_id)

    def test_reused_pid_is_judged_dead(self, store: AuditStore, other: sa.Engine) -> None:
        """The owner's pid now names another process (started at another time): dead."""
        mine = store._lock_token.split(":")
        boot, namespace, _ = mine[2].split(".", 2)
        owner = f"{mine[0]}:{os.getpid()}:{boot}.{namespace}.12345.67:beef"
        run_id = new_run(store)
        set_lock(other, run_id, owner=owner, age_s=0)
        store.lock_run(run_id)
        assert lock_owner(other, run_id) == store._lock_token


# -- secrets ----------------------------------------------------------------------------------


class TestSecrets:
    def test_redacted_values_never_reach_the_file(self, db_url: str) -> None:
        """Secrets in source, reason, command line, options, invalid reasons, answer details and
        reasons, and session command lines are stored redacted: the file holds no trace."""
        store = AuditStore(db_url, redact=["SECRET123"])
        try:
            run_id = new_run(
                store,
                source="query on db with token SECRET123",
                reason="ticket says SECRET123",
                command_line="batchcancel run --api-key SECRET123 orders.csv",
                options={"header": "Bearer SECRET123"},
            )
            store.start_session(run_id, command="run", command_line="x --token=SECRET123")
            store.add_orders(run_id, [planned(1), planned(2, invalid="key SECRET123 in row")])
            (pk,) = order_pks(store, run_id)
            store.write_batch(run_id, [Begin(pk, 1, utcnow())], [])
            store.write_batch(
                run_id,
                [],
                [
                    answer(
                        pk,
                        1,
                        outcome="rejected",
                        status=400,
                        detail='{"error": "bad key SECRET123"}',
                        reason="venue said SECRET123",
                    )
                ],
            )
            store.settle_unsent(run_id, None, Outcome.SKIPPED, "SECRET123 refused")
            run = store.find_run(run_id)
            assert "[redacted]" in run.source
            assert "[redacted]" in run.reason
        finally:
            store.close()
        data = db_bytes(db_url)
        assert b"[redacted]" in data
        assert data.count(b"SECRET123") == 0

    @pytest.mark.parametrize(
        "url",
        [
            "postgresql://user:pw@host/db",
            "postgresql+psycopg://user:pw@host:5432/db",
            "--source-db postgresql://user:pw@host/db --query 'select 1'",
        ],
    )
    def test_url_passwords_are_hidden(self, store: AuditStore, url: str) -> None:
        """clean() hides the password of a database URL but keeps user, host and database."""
        cleaned = store.clean(url)
        assert ":pw@" not in cleaned
        assert "user:" in cleaned
        assert "@host" in cleaned
        assert "/db" in cleaned

    def test_url_password_with_slash_is_hidden(self, store: AuditStore) -> None:
        """A password containing '/' (as SQLAlchemy parses it) is hidden too."""
        url = "postgresql://user:ab/cd9@host/db"
        assert sa.engine.make_url(url).password == "ab/cd9"
        assert "ab/cd9" not in store.clean(url)

    def test_url_password_in_command_line_is_not_stored(self, db_url: str) -> None:
        """A --source-db URL password in the command line never reaches the audit file."""
        store = AuditStore(db_url)
        try:
            new_run(
                store,
                source="postgresql://trader:Hunter2pw@db.internal/orders",
                command_line="batchcancel run --source-db postgresql://trader:Hunter2pw@db/o",
            )
        finally:
            store.close()
        data = db_bytes(db_url)
        assert b"db.internal/orders" in data
        assert b"Hunter2pw" not in data


# -- reports ----------------------------------------------------------------------------------


@pytest.fixture
def reported_run(store: AuditStore) -> str:
    """A run with a canceled order (two attempts), an invalid one and one never sent."""
    run_id = new_run(store)
    store.add_orders(run_id, [planned(1), planned(2, invalid="bad id"), planned(3)])
    pk, _unsent = order_pks(store, run_id)
    whole_second = datetime(2026, 1, 2, 3, 4, 5)  # microsecond 0 must still print six digits
    store.write_batch(run_id, [Begin(pk, 1, whole_second)], [])
    store.write_batch(
        run_id,
        [Begin(pk, 2, whole_second + timedelta(seconds=1))],
        [
            answer(
                pk,
                1,
                outcome=None,
                status=503,
                verdict="transient",
                at=whole_second + timedelta(microseconds=5),
            )
        ],
    )
    store.write_batch(run_id, [], [answer(pk, 2, outcome="canceled")])
    return run_id


def render(store: AuditStore, run_id: str, *, fmt: str, attempts: bool) -> tuple[int, str]:
    out = io.StringIO()
    count = write_report(store, run_id, out, fmt=fmt, attempts=attempts)
    return count, out.getvalue()


class TestReport:
    def test_order_csv_header(self, store: AuditStore, reported_run: str) -> None:
        """The per-order CSV header is exactly SPEC's columns, one row per order in input order."""
        count, text = render(store, reported_run, fmt="csv", attempts=False)
        lines = text.splitlines()
        assert lines[0] == ORDER_HEADER
        assert count == 3
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [r["order_id"] for r in rows] == ["ord-1", "ord-2", "ord-3"]
        assert [r["outcome"] for r in rows] == ["canceled", "invalid", ""]
        assert rows[0]["attempts"] == "2"
        assert rows[1]["reason"] == "bad id"
        assert all(r["run_id"] == reported_run for r in rows)

    def test_attempt_csv_header(self, store: AuditStore, reported_run: str) -> None:
        """With attempts=True the CSV header is exactly SPEC's per-attempt columns."""
        count, text = render(store, reported_run, fmt="csv", attempts=True)
        assert text.splitlines()[0] == ATTEMPT_HEADER
        assert count == 2
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [(r["attempt"], r["verdict"], r["http_status"]) for r in rows] == [
            ("1", "transient", "503"),
            ("2", "canceled", "200"),
        ]

    @pytest.mark.parametrize(
        ("attempts", "header"), [(False, ORDER_HEADER), (True, ATTEMPT_HEADER)]
    )
    def test_json_is_one_array_with_keys_in_order(
        self, store: AuditStore, reported_run: str, attempts: bool, header: str
    ) -> None:
        """JSON output is one array of objects whose keys are SPEC's columns in SPEC's order."""
        count, text = render(store, reported_run, fmt="json", attempts=attempts)
        records = json.loads(text)
        assert isinstance(records, list)
        assert len(records) == count == (2 if attempts else 3)
        for record in records:
            assert list(record) == header.split(",")

    def test_empty_run_json_is_an_empty_array(self, store: AuditStore) -> None:
        """A run without orders reports `[]`, still valid JSON."""
        run_id = new_run(store)
        count, text = render(store, run_id, fmt="json", attempts=False)
        assert (count, json.loads(text)) == (0, [])

    @pytest.mark.parametrize(
        ("attempts", "columns"),
        [(False, ("first_sent_at", "last_answer_at")), (True, ("sent_at", "answered_at"))],
    )
    def test_timestamps_are_iso_utc_with_microseconds(
        self, store: AuditStore, reported_run: str, attempts: bool, columns: tuple[str, ...]
    ) -> None:
        """Every timestamp is ISO 8601 UTC with six fractional digits, even on a whole second."""
        _, text = render(store, reported_run, fmt="json", attempts=attempts)
        stamps = [r[c] for r in json.loads(text) for c in columns if r[c] is not None]
        assert len(stamps) >= 2
        for stamp in stamps:
            assert ISO_UTC.fullmatch(stamp), stamp
        _, text = render(store, reported_run, fmt="csv", attempts=attempts)
        stamps = [r[c] for r in csv.DictReader(io.StringIO(text)) for c in columns if r[c]]
        assert "2026-01-02T03:04:05.000000Z" in stamps
        for stamp in stamps:
            assert ISO_UTC.fullmatch(stamp), stamp


# -- the grouped writer -----------------------------------------------------------------------


class TestAuditWriter:
    async def test_concurrent_begins_are_grouped_and_durable(
        self, store: AuditStore, other: sa.Engine
    ) -> None:
        """Many concurrent begin() calls share far fewer commits, and each returns only once its
        attempt row is visible from a separate connection."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(i) for i in range(1, 201)])
        pks = order_pks(store, run_id)
        writer = AuditWriter(store, run_id)
        writer.start()
        invisible: list[int] = []

        async def send(pk: int) -> None:
            await writer.begin(Begin(pk, 1, utcnow()))
            with other.connect() as conn:
                found = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(attempts)
                    .where(attempts.c.order_pk == pk, attempts.c.attempt == 1)
                ).scalar()
            if found != 1:
                invisible.append(pk)

        await asyncio.gather(*(send(pk) for pk in pks))
        await writer.close()
        assert invisible == []
        assert 0 < writer.commits < len(pks) / 4

    async def test_answers_are_flushed_on_close(self, store: AuditStore, other: sa.Engine) -> None:
        """Queued answers reach the database by the time close() returns."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1)])
        (pk,) = order_pks(store, run_id)
        writer = AuditWriter(store, run_id)
        writer.start()
        await writer.begin(Begin(pk, 1, utcnow()))
        writer.answer(answer(pk, 1, outcome="canceled"))
        await writer.close()
        assert order_row(other, pk).outcome == "canceled"

    async def test_unwritable_database_fails_every_later_begin(
        self, store: AuditStore, other: sa.Engine
    ) -> None:
        """When the attempts table vanishes, begin raises AuditError, and later begins keep
        raising even once the table is back: nothing is sent after a lost write."""
        run_id = new_run(store)
        store.add_orders(run_id, [planned(1), planned(2), planned(3)])
        first, second, third = order_pks(store, run_id)
        writer = AuditWriter(store, run_id)
        writer.start()
        await writer.begin(Begin(first, 1, utcnow()))

        with other.begin() as conn:
            conn.execute(sa.text("DROP TABLE attempts"))
        with pytest.raises(AuditError):
            await writer.begin(Begin(second, 1, utcnow()))

        attempts.create(other)
        with pytest.raises(AuditError):
            await writer.begin(Begin(third, 1, utcnow()))
        with pytest.raises(AuditError):
            await writer.close()
        with other.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(attempts)).scalar() == 0
