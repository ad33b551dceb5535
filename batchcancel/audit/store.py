"""AuditStore: the one object the rest of batchcancel writes the audit database through; it
holds the process's identity and redactor and hands each call to the module that owns it.

Every method is synchronous and short; the engine calls the hot ones (`write_batch`,
`pending_page`) from a worker thread so the event loop never blocks on the database. Writes
are grouped: one transaction carries many attempt rows and answers, which is what keeps the
write-ahead audit from costing throughput (SQLite in WAL mode commits a few thousand times a
second, but takes a hundred thousand rows a second in grouped commits).

Where each job lives: db.py (connections, errors, clock), runs.py (runs, lock, sessions),
orders.py (the order ledger), hotpath.py (write_batch and its raw SQL), leases.py (lane
leases and their fences), sweeps.py (cancel-all records), reading.py (read-back).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from batchcancel.audit import hotpath
from batchcancel.audit.books import Books
from batchcancel.audit.chain import Chains, Sealed
from batchcancel.audit.db import Database
from batchcancel.audit.leases import LOCK_STALE_AFTER, Leases, process_identity

# Re-exported: tests start processes that import it from here by its old name.
from batchcancel.audit.leases import process_identity as _process_identity  # noqa: F401
from batchcancel.audit.migrate import upgrade_to_head
from batchcancel.audit.orders import Ledger
from batchcancel.audit.reading import Reading
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
    BookRecord,
    KnownOrder,
    OrderToSend,
    PlannedOrder,
    RunInfo,
    SweptOrder,
    utcnow,
)
from batchcancel.audit.runs import RunBook
from batchcancel.audit.sweeps import Sweeps
from batchcancel.outcomes import Outcome
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


class AuditStore:
    """The audit database of one process. `redact` holds strings that must never be stored.

    Its parts are public for code that wants one concern only: `runs`, `orders`, `leases`,
    `sweeps`, `reading`; the methods below keep every caller's names and signatures."""

    def __init__(self, url: str, *, redact: Iterable[str] = (), signing_key: Any = None) -> None:
        self.url = url
        # The secrets, and the password of the database's own URL (an error may quote it).
        self.redactor = Redactor(redact, urls=(url,))
        self._db = Database(url)
        self.engine = self._db.engine
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock_token = f"{self.worker}:{process_identity()}:{secrets.token_hex(4)}"
        self.signing_key = signing_key  # Ed25519 private key object, or None: digests unsigned
        self.leases = Leases(self._db, worker=self.worker, token=self._lock_token)
        self.chains = Chains(self._db, token=self._lock_token)
        self.runs = RunBook(self._db, token=self._lock_token, clean=self.clean, chains=self.chains)
        self.orders = Ledger(self._db, leases=self.leases, clean=self.clean, chains=self.chains)
        self.sweeps = Sweeps(
            self._db, leases=self.leases, worker=self.worker, clean=self.clean, chains=self.chains
        )
        self.books = Books(self._db, leases=self.leases, clean=self.clean, chains=self.chains)
        self.reading = Reading(self._db)
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

    def clean(self, text: str) -> str:
        """`text` as the audit may store it (Redactor.stored): secrets and database passwords
        hidden; NUL, control characters and lone surrogates escaped. Every text the store
        writes passes here, so that no answer or input can fail a write or store a secret."""
        return self.redactor.stored(text)

    # -- runs, the run lock, sessions (runs.py) ------------------------------------------------

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
        """Record a new run, locked by this process; its id. RunKeyTakenError on a race."""
        return self.runs.create_run(
            command=command,
            run_key=run_key,
            source=source,
            options=options,
            reason=reason,
            command_line=command_line,
            dry_run=dry_run,
        )

    def find_run(self, run: str) -> RunInfo:
        """A run by id or run key; RunNotFoundError if neither matches."""
        return self.runs.find_run(run)

    def find_run_key(self, run_key: str) -> RunInfo | None:
        """The run with this key, if any."""
        return self.runs.find_run_key(run_key)

    def recent_runs(self, limit: int = 20) -> list[RunInfo]:
        """The newest runs first."""
        return self.runs.recent_runs(limit)

    def set_run_status(self, run_id: str, status: str) -> None:
        """Record where the run stands, and when the latest session ended."""
        self.runs.set_run_status(run_id, status)

    def set_totals(self, run_id: str, *, orders_total: int, duplicates: int) -> None:
        """Record how many orders the run holds once they are all loaded."""
        self.runs.set_totals(run_id, orders_total=orders_total, duplicates=duplicates)

    def lock_run(self, run_id: str) -> None:
        """Take the run for this process; RunLockedError if another live process holds it."""
        self.runs.lock_run(run_id)

    def heartbeat(self, run_id: str) -> None:
        """Keep the run lock fresh."""
        self.runs.heartbeat(run_id)

    def loading_elsewhere(self, run_id: str) -> bool:
        """Whether another live process is still recording the run's orders."""
        return self.runs.loading_elsewhere(run_id)

    def unlock_run(self, run_id: str) -> None:
        """Release the run lock if this process holds it."""
        self.runs.unlock_run(run_id)

    def start_session(self, run_id: str, *, command: str, command_line: str) -> int:
        """Record this process's turn at the run; its session id."""
        return self.runs.start_session(run_id, command=command, command_line=command_line)

    def finish_session(self, session_id: int, status: str) -> None:
        """Record how this process's turn ended, and seal the run's digest as it stands."""
        run_id = self.runs.finish_session(session_id, status)
        self.seal(run_id)

    # -- the hash chains (chain.py) ------------------------------------------------------------

    def digest(self, run_id: str) -> str:
        """The run's digest as the database holds it now: one hash of every chain's head."""
        return self.chains.digest(run_id)

    def seal(self, run_id: str) -> str:
        """Record the digest on the run (signed when a signing key is configured)."""
        return self.chains.seal(run_id, self.signing_key)

    def sealed(self, run_id: str) -> Sealed:
        """The digest sealed at the end of the run's latest session, and its signature."""
        return self.chains.sealed(run_id)

    # -- the order ledger (orders.py) ----------------------------------------------------------

    def add_orders(self, run_id: str, planned: Iterable[PlannedOrder]) -> int:
        """Insert one chunk of planned orders; invalid ones are final at once."""
        return self.orders.add_orders(run_id, planned)

    def max_seq(self, run_id: str) -> int:
        """The highest source row number recorded for the run (0 if none)."""
        return self.orders.max_seq(run_id)

    def order_count(self, run_id: str) -> int:
        """How many orders the run holds."""
        return self.orders.order_count(run_id)

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        """Orders still to send (or to confirm), per venue."""
        return self.orders.venues_with_work(run_id, to_confirm=to_confirm)

    def pending_page(
        self, run_id: str, venue: str, *, after_pk: int, limit: int, to_confirm: bool = False
    ) -> list[OrderToSend]:
        """The next orders of a venue still to send (or confirm), in input order."""
        return self.orders.pending_page(
            run_id, venue, after_pk=after_pk, limit=limit, to_confirm=to_confirm
        )

    def settle_unsent(self, run_id: str, venue: str | None, outcome: Outcome, reason: str) -> int:
        """Give every unsent order (of one venue, or all) a resumable outcome, e.g. skipped."""
        return self.orders.settle_unsent(run_id, venue, outcome, reason)

    def recover_in_flight(
        self, run_id: str, *, venue: str | None = None, reset_resumable: bool = True
    ) -> int:
        """Close attempts left unanswered by a dead process; their orders become resumable."""
        return self.orders.recover_in_flight(run_id, venue=venue, reset_resumable=reset_resumable)

    def reset_resumable(self, run_id: str, venue: str) -> None:
        """A new holder of the lane retries the venue's failed and skipped orders afresh."""
        self.orders.reset_resumable(run_id, venue)

    def in_flight_orders(self, run_id: str, venue: str) -> list[int]:
        """The venue's orders with an attempt in flight (the keys of their orders)."""
        return self.orders.in_flight_orders(run_id, venue)

    def release_in_flight(
        self, run_id: str, venue: str, order_pks: Sequence[int]
    ) -> list[OrderToSend]:
        """After the previous holder's request timeout: its in-flight orders, to send again."""
        return self.orders.release_in_flight(run_id, venue, order_pks)

    # -- the hot path (hotpath.py) -------------------------------------------------------------

    def write_batch(
        self, run_id: str, begins: Sequence[Begin], answers: Sequence[Answer]
    ) -> set[str]:
        """Commit attempts about to be sent and answers received in one transaction; the
        venues whose lane this worker has lost (their begins are not written)."""
        return hotpath.write_batch(
            self._db,
            run_id,
            begins,
            answers,
            worker=self.worker,
            clean=self.clean,
            fenced=self.leases.fenced,
            chains=self.chains,
        )

    # -- lane leases (leases.py) ---------------------------------------------------------------

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

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give up this worker's leases on these venues."""
        self.leases.release_lanes(run_id, venues)

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """Whether the lease has not run out by this process's monotonic clock."""
        return self.leases.lease_is_fresh(run_id, venue)

    def holds_lane(self, run_id: str, venue: str) -> bool:
        """False once the lane is known to be taken over by another worker."""
        return self.leases.holds_lane(run_id, venue)

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues of the run that another live worker holds."""
        return self.leases.leased_by_others(run_id)

    def venues_held_by_other_runs(self, run_id: str) -> dict[str, list[tuple[str, str]]]:
        """Venues a live process of another run holds: venue -> [(run id, command)]."""
        return self.leases.venues_held_by_other_runs(run_id)

    def last_sent_by_others(self, run_id: str, venue: str) -> datetime | None:
        """When another process last sent a request to this venue for this run."""
        return self.leases.last_sent_by_others(run_id, venue)

    # -- cancel-all records (sweeps.py) --------------------------------------------------------

    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request that names no order, before it leaves; its key."""
        return self.sweeps.begin_request(run_id, venue, kind=kind, target=target)

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
        self.sweeps.answer_request(
            pk,
            answered_at=answered_at,
            http_status=http_status,
            verdict=verdict,
            latency_ms=latency_ms,
            detail=detail,
        )

    def swept_venues(self, run_id: str) -> set[str]:
        """Venues of the run to which a cancel-all was ever sent (or was about to be)."""
        return self.sweeps.swept_venues(run_id)

    def venue_order_ids(self, run_id: str, venue: str) -> list[str]:
        """Every order id of a venue in the run, whatever its state."""
        return self.sweeps.venue_order_ids(run_id, venue)

    def add_swept(
        self, run_id: str, venue: str, swept: Sequence[SweptOrder], *, sent_at: datetime
    ) -> int:
        """Record orders a cancel-all cancelled that the input did not list."""
        return self.sweeps.add_swept(run_id, venue, swept, sent_at=sent_at)

    # -- the venues' own books (books.py) ------------------------------------------------------

    def add_listed(
        self, run_id: str, venue: str, request_pk: int, listed: Sequence[tuple[str, str, str]]
    ) -> list[KnownOrder]:
        """The run's orders a list showed working; those it did not hold are recorded now."""
        return self.books.add_listed(run_id, venue, request_pk, listed)

    def scope_values(self, run_id: str, venue: str) -> tuple[list[str], list[str]]:
        """The account ids and symbols the run's input orders of a venue name."""
        return self.books.scope_values(run_id, venue)

    def record_book(self, run_id: str, record: BookRecord) -> None:
        """Write a venue's verdict on its own book."""
        self.books.record_book(run_id, record)

    def book_records(self, run_id: str) -> dict[str, BookRecord]:
        """Each venue's verdict on its own book, by venue."""
        return self.books.books(run_id)

    # -- reading back (reading.py) -------------------------------------------------------------

    def counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Orders per venue per outcome ("" for orders without one yet)."""
        return self.reading.counts(run_id)

    def state_counts(self, run_id: str) -> dict[str, int]:
        """Orders per state (pending / sending / done)."""
        return self.reading.state_counts(run_id)

    def not_in_input(self, run_id: str) -> dict[str, int]:
        """Per venue, the orders a cancel-all cancelled that the input did not list."""
        return self.reading.not_in_input(run_id)

    def filled_while_pending(self, run_id: str, limit: int = 20) -> list[tuple[str, str]]:
        """(venue, order_id) of orders whose pending cancel the confirm pass found filled."""
        return self.reading.filled_while_pending(run_id, limit)

    def order_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order of a run in input order, streamed."""
        return self.reading.order_rows(run_id)

    def attempt_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every attempt of a run, by order then attempt number, streamed."""
        return self.reading.attempt_rows(run_id)

    def request_rows(self, run_id: str) -> Iterator[sa.Row[Any]]:
        """Every order-less request of a run, in the order they were sent, streamed."""
        return self.reading.request_rows(run_id)
