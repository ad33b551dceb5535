"""AuditStore: the only code that writes the audit database.

Every method is synchronous and short; the engine calls the hot ones (`write_batch`,
`pending_page`) from a worker thread so the event loop never blocks on the database. Writes
are grouped: one transaction carries many attempt rows and answers, which is what keeps the
write-ahead audit from costing throughput (SQLite in WAL mode commits a few thousand times a
second, but takes a hundred thousand rows a second in grouped commits).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel import __version__
from batchcancel.audit import hotpath
from batchcancel.audit.db import Database
from batchcancel.audit.leases import LOCK_STALE_AFTER, Leases, lock_is_stale, process_identity

# Re-exported: tests start processes that import it from here by its old name.
from batchcancel.audit.leases import process_identity as _process_identity  # noqa: F401
from batchcancel.audit.migrate import upgrade_to_head
from batchcancel.audit.records import (
    BULK,
    CANCEL,
    CONFIRM,
    CONFIRMED_PREFIX,
    DONE,
    IN_FLIGHT_LOST,
    IN_FLIGHT_TAKEN_OVER,
    LOADING,
    PENDING,
    SENDING,
    SWEEP,
    Answer,
    Begin,
    OrderToSend,
    PlannedOrder,
    RunInfo,
    SweptOrder,
    utcnow,
)
from batchcancel.audit.tables import Attempt, Lane, Order, Request, Run, Session
from batchcancel.errors import (
    AuditError,
    RunKeyTakenError,
    RunLockedError,
    RunNotFoundError,
)
from batchcancel.outcomes import FINAL, Outcome
from batchcancel.redact import Redactor

__all__ = [
    "BULK",
    "CANCEL",
    "CONFIRM",
    "CONFIRMED_PREFIX",
    "DONE",
    "IN_FLIGHT_LOST",
    "IN_FLIGHT_TAKEN_OVER",
    "LOADING",
    "LOCK_STALE_AFTER",
    "PENDING",
    "SENDING",
    "SWEEP",
    "Answer",
    "AuditStore",
    "Begin",
    "OrderToSend",
    "PlannedOrder",
    "RunInfo",
    "SweptOrder",
    "utcnow",
]

runs: Final = cast(sa.Table, Run.__table__)
sessions: Final = cast(sa.Table, Session.__table__)
orders: Final = cast(sa.Table, Order.__table__)
attempts: Final = cast(sa.Table, Attempt.__table__)
lanes: Final = cast(sa.Table, Lane.__table__)
requests: Final = cast(sa.Table, Request.__table__)


class AuditStore:
    """The audit database of one process. `redact` holds strings that must never be stored."""

    def __init__(self, url: str, *, redact: Iterable[str] = ()) -> None:
        self.url = url
        # The secrets, and the password of the database's own URL (an error may quote it).
        self.redactor = Redactor(redact, urls=(url,))
        self._db = Database(url)
        self.engine = self._db.engine
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_token = f"{self.worker}:{process_identity()}:{secrets.token_hex(4)}"
        self.leases = Leases(self._db, worker=self.worker, token=self._lock_token)
        try:
            upgrade_to_head(self.engine)
        except BaseException:
            self._db.dispose()
            raise

    def close(self) -> None:
        """Release connections."""
        self._db.dispose()

    @property
    def dialect(self) -> str:
        """sqlite or postgresql."""
        return self._db.dialect

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        *,
        command: str,
        run_key: str | None,
        source: str,
        options: Mapping[str, Any],
        reason: str,
        command_line: str,
        dry_run: bool,
    ) -> str:
        """Record a new run; its id is time-ordered and unique. RunKeyTakenError when another
        process recorded a run with `run_key` since the caller looked (it is that run)."""
        now = utcnow()
        run_id = f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
        try:
            self._insert_run(
                run_id,
                now,
                command=command,
                run_key=run_key,
                source=source,
                options=options,
                reason=reason,
                command_line=command_line,
                dry_run=dry_run,
            )
        except AuditError:
            if run_key is not None and (taken := self.find_run_key(run_key)) is not None:
                raise RunKeyTakenError(
                    f"run key {run_key} was just recorded by another process (run {taken.id})"
                ) from None
            raise
        return run_id

    def _insert_run(
        self,
        run_id: str,
        now: datetime,
        *,
        command: str,
        run_key: str | None,
        source: str,
        options: Mapping[str, Any],
        reason: str,
        command_line: str,
        dry_run: bool,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                runs.insert().values(
                    id=run_id,
                    run_key=run_key,
                    command=command,
                    status=LOADING,
                    dry_run=dry_run,
                    source=self.clean(source),
                    options=self.clean(json.dumps(dict(options), sort_keys=True)),
                    reason=self.clean(reason),
                    os_user=_os_user(),
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    command_line=self.clean(command_line),
                    version=__version__,
                    orders_total=0,
                    duplicates=0,
                    created_at=now,
                    sessions=0,
                    # Its loader holds it from the start: a process that finds it still
                    # loading joins it instead of recording the same rows again.
                    lock_owner=self._lock_token,
                    lock_heartbeat=now,
                )
            )

    def find_run(self, run: str) -> RunInfo:
        """A run by id or run key; RunNotFoundError if neither matches."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(runs).where(sa.or_(runs.c.id == run, runs.c.run_key == run))
            ).first()
        if row is None:
            raise RunNotFoundError(f"no run with id or key {run!r} in the audit database")
        return _run_info(row)

    def find_run_key(self, run_key: str) -> RunInfo | None:
        """The run with this key, if any."""
        with self._db.read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_key == run_key)).first()
        return None if row is None else _run_info(row)

    def recent_runs(self, limit: int = 20) -> list[RunInfo]:
        """The newest runs first."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(runs).order_by(runs.c.created_at.desc()).limit(limit)
            ).all()
        return [_run_info(row) for row in rows]

    def set_run_status(self, run_id: str, status: str) -> None:
        """Record where the run stands, and when the latest session ended."""
        with self._db.write() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    # a run whose loading was cut short stays `loading`: its key loads the rest
                    status=sa.case((runs.c.status == LOADING, LOADING), else_=status),
                    finished_at=utcnow(),
                )
            )

    # -- the run lock (single-process runs) -------------------------------------------------

    def lock_run(self, run_id: str) -> None:
        """Take the run for this process; RunLockedError if another live process holds it.
        (The process that records a new run holds it from the start: see create_run.)"""
        with self._db.write() as conn:
            now = self._db.now(conn)
            row = conn.execute(
                sa.select(runs.c.lock_owner, runs.c.lock_heartbeat).where(runs.c.id == run_id)
            ).one()
            owner, heartbeat = row.lock_owner, row.lock_heartbeat
            if owner and owner != self._lock_token and not lock_is_stale(owner, heartbeat, now):
                host, pid = owner.split(":")[:2]
                raise RunLockedError(
                    f"run {run_id} is being worked by process {pid} on {host} "
                    f"(last heartbeat {heartbeat:%Y-%m-%d %H:%M:%S} UTC); wait for it to finish "
                    "or stop it, then resume"
                )
            # Compare-and-set on the owner we saw, so two processes racing here cannot both win.
            taken = conn.execute(
                runs.update()
                .where(
                    runs.c.id == run_id,
                    runs.c.lock_owner.is_(None) if owner is None else runs.c.lock_owner == owner,
                )
                .values(lock_owner=self._lock_token, lock_heartbeat=now)
            ).rowcount
            if taken != 1:
                raise RunLockedError(f"run {run_id} was just taken by another process")

    def heartbeat(self, run_id: str) -> None:
        """Keep the run lock fresh."""
        with self._db.write() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.lock_owner == self._lock_token)
                .values(lock_heartbeat=self._db.now(conn))
            )

    def loading_elsewhere(self, run_id: str) -> bool:
        """Whether another live process is still recording the run's orders."""
        with self._db.read() as conn:
            row = conn.execute(
                sa.select(runs.c.status, runs.c.lock_owner, runs.c.lock_heartbeat).where(
                    runs.c.id == run_id
                )
            ).one()
            now = self._db.now(conn)
        owner = row.lock_owner
        return (
            row.status == LOADING
            and owner is not None
            and owner != self._lock_token
            and not lock_is_stale(owner, row.lock_heartbeat, now)
        )

    def unlock_run(self, run_id: str) -> None:
        """Release the run lock if this process holds it."""
        with self._db.write() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.lock_owner == self._lock_token)
                .values(lock_owner=None, lock_heartbeat=None)
            )

    # -- sessions ---------------------------------------------------------------------------

    def start_session(self, run_id: str, *, command: str, command_line: str) -> int:
        """Record this process's turn at the run: who, where, what command line."""
        now = utcnow()
        with self._db.write() as conn:
            session_id = conn.execute(
                sessions.insert()
                .values(
                    run_id=run_id,
                    command=command,
                    os_user=_os_user(),
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    command_line=self.clean(command_line),
                    version=__version__,
                    started_at=now,
                    status="running",
                )
                .returning(sessions.c.id)
            ).scalar_one()
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    started_at=now,
                    sessions=runs.c.sessions + 1,
                    # a run still loading its orders stays `loading` until every row is in
                    status=sa.case((runs.c.status == LOADING, LOADING), else_="running"),
                )
            )
        return int(session_id)

    def finish_session(self, session_id: int, status: str) -> None:
        """Record how this process's turn ended."""
        with self._db.write() as conn:
            conn.execute(
                sessions.update()
                .where(sessions.c.id == session_id)
                .values(finished_at=utcnow(), status=status)
            )

    # -- orders -----------------------------------------------------------------------------

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
        if self.clean(joined) != joined:
            for row in rows:
                for key in texts:
                    row[key] = self.clean(row[key])
        if rows:
            with self._db.write() as conn:
                conn.exec_driver_sql(
                    self._db.sql(hotpath.ADD_ORDER), rows
                )  # a million rows: plain SQL
        return len(rows)

    def add_swept(
        self, run_id: str, venue: str, swept: Sequence[SweptOrder], *, sent_at: datetime
    ) -> int:
        """Record orders a cancel-all cancelled that the input did not list: each becomes an
        order of the run (seq 0: not from the source), final at once, with its one attempt."""
        with self._db.write() as conn:
            self._require_lane(conn, run_id, venue)
            for order in swept:
                pk = conn.execute(
                    orders.insert()
                    .values(
                        run_id=run_id,
                        seq=0,
                        venue=venue,
                        order_id=self.clean(order.order_id),
                        account_id="",
                        symbol=self.clean(order.symbol),
                        state=DONE,
                        outcome=order.outcome,
                        reason=self.clean(order.reason),
                        attempts=1,
                        last_http_status=order.http_status,
                        first_sent_at=sent_at,
                        last_answer_at=order.answered_at,
                    )
                    .returning(orders.c.pk)
                ).scalar_one()
                conn.execute(
                    attempts.insert().values(
                        order_pk=pk,
                        attempt=1,
                        run_id=run_id,
                        worker=self.worker,
                        kind=BULK,
                        sent_at=sent_at,
                        answered_at=order.answered_at,
                        http_status=order.http_status,
                        verdict=order.outcome,
                        latency_ms=round(order.latency_ms, 3),
                        detail=self.clean(order.detail),
                    )
                )
        return len(swept)

    def not_in_input(self, run_id: str) -> dict[str, int]:
        """Per venue, the orders a cancel-all cancelled that the input did not list."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(orders.c.venue, sa.func.count())
                .where(orders.c.run_id == run_id, orders.c.seq == 0)
                .group_by(orders.c.venue)
            ).all()
        return {venue: int(n) for venue, n in rows}

    def set_totals(self, run_id: str, *, orders_total: int, duplicates: int) -> None:
        """Record how many orders the run holds once they are all loaded: loading is over."""
        with self._db.write() as conn:
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    orders_total=orders_total,
                    duplicates=duplicates,
                    status=sa.case((runs.c.status == LOADING, "running"), else_=runs.c.status),
                )
            )

    def max_seq(self, run_id: str) -> int:
        """The highest source row number recorded for the run (0 if none)."""
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.max(orders.c.seq)).where(orders.c.run_id == run_id)
            ).scalar()
        return int(value or 0)

    def order_count(self, run_id: str) -> int:
        """How many orders the run holds."""
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.count()).select_from(orders).where(orders.c.run_id == run_id)
            ).scalar()
        return int(value or 0)

    def recover_in_flight(
        self, run_id: str, *, venue: str | None = None, reset_resumable: bool = True
    ) -> int:
        """Close attempts left unanswered by a dead process; their orders become resumable.

        Only for one venue when `venue` is given (a lane just taken over from a dead worker).
        With `reset_resumable`, failed and skipped orders lose that outcome: a new sending
        session retries them afresh (a confirm session leaves them alone).
        """
        in_run = [orders.c.run_id == run_id]
        if venue is not None:
            in_run.append(orders.c.venue == venue)
        order_pks = sa.select(orders.c.pk).where(*in_run)
        with self._db.write() as conn:
            if venue is not None:
                self._require_lane(conn, run_id, venue)
            lost = conn.execute(
                attempts.update()
                .where(
                    attempts.c.run_id == run_id,
                    attempts.c.verdict.is_(None),
                    attempts.c.order_pk.in_(order_pks),
                )
                .values(verdict="transient", detail=IN_FLIGHT_LOST)
            ).rowcount
            conn.execute(
                orders.update().where(*in_run, orders.c.state == SENDING).values(state=PENDING)
            )
            if reset_resumable:
                conn.execute(
                    orders.update()
                    .where(*in_run, orders.c.state == PENDING, orders.c.outcome.is_not(None))
                    .values(outcome=None)
                )
        return int(lost or 0)

    def reset_resumable(self, run_id: str, venue: str) -> None:
        """A new holder of the lane retries the venue's failed and skipped orders afresh."""
        with self._db.write() as conn:
            self._require_lane(conn, run_id, venue)
            conn.execute(
                orders.update()
                .where(
                    orders.c.run_id == run_id,
                    orders.c.venue == venue,
                    orders.c.state == PENDING,
                    orders.c.outcome.is_not(None),
                )
                .values(outcome=None)
            )

    def in_flight_orders(self, run_id: str, venue: str) -> list[int]:
        """The venue's orders with an attempt in flight (the keys of their orders)."""
        with self._db.read() as conn:
            return list(
                conn.execute(
                    sa.select(orders.c.pk).where(
                        orders.c.run_id == run_id,
                        orders.c.venue == venue,
                        orders.c.state == SENDING,
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
        with self._db.write() as conn:
            self._require_lane(conn, run_id, venue)
            rows = conn.execute(
                sa.select(
                    orders.c.pk,
                    orders.c.venue,
                    orders.c.order_id,
                    orders.c.account_id,
                    orders.c.symbol,
                    orders.c.attempts,
                    attempts.c.verdict,
                    attempts.c.detail,
                    attempts.c.http_status,
                    attempts.c.answered_at,
                )
                .select_from(
                    orders.outerjoin(
                        attempts,
                        sa.and_(
                            attempts.c.order_pk == orders.c.pk,
                            attempts.c.attempt == orders.c.attempts,
                        ),
                    )
                )
                .where(
                    orders.c.run_id == run_id,
                    orders.c.pk.in_(order_pks),
                    orders.c.state == SENDING,
                )
                .order_by(orders.c.pk)
            ).all()
            answered = [row for row in rows if row.verdict in FINAL]
            for row in answered:
                conn.execute(
                    orders.update()
                    .where(orders.c.pk == row.pk)
                    .values(
                        state=DONE,
                        outcome=row.verdict,
                        reason=self.clean(
                            f"answered to the worker that lost the lane: {row.detail}"
                        ),
                        last_http_status=row.http_status,
                        last_answer_at=row.answered_at,
                    )
                )
            resend = [row for row in rows if row.verdict not in FINAL]
            pks = [row.pk for row in resend]
            if pks:
                conn.execute(
                    attempts.update()
                    .where(attempts.c.order_pk.in_(pks), attempts.c.verdict.is_(None))
                    .values(verdict="transient", detail=IN_FLIGHT_TAKEN_OVER)
                )
                conn.execute(orders.update().where(orders.c.pk.in_(pks)).values(state=PENDING))
        return [OrderToSend(*row[:6]) for row in resend]

    def filled_while_pending(self, run_id: str, limit: int = 20) -> list[tuple[str, str]]:
        """(venue, order_id) of orders whose pending cancel the confirm pass found filled."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(orders.c.venue, orders.c.order_id)
                .where(
                    orders.c.run_id == run_id,
                    orders.c.outcome == Outcome.ALREADY_CLOSED.value,
                    orders.c.reason.like(f"{CONFIRMED_PREFIX}%"),
                )
                .order_by(orders.c.pk)
                .limit(limit)
            ).all()
        return [(venue, order_id) for venue, order_id in rows]

    def last_sent_by_others(self, run_id: str, venue: str) -> datetime | None:
        """When another process last sent a request to this venue for this run."""
        return self.leases.last_sent_by_others(run_id, venue)

    # -- lane leases: one worker per venue of a run (leases.py) ------------------------------

    def claim_lanes(
        self,
        run_id: str,
        venues: Iterable[str],
        *,
        limit: int,
        lease: float,
        request_timeout: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Lease free lanes: venue -> seconds to wait before re-sending what was in flight."""
        return self.leases.claim_lanes(
            run_id, venues, limit=limit, lease=lease, request_timeout=request_timeout
        )

    def renew_lanes(self, run_id: str, venues: Iterable[str], *, lease: float) -> set[str]:
        """Extend this worker's leases; the venues it still holds."""
        return self.leases.renew_lanes(run_id, venues, lease=lease)

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """Whether the lease has not run out by this process's monotonic clock."""
        return self.leases.lease_is_fresh(run_id, venue)

    def holds_lane(self, run_id: str, venue: str) -> bool:
        """False once the lane is known to be taken over by another worker."""
        return self.leases.holds_lane(run_id, venue)

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give up this worker's leases on these venues."""
        self.leases.release_lanes(run_id, venues)

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues of the run that another live worker holds."""
        return self.leases.leased_by_others(run_id)

    def venues_held_by_other_runs(self, run_id: str) -> dict[str, list[tuple[str, str]]]:
        """Venues a live process of another run holds: venue -> [(run id, command)]."""
        return self.leases.venues_held_by_other_runs(run_id)

    def _require_lane(self, conn: sa.Connection, run_id: str, venue: str) -> None:
        self.leases.require_lane(conn, run_id, venue)

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        """Orders still to send (or to confirm), per venue."""
        condition = (
            orders.c.outcome == Outcome.CANCEL_PENDING.value
            if to_confirm
            else orders.c.state != DONE
        )
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(orders.c.venue, sa.func.count())
                .where(orders.c.run_id == run_id, condition)
                .group_by(orders.c.venue)
            ).all()
        return {venue: int(n) for venue, n in rows}

    def pending_page(
        self, run_id: str, venue: str, *, after_pk: int, limit: int, to_confirm: bool = False
    ) -> list[OrderToSend]:
        """The next orders of a venue still to send (or, `to_confirm`, whose cancel is still
        pending at the venue), in input order."""
        condition = (
            orders.c.outcome == Outcome.CANCEL_PENDING.value
            if to_confirm
            else orders.c.state == PENDING
        )
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(
                    orders.c.pk,
                    orders.c.venue,
                    orders.c.order_id,
                    orders.c.account_id,
                    orders.c.symbol,
                    orders.c.attempts,
                )
                .where(
                    orders.c.run_id == run_id,
                    orders.c.venue == venue,
                    orders.c.pk > after_pk,
                    condition,
                )
                .order_by(orders.c.pk)
                .limit(limit)
            ).all()
        return [OrderToSend(*row) for row in rows]

    def write_batch(
        self, run_id: str, begins: Sequence[Begin], answers: Sequence[Answer]
    ) -> set[str]:
        """Commit attempts about to be sent and answers received in one transaction; the
        venues whose lane this worker has lost (hotpath.write_batch)."""
        return hotpath.write_batch(
            self._db,
            run_id,
            begins,
            answers,
            worker=self.worker,
            clean=self.clean,
            fenced=self.leases.fenced,
        )

    def settle_unsent(self, run_id: str, venue: str | None, outcome: Outcome, reason: str) -> int:
        """Give every unsent order (of one venue, or all) a resumable outcome, e.g. skipped."""
        condition = [
            orders.c.run_id == run_id,
            orders.c.state == PENDING,
            sa.or_(orders.c.outcome.is_(None), orders.c.outcome == Outcome.SKIPPED.value),
        ]
        if venue is not None:
            condition.append(orders.c.venue == venue)
        with self._db.write() as conn:
            if venue is not None:
                self._require_lane(conn, run_id, venue)
            count = conn.execute(
                orders.update()
                .where(*condition)
                .values(outcome=outcome.value, reason=self.clean(reason))
            ).rowcount
        return int(count or 0)

    # -- requests that carry no order (cancel-all pages and their retries) ----------------

    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request about to leave (write-ahead); its key for `answer_request`.
        LaneLostError, and nothing written, once another worker holds the venue's lane."""
        with self._db.write() as conn:
            self._require_lane(conn, run_id, venue)
            pk = conn.execute(
                requests.insert()
                .values(
                    run_id=run_id,
                    venue=venue,
                    kind=kind,
                    target=self.clean(target),
                    worker=self.worker,
                    sent_at=utcnow(),
                    detail="",
                )
                .returning(requests.c.pk)
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
                requests.update()
                .where(requests.c.pk == pk)
                .values(
                    answered_at=answered_at,
                    http_status=http_status,
                    verdict=verdict,
                    latency_ms=round(latency_ms, 3),
                    detail=self.clean(detail),
                )
            )

    def swept_venues(self, run_id: str) -> set[str]:
        """Venues of the run to which a cancel-all was ever sent (or was about to be): no
        later session sends one there again."""
        with self._db.read() as conn:
            return set(
                conn.execute(
                    sa.select(requests.c.venue)
                    .where(requests.c.run_id == run_id, requests.c.kind == SWEEP)
                    .distinct()
                ).scalars()
            )

    def venue_order_ids(self, run_id: str, venue: str) -> list[str]:
        """Every order id of a venue in the run, whatever its state."""
        with self._db.read() as conn:
            return list(
                conn.execute(
                    sa.select(orders.c.order_id).where(
                        orders.c.run_id == run_id, orders.c.venue == venue
                    )
                ).scalars()
            )

    def request_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order-less request of a run, in the order they were sent, streamed."""
        query = (
            sa.select(
                requests.c.venue,
                requests.c.kind,
                requests.c.target,
                requests.c.sent_at,
                requests.c.answered_at,
                requests.c.http_status,
                requests.c.verdict,
                requests.c.latency_ms,
                requests.c.detail,
            )
            .where(requests.c.run_id == run_id)
            .order_by(requests.c.pk)
        )
        yield from self._db.stream(query)

    # -- reading back -----------------------------------------------------------------------

    def counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Orders per venue per outcome ("" for orders without one yet)."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(orders.c.venue, orders.c.outcome, sa.func.count())
                .where(orders.c.run_id == run_id)
                .group_by(orders.c.venue, orders.c.outcome)
            ).all()
        result: dict[str, dict[str, int]] = {}
        for venue, outcome, n in rows:
            result.setdefault(venue, {})[outcome or ""] = int(n)
        return result

    def state_counts(self, run_id: str) -> dict[str, int]:
        """Orders per state (pending / sending / done)."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(orders.c.state, sa.func.count())
                .where(orders.c.run_id == run_id)
                .group_by(orders.c.state)
            ).all()
        return {state: int(n) for state, n in rows}

    def order_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order of a run in input order, streamed."""
        query = (
            sa.select(
                orders.c.venue,
                orders.c.order_id,
                orders.c.account_id,
                orders.c.symbol,
                orders.c.outcome,
                orders.c.reason,
                orders.c.attempts,
                orders.c.last_http_status,
                orders.c.first_sent_at,
                orders.c.last_answer_at,
            )
            .where(orders.c.run_id == run_id)
            .order_by(orders.c.pk)
        )
        yield from self._db.stream(query)

    def attempt_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every attempt of a run, by order then attempt number, streamed."""
        query = (
            sa.select(
                orders.c.venue,
                orders.c.order_id,
                attempts.c.attempt,
                attempts.c.sent_at,
                attempts.c.answered_at,
                attempts.c.http_status,
                attempts.c.verdict,
                attempts.c.latency_ms,
                attempts.c.detail,
            )
            .join(orders, orders.c.pk == attempts.c.order_pk)
            .where(attempts.c.run_id == run_id)
            .order_by(attempts.c.order_pk, attempts.c.attempt)
        )
        yield from self._db.stream(query)

    # -- helpers ----------------------------------------------------------------------------

    def clean(self, text: str) -> str:
        """`text` as the audit may store it (Redactor.stored): secrets and database passwords
        hidden; NUL, control characters and lone surrogates escaped. Every text the store
        writes passes here, so that no answer or input can fail a write or store a secret."""
        return self.redactor.stored(text)


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid()) if hasattr(os, "getuid") else ""


def _run_info(row: sa.Row[Any]) -> RunInfo:
    try:
        options = json.loads(row.options or "{}")
    except ValueError:
        options = {}
    return RunInfo(
        id=row.id,
        run_key=row.run_key,
        command=row.command,
        status=row.status,
        dry_run=bool(row.dry_run),
        source=row.source,
        reason=row.reason,
        orders_total=row.orders_total,
        duplicates=row.duplicates,
        created_at=row.created_at,
        finished_at=row.finished_at,
        options=options,
    )
