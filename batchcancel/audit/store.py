"""AuditStore: the only code that writes the audit database.

Every method is synchronous and short; the engine calls the hot ones (`write_batch`,
`pending_page`) from a worker thread so the event loop never blocks on the database. Writes
are grouped: one transaction carries many attempt rows and answers, which is what keeps the
write-ahead audit from costing throughput (SQLite in WAL mode commits a few thousand times a
second, but takes a hundred thousand rows a second in grouped commits).
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, cast

import psutil
import sqlalchemy as sa

from batchcancel import __version__
from batchcancel.audit.db import Database
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
    LaneLostError,
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

LOCK_STALE_AFTER: Final = timedelta(seconds=60)
# The hot statements of write_batch, with :name parameters (see Database.sql).
_ANSWER_ATTEMPT: Final = (
    "UPDATE attempts SET answered_at = :answered_at, http_status = :http_status, "
    "verdict = :verdict, latency_ms = :latency_ms, detail = :detail "
    "WHERE order_pk = :pk AND attempt = :attempt"
)
_ANSWER_ORDER: Final = (
    "UPDATE orders SET state = :state, outcome = :outcome, reason = :reason, "
    "last_http_status = :http_status, last_answer_at = :answered_at WHERE pk = :pk"
)
_BEGIN_ATTEMPT: Final = (
    "INSERT INTO attempts (order_pk, attempt, run_id, worker, kind, sent_at, detail) "
    "VALUES (:pk, :attempt, :run_id, :worker, :kind, :sent_at, '')"
)
_ADD_ORDER: Final = (
    "INSERT INTO orders (run_id, seq, venue, order_id, account_id, symbol, state, outcome, "
    "reason, attempts) VALUES (:run_id, :seq, :venue, :order_id, :account_id, :symbol, :state, "
    ":outcome, :reason, 0)"
)
# A confirm (status) poll leaves the final order's state alone; cancels mark it in flight.
# An answer that came back to a worker after its lane was taken over: the attempt row learns
# it unless the new holder has closed the attempt already; the order is the new holder's.
_ANSWER_LATE: Final = (
    "UPDATE attempts SET answered_at = :answered_at, http_status = :http_status, "
    "verdict = :verdict, latency_ms = :latency_ms, detail = :detail "
    "WHERE order_pk = :pk AND attempt = :attempt AND verdict IS NULL"
)
# The fence: matches only while this worker still holds the lane at the epoch it claimed, and
# locks the lane row, so a takeover cannot commit between this check and the commit it guards.
_FENCE: Final = (
    "UPDATE lanes SET epoch = epoch WHERE run_id = :run_id AND venue = :venue "
    "AND owner = :owner AND epoch = :epoch"
)
_BEGIN_ORDER: Final = (
    "UPDATE orders SET state = CASE WHEN :kind = 'confirm' THEN state ELSE 'sending' END, "
    "attempts = :attempt, first_sent_at = COALESCE(first_sent_at, :sent_at) WHERE pk = :pk"
)


@dataclass(slots=True)
class _Fence:
    """This worker's hold on a lane: the epoch it claimed, and by when (time.monotonic) the
    lease the database last granted runs out, counted from before that grant was asked."""

    epoch: int
    valid_until: float
    lost: bool = False


class AuditStore:
    """The audit database of one process. `redact` holds strings that must never be stored."""

    def __init__(self, url: str, *, redact: Iterable[str] = ()) -> None:
        self.url = url
        # The secrets, and the password of the database's own URL (an error may quote it).
        self.redactor = Redactor(redact, urls=(url,))
        self._db = Database(url)
        self.engine = self._db.engine
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_token = f"{self.worker}:{_process_identity()}:{secrets.token_hex(4)}"
        self._fences: dict[tuple[str, str], _Fence] = {}
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
            if owner and owner != self._lock_token and not _lock_is_stale(owner, heartbeat, now):
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
            and not _lock_is_stale(owner, row.lock_heartbeat, now)
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
                conn.exec_driver_sql(self._db.sql(_ADD_ORDER), rows)  # a million rows: plain SQL
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
        with self._db.read() as conn:
            value = conn.execute(
                sa.select(sa.func.max(attempts.c.sent_at))
                .select_from(attempts.join(orders, orders.c.pk == attempts.c.order_pk))
                .where(
                    attempts.c.run_id == run_id,
                    orders.c.venue == venue,
                    attempts.c.worker != self.worker,
                )
            ).scalar()
        return value if isinstance(value, datetime) else None

    # -- lane leases: one worker per venue of a run -----------------------------------------
    #
    # A lease is fenced (SPEC, "Audit and resume"): every claim raises the lane's epoch, and
    # each write of a lane's orders commits only while the row still names this worker at the
    # epoch it claimed (`_fenced`, in the same transaction). Expiry is judged by the database's
    # clock, so a worker whose clock is wrong can neither take a live lane nor keep a dead one.

    def claim_lanes(
        self,
        run_id: str,
        venues: Iterable[str],
        *,
        limit: int,
        lease: float,
        request_timeout: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Lease up to `limit` of these venues that no live worker holds: venue -> seconds to
        wait before re-sending what the previous holder left in flight (its request timeout
        when it may still be alive, else 0). `request_timeout` is ours, for the next holder.

        PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent workers never wait on
        each other or take the same lane; the conditional UPDATE makes it safe on SQLite too.
        """
        wanted = sorted(set(venues))
        if not wanted or limit <= 0:
            return {}
        timeouts = request_timeout or {}
        with self._db.read() as conn:
            owners = set(
                conn.execute(
                    sa.select(lanes.c.owner).where(
                        lanes.c.run_id == run_id, lanes.c.owner.is_not(None)
                    )
                ).scalars()
            )
        dead = [owner for owner in owners if _owner_is_dead(owner)]  # no need to await leases
        taken: dict[str, float] = {}
        try:
            with self._db.write() as conn:
                known = set(
                    conn.execute(sa.select(lanes.c.venue).where(lanes.c.run_id == run_id)).scalars()
                )
                missing = [v for v in wanted if v not in known]
                if missing:
                    conn.execute(lanes.insert(), [{"run_id": run_id, "venue": v} for v in missing])
            started = time.monotonic()
            with self._db.write() as conn:
                now = self._db.now(conn)
                free = sa.or_(
                    lanes.c.owner.is_(None),
                    lanes.c.owner == self._lock_token,
                    lanes.c.lease_until < now,
                    lanes.c.owner.in_(dead),
                )
                candidates = conn.execute(
                    sa.select(lanes.c.venue, lanes.c.owner, lanes.c.epoch, lanes.c.request_timeout)
                    .where(lanes.c.run_id == run_id, lanes.c.venue.in_(wanted), free)
                    .order_by(lanes.c.venue)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                ).all()
                claimed: dict[str, _Fence] = {}
                for row in candidates:
                    count = conn.execute(
                        lanes.update()
                        .where(
                            lanes.c.run_id == run_id,
                            lanes.c.venue == row.venue,
                            lanes.c.epoch == row.epoch,
                            free,
                        )
                        .values(
                            owner=self._lock_token,
                            lease_until=now + timedelta(seconds=lease),
                            epoch=row.epoch + 1,
                            request_timeout=timeouts.get(row.venue),
                        )
                    ).rowcount
                    if count != 1:
                        continue
                    claimed[row.venue] = _Fence(row.epoch + 1, started + lease)
                    alive = row.owner not in (None, self._lock_token, *dead)
                    taken[row.venue] = float(row.request_timeout or 0.0) if alive else 0.0
        except AuditError:
            return {}  # another worker inserted or took lanes at the same moment: next round
        for venue, fence in claimed.items():
            self._fences[run_id, venue] = fence
        return taken

    def renew_lanes(self, run_id: str, venues: Iterable[str], *, lease: float) -> set[str]:
        """Extend this worker's leases; the venues it still holds (a lane taken over since
        is lost for good: nothing more is written or sent for it)."""
        held: set[str] = set()
        started = time.monotonic()
        with self._db.write() as conn:
            now = self._db.now(conn)
            for venue in sorted(set(venues)):
                fence = self._fences.get((run_id, venue))
                if fence is None or fence.lost:
                    continue
                renewed = conn.execute(
                    lanes.update()
                    .where(
                        lanes.c.run_id == run_id,
                        lanes.c.venue == venue,
                        lanes.c.owner == self._lock_token,
                        lanes.c.epoch == fence.epoch,
                    )
                    .values(lease_until=now + timedelta(seconds=lease))
                ).rowcount
                if renewed == 1:
                    held.add(venue)
                else:
                    fence.lost = True
        for venue in held:
            self._fences[run_id, venue].valid_until = started + lease
        return held

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """Whether the lease, as the database last granted it, has not run out by this
        process's monotonic clock (a stalled process finds it has). A lane this worker holds
        no fence for (none was claimed) counts as fresh."""
        fence = self._fences.get((run_id, venue))
        if fence is None:
            return True
        return not fence.lost and time.monotonic() < fence.valid_until

    def holds_lane(self, run_id: str, venue: str) -> bool:
        """False once the lane is known to be taken over by another worker."""
        fence = self._fences.get((run_id, venue))
        return fence is None or not fence.lost

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give up this worker's leases on these venues (those still held at our epoch)."""
        with self._db.write() as conn:
            for venue in sorted(set(venues)):
                fence = self._fences.pop((run_id, venue), None)
                if fence is None or fence.lost:
                    continue
                conn.execute(
                    lanes.update()
                    .where(
                        lanes.c.run_id == run_id,
                        lanes.c.venue == venue,
                        lanes.c.owner == self._lock_token,
                        lanes.c.epoch == fence.epoch,
                    )
                    .values(owner=None, lease_until=None)
                )

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues of the run that another live worker holds."""
        with self._db.read() as conn:
            now = self._db.now(conn)
            return set(
                conn.execute(
                    sa.select(lanes.c.venue).where(
                        lanes.c.run_id == run_id,
                        lanes.c.owner.is_not(None),
                        lanes.c.owner != self._lock_token,
                        lanes.c.lease_until >= now,
                    )
                ).scalars()
            )

    def venues_held_by_other_runs(self, run_id: str) -> dict[str, list[tuple[str, str]]]:
        """The venues a live process of another run holds now: venue -> those runs' (id,
        command). Each run paces itself, so runs at one venue share its limit."""
        with self._db.read() as conn:
            rows = conn.execute(
                sa.select(lanes.c.venue, lanes.c.run_id, lanes.c.owner, runs.c.command)
                .select_from(lanes.join(runs, runs.c.id == lanes.c.run_id))
                .where(
                    lanes.c.run_id != run_id,
                    lanes.c.owner.is_not(None),
                    lanes.c.lease_until >= self._db.now(conn),
                )
                .order_by(lanes.c.venue, lanes.c.run_id)
            ).all()
        held: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            if not _owner_is_dead(row.owner):
                held.setdefault(row.venue, []).append((row.run_id, row.command))
        return held

    def _fenced(self, conn: sa.Connection, run_id: str, venue: str) -> bool:
        """Inside a write transaction: whether this worker still holds `venue`'s lane at the
        epoch it claimed (True where it claimed none). False marks the lane lost for good."""
        fence = self._fences.get((run_id, venue))
        if fence is None:
            return True
        if not fence.lost:
            matched = conn.exec_driver_sql(
                self._db.sql(_FENCE),
                {"run_id": run_id, "venue": venue, "owner": self._lock_token, "epoch": fence.epoch},
            ).rowcount
            fence.lost = matched != 1
        return not fence.lost

    def _require_lane(self, conn: sa.Connection, run_id: str, venue: str) -> None:
        if not self._fenced(conn, run_id, venue):
            raise LaneLostError(venue)

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
        """Commit attempt rows about to be sent and answers received, in one transaction;
        the venues whose lane this worker has lost (their begins are not written: those
        requests must not leave; their answers reach only still-open attempt rows).

        The hot path of every run: plain driver statements (executemany), which cost a
        quarter of the CPU of the same statements built by SQLAlchemy for every batch.
        """
        stamp = self._db.stamp
        with self._db.write() as conn:
            lanes_written = {b.venue for b in begins} | {a.venue for a in answers}
            lost = {v for v in sorted(lanes_written) if not self._fenced(conn, run_id, v)}
            if lost:
                begins = [b for b in begins if b.venue not in lost]
                late = [a for a in answers if a.venue in lost]
                answers = [a for a in answers if a.venue not in lost]
            if lost and late:
                conn.exec_driver_sql(
                    self._db.sql(_ANSWER_LATE),
                    [
                        {
                            "pk": a.order_pk,
                            "attempt": a.attempt,
                            "answered_at": stamp(a.answered_at),
                            "http_status": a.http_status,
                            "verdict": a.verdict,
                            "latency_ms": round(a.latency_ms, 3),
                            "detail": self.clean(a.detail),
                        }
                        for a in late
                    ],
                )
            if answers:
                conn.exec_driver_sql(
                    self._db.sql(_ANSWER_ATTEMPT),
                    [
                        {
                            "pk": a.order_pk,
                            "attempt": a.attempt,
                            "answered_at": stamp(a.answered_at),
                            "http_status": a.http_status,
                            "verdict": a.verdict,
                            "latency_ms": round(a.latency_ms, 3),
                            "detail": self.clean(a.detail),
                        }
                        for a in answers
                    ],
                )
                conn.exec_driver_sql(
                    self._db.sql(_ANSWER_ORDER),
                    [
                        {
                            "pk": a.order_pk,
                            "state": DONE if a.outcome in FINAL else PENDING,
                            "outcome": a.outcome,
                            "reason": self.clean(a.reason),
                            "http_status": a.http_status,
                            "answered_at": stamp(a.answered_at),
                        }
                        for a in answers
                    ],
                )
            if begins:
                conn.exec_driver_sql(
                    self._db.sql(_BEGIN_ATTEMPT),
                    [
                        {
                            "pk": b.order_pk,
                            "attempt": b.attempt,
                            "run_id": run_id,
                            "worker": self.worker,
                            "kind": b.kind,
                            "sent_at": stamp(b.sent_at),
                        }
                        for b in begins
                    ],
                )
                conn.exec_driver_sql(
                    self._db.sql(_BEGIN_ORDER),
                    [
                        {
                            "pk": b.order_pk,
                            "attempt": b.attempt,
                            "sent_at": stamp(b.sent_at),
                            "kind": b.kind,
                        }
                        for b in begins
                    ],
                )
        return lost

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


def _process_identity() -> str:
    """This process's identity (see _identity_of)."""
    return _identity_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _identity_of(_pid: int) -> str:
    """What tells this process apart from any other that shares its hostname and pid: the
    boot, the pid namespace (containers) and the process's start time."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot_file:
            boot = boot_file.read().strip().replace("-", "")[:12]
    except OSError:
        boot = "noboot"
    try:
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        namespace = "nons"
    try:
        started = f"{psutil.Process().create_time():.2f}"
    except psutil.Error:
        started = "0"
    return f"{boot}.{namespace}.{started}"


def _owner_is_dead(owner: str) -> bool:
    """True when `owner` (host:pid:identity:token) is surely a process of this very host,
    boot and pid namespace that no longer runs (its pid is gone, or now names a process
    started at another time). Anything less certain is judged alive: its lease will expire."""
    parts = owner.split(":")
    if len(parts) != 4 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    boot, namespace, started = [*parts[2].split(".", 2), "", ""][:3]
    mine_boot, mine_namespace, _ = _process_identity().split(".", 2)
    if (boot, namespace) != (mine_boot, mine_namespace) or "no" in (boot[:2], namespace[:2]):
        return False
    try:
        other = psutil.Process(int(parts[1]))
        return f"{other.create_time():.2f}" != started
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


def _lock_is_stale(owner: str, heartbeat: datetime | None, now: datetime) -> bool:
    if _owner_is_dead(owner):
        return True
    return heartbeat is None or now - heartbeat > LOCK_STALE_AFTER


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
