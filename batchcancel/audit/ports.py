"""LaneStore: what the engine needs of an audit store, and nothing more.

AuditStore implements it on SQLite and PostgreSQL; the benchmarks' in-memory store implements
it in dicts. The engine and the audit writer are typed against this Protocol only, so a store
that drifts from it fails the type check instead of a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from batchcancel.audit.records import (
    Answer,
    Begin,
    BookRecord,
    KnownOrder,
    OrderToSend,
    SweptOrder,
)
from batchcancel.outcomes import Outcome

__all__ = ["BookStore", "LaneStore"]


class LaneStore(Protocol):
    """The engine's view of the audit database (every method is synchronous and short; the
    engine calls them from worker threads)."""

    @property
    def dialect(self) -> str:
        """sqlite or postgresql: whether workers spread over lanes."""
        ...

    # -- the hot path -------------------------------------------------------------------------
    def write_batch(
        self, run_id: str, begins: Sequence[Begin], answers: Sequence[Answer]
    ) -> set[str]:
        """Commit attempts about to be sent and answers received; the lanes found lost."""
        ...

    def pending_page(
        self, run_id: str, venue: str, *, after_pk: int, limit: int, to_confirm: bool = False
    ) -> list[OrderToSend]:
        """The next orders of a venue to send (or confirm), in input order."""
        ...

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        """Orders still to send (or to confirm), per venue."""
        ...

    # -- lanes and their leases ----------------------------------------------------------------
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
        ...

    def renew_lanes(self, run_id: str, venues: Iterable[str], *, lease: float) -> set[str]:
        """Extend this worker's leases; the venues it still holds."""
        ...

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give the lanes up."""
        ...

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """Whether the lease has not run out by this process's clock."""
        ...

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues another live worker holds."""
        ...

    def last_sent_by_others(self, run_id: str, venue: str) -> datetime | None:
        """When another process last sent to this venue for this run."""
        ...

    def heartbeat(self, run_id: str) -> None:
        """Keep the run lock fresh."""
        ...

    def loading_elsewhere(self, run_id: str) -> bool:
        """Whether another live process is still recording the run's orders."""
        ...

    # -- taking a lane over -----------------------------------------------------------------
    def recover_in_flight(
        self, run_id: str, *, venue: str | None = None, reset_resumable: bool = True
    ) -> int:
        """Close attempts a dead holder left unanswered; their orders become resumable."""
        ...

    def reset_resumable(self, run_id: str, venue: str) -> None:
        """Failed and skipped orders of the venue are tried afresh."""
        ...

    def in_flight_orders(self, run_id: str, venue: str) -> list[int]:
        """Keys of the venue's orders with an attempt in flight."""
        ...

    def release_in_flight(
        self, run_id: str, venue: str, order_pks: Sequence[int]
    ) -> list[OrderToSend]:
        """After the previous holder's timeout: its in-flight orders, to send again."""
        ...

    def settle_unsent(self, run_id: str, venue: str | None, outcome: Outcome, reason: str) -> int:
        """Give every unsent order (of one venue, or all) a resumable outcome."""
        ...

    # -- cancel-all requests ------------------------------------------------------------------
    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request that names no order, before it leaves; its key."""
        ...

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
        """Record what came back for it."""
        ...

    def swept_venues(self, run_id: str) -> set[str]:
        """Venues a cancel-all was ever sent to in this run."""
        ...

    def venue_order_ids(self, run_id: str, venue: str) -> list[str]:
        """Every order id of a venue in the run."""
        ...

    def add_swept(
        self, run_id: str, venue: str, swept: Sequence[SweptOrder], *, sent_at: datetime
    ) -> int:
        """Record orders a cancel-all cancelled that the input did not list."""
        ...


class BookStore(LaneStore, Protocol):
    """What a `--from-venues` lane needs beyond the LaneStore: the orders a list shows, the
    scope the input gives, and the venue's verdict (AuditStore has them; the benchmarks'
    in-memory store has no books)."""

    def add_listed(
        self, run_id: str, venue: str, request_pk: int, listed: Sequence[tuple[str, str, str]]
    ) -> list[KnownOrder]:
        """The run's orders a list showed working; those it did not hold are recorded now."""
        ...

    def scope_values(self, run_id: str, venue: str) -> tuple[list[str], list[str]]:
        """The account ids and symbols the run's input orders of a venue name."""
        ...

    def record_book(self, run_id: str, record: BookRecord) -> None:
        """Write a venue's verdict on its own book."""
        ...

    def counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Orders per venue per outcome."""
        ...
