"""MemoryStore: the LaneStore the engine calls, kept in dicts (audit "off").

Same semantics as batchcancel.audit.store.AuditStore for every LaneStore method (the port in
batchcancel/audit/ports.py; `_fits_lane_store` below makes mypy check both against it), plus
the few set-up and read-back methods the benchmarks use. A lock stands in for transactions:
the engine calls these from worker threads. One process holds every lane, so no lane is
ever lost and no other worker ever sent anything.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from batchcancel.audit.store import (
    CONFIRM,
    DONE,
    IN_FLIGHT_LOST,
    IN_FLIGHT_TAKEN_OVER,
    PENDING,
    SENDING,
    SWEEP,
    Answer,
    Begin,
    OrderToSend,
    PlannedOrder,
    SweptOrder,
    utcnow,
)
from batchcancel.outcomes import FINAL, Outcome

if TYPE_CHECKING:
    from batchcancel.audit.ports import LaneStore
    from batchcancel.audit.store import AuditStore

CANCEL_PENDING = Outcome.CANCEL_PENDING.value


@dataclass
class _Order:
    run_id: str
    venue: str
    order_id: str
    account_id: str
    symbol: str
    state: str
    outcome: str | None
    reason: str
    attempts: int = 0
    first_sent_at: datetime | None = None
    last_http_status: int | None = None
    last_answer_at: datetime | None = None


@dataclass
class _Attempt:
    run_id: str
    sent_at: datetime
    answered_at: datetime | None = None
    http_status: int | None = None
    verdict: str | None = None
    latency_ms: float | None = None
    detail: str = ""

    def answer(
        self, at: datetime, status: int | None, verdict: str, ms: float, detail: str
    ) -> None:
        """Fill in what came back."""
        self.answered_at, self.http_status, self.verdict = at, status, verdict
        self.latency_ms, self.detail = round(ms, 3), detail


class MemoryStore:
    """An audit store that forgets everything when the process ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._orders: dict[int, _Order] = {}
        self._by_venue: dict[tuple[str, str], list[int]] = {}  # pks in order, per run and venue
        self._attempts: dict[tuple[int, int], _Attempt] = {}
        self._requests: dict[int, tuple[str, str, str, _Attempt]] = {}  # run, venue, kind
        self._lanes: dict[tuple[str, str], tuple[str, datetime]] = {}  # owner, lease_until
        self._token = f"memory:{id(self)}"
        self._next_pk = 1
        self.heartbeats = 0
        self.last_heartbeat: datetime | None = None

    # -- set-up and read-back (not called by the engine) -------------------------------------

    def add_orders(self, run_id: str, planned: Iterable[PlannedOrder]) -> int:
        """Record planned orders as AuditStore.add_orders does."""
        count = 0
        with self._lock:
            for p in planned:
                pk, self._next_pk = self._next_pk, self._next_pk + 1
                invalid = p.invalid_reason is not None
                self._orders[pk] = _Order(
                    run_id,
                    p.venue,
                    p.order_id,
                    p.account_id,
                    p.symbol,
                    state=DONE if invalid else PENDING,
                    outcome=Outcome.INVALID.value if invalid else None,
                    reason=p.invalid_reason or "",
                )
                self._by_venue.setdefault((run_id, p.venue), []).append(pk)
                count += 1
        return count

    def counts(self, run_id: str) -> dict[str, dict[str, int]]:
        """Orders per venue per outcome ("" for none yet), as AuditStore.counts."""
        result: dict[str, Counter[str]] = {}
        for order in self._orders.values():
            if order.run_id == run_id:
                result.setdefault(order.venue, Counter())[order.outcome or ""] += 1
        return {venue: dict(c) for venue, c in result.items()}

    def attempt_count(self, run_id: str) -> int:
        """How many attempts the run has."""
        return sum(1 for a in self._attempts.values() if a.run_id == run_id)

    # -- what the engine calls ----------------------------------------------------------------

    @property
    def dialect(self) -> str:
        """One process holds every lane at once, as with SQLite."""
        return "sqlite"

    def recover_in_flight(
        self, run_id: str, *, venue: str | None = None, reset_resumable: bool = True
    ) -> int:
        """Close unanswered attempts (of one venue, or all); their orders become pending; with
        `reset_resumable`, failed and skipped orders lose that outcome."""
        with self._lock:
            lost = 0
            for (pk, _), attempt in self._attempts.items():
                if (
                    attempt.run_id == run_id
                    and attempt.verdict is None
                    and (venue is None or self._orders[pk].venue == venue)
                ):
                    attempt.verdict, attempt.detail = "transient", IN_FLIGHT_LOST
                    lost += 1
            for order in self._orders.values():
                if order.run_id != run_id or (venue is not None and order.venue != venue):
                    continue
                if order.state == SENDING:
                    order.state = PENDING
                if reset_resumable and order.state == PENDING and order.outcome is not None:
                    order.outcome = None
            return lost

    def claim_lanes(
        self,
        run_id: str,
        venues: Iterable[str],
        *,
        limit: int,
        lease: float,
        request_timeout: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        """Lease up to `limit` of these venues that nobody else holds: the ones taken, each
        with no wait (one process: nobody else can have requests in flight)."""
        now = utcnow()
        taken: dict[str, float] = {}
        with self._lock:
            for venue in sorted(set(venues)):
                if len(taken) >= limit:
                    break
                owner, until = self._lanes.get((run_id, venue), (None, now))
                if owner is None or owner == self._token or until < now:
                    self._lanes[run_id, venue] = (self._token, now + timedelta(seconds=lease))
                    taken[venue] = 0.0
        return taken

    def renew_lanes(self, run_id: str, venues: Iterable[str], *, lease: float) -> set[str]:
        """Extend this store's leases; the venues it still holds."""
        until = utcnow() + timedelta(seconds=lease)
        held = set()
        with self._lock:
            for venue in venues:
                if self._lanes.get((run_id, venue), (None,))[0] == self._token:
                    self._lanes[run_id, venue] = (self._token, until)
                    held.add(venue)
        return held

    def loading_elsewhere(self, run_id: str) -> bool:
        """No other process: never."""
        return False

    def lease_is_fresh(self, run_id: str, venue: str) -> bool:
        """One process holds every lane: always."""
        return True

    def reset_resumable(self, run_id: str, venue: str) -> None:
        """Failed and skipped orders of the venue lose that outcome."""
        with self._lock:
            for order in self._orders.values():
                if order.run_id == run_id and order.venue == venue and order.state == PENDING:
                    order.outcome = None

    def in_flight_orders(self, run_id: str, venue: str) -> list[int]:
        """The venue's orders with an attempt in flight."""
        with self._lock:
            return [
                pk
                for pk, o in self._orders.items()
                if o.run_id == run_id and o.venue == venue and o.state == SENDING
            ]

    def release_in_flight(
        self, run_id: str, venue: str, order_pks: Sequence[int]
    ) -> list[OrderToSend]:
        """These in-flight orders: one whose attempt has a final answer takes it; the others'
        open attempts are closed as taken over and they become sendable (returned)."""
        released = []
        with self._lock:
            for pk in sorted(order_pks):
                o = self._orders[pk]
                if o.run_id != run_id or o.state != SENDING:
                    continue
                attempt = self._attempts.get((pk, o.attempts))
                if attempt is not None and attempt.verdict in FINAL:
                    o.state, o.outcome = DONE, attempt.verdict
                    o.reason = f"answered to the worker that lost the lane: {attempt.detail}"
                    o.last_http_status = attempt.http_status
                    o.last_answer_at = attempt.answered_at
                    continue
                if attempt is not None and attempt.verdict is None:
                    attempt.verdict, attempt.detail = "transient", IN_FLIGHT_TAKEN_OVER
                o.state = PENDING
                released.append(
                    OrderToSend(pk, o.venue, o.order_id, o.account_id, o.symbol, o.attempts)
                )
        return released

    def release_lanes(self, run_id: str, venues: Iterable[str]) -> None:
        """Give up this store's leases on these venues."""
        with self._lock:
            for venue in venues:
                if self._lanes.get((run_id, venue), (None,))[0] == self._token:
                    del self._lanes[run_id, venue]

    def leased_by_others(self, run_id: str) -> set[str]:
        """Venues another live holder leases: none, in one process."""
        now = utcnow()
        with self._lock:
            return {
                venue
                for (run, venue), (owner, until) in self._lanes.items()
                if run == run_id and owner != self._token and until >= now
            }

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        """Orders still to send (or to confirm), per venue."""
        with self._lock:
            work: Counter[str] = Counter(
                o.venue
                for o in self._orders.values()
                if o.run_id == run_id
                and (o.outcome == CANCEL_PENDING if to_confirm else o.state != DONE)
            )
        return dict(work)

    def pending_page(
        self, run_id: str, venue: str, *, after_pk: int, limit: int, to_confirm: bool = False
    ) -> list[OrderToSend]:
        """The next orders of a venue to send (or confirm) after `after_pk`, in input order."""
        page: list[OrderToSend] = []
        with self._lock:
            pks = self._by_venue.get((run_id, venue), [])
            for pk in pks[bisect.bisect_right(pks, after_pk) :]:
                o = self._orders[pk]
                if (o.outcome == CANCEL_PENDING) if to_confirm else (o.state == PENDING):
                    page.append(
                        OrderToSend(pk, o.venue, o.order_id, o.account_id, o.symbol, o.attempts)
                    )
                    if len(page) >= limit:
                        break
        return page

    def write_batch(
        self, run_id: str, begins: Sequence[Begin], answers: Sequence[Answer]
    ) -> set[str]:
        """Apply answers, then record attempts about to be sent (one "transaction"); no
        lane is ever lost in one process."""
        with self._lock:
            for a in answers:
                attempt = self._attempts.get((a.order_pk, a.attempt))
                if attempt is not None:
                    attempt.answer(a.answered_at, a.http_status, a.verdict, a.latency_ms, a.detail)
                order = self._orders[a.order_pk]
                order.state = DONE if a.outcome in FINAL else PENDING
                order.outcome = a.outcome
                order.reason = a.reason
                order.last_http_status = a.http_status
                order.last_answer_at = a.answered_at
            for b in begins:
                self._attempts[b.order_pk, b.attempt] = _Attempt(run_id, b.sent_at)
                order = self._orders[b.order_pk]
                if b.kind != CONFIRM:  # a confirm leaves the (final) state alone
                    order.state = SENDING
                order.attempts = b.attempt
                if order.first_sent_at is None:
                    order.first_sent_at = b.sent_at
        return set()

    def settle_unsent(self, run_id: str, venue: str | None, outcome: Outcome, reason: str) -> int:
        """Give every unsent order (of one venue, or all) a resumable outcome."""
        count = 0
        with self._lock:
            for order in self._orders.values():
                if (
                    order.run_id == run_id
                    and order.state == PENDING
                    and order.outcome in (None, Outcome.SKIPPED.value)
                    and (venue is None or order.venue == venue)
                ):
                    order.outcome, order.reason = outcome.value, reason
                    count += 1
        return count

    def heartbeat(self, run_id: str) -> None:
        """Nothing to keep fresh: no run lock in memory."""
        self.heartbeats += 1
        self.last_heartbeat = utcnow()

    def last_sent_by_others(self, run_id: str, venue: str) -> datetime | None:
        """When another process last sent to the venue: never, in one process."""
        return None

    # -- cancel-all requests ------------------------------------------------------------------

    def begin_request(self, run_id: str, venue: str, *, kind: str, target: str) -> int:
        """Record a request that names no order, before it leaves; its key."""
        with self._lock:
            pk = len(self._requests) + 1
            self._requests[pk] = (run_id, venue, kind, _Attempt(run_id, utcnow()))
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
        with self._lock:
            self._requests[pk][3].answer(answered_at, http_status, verdict, latency_ms, detail)

    def swept_venues(self, run_id: str) -> set[str]:
        """Venues of the run to which a cancel-all was ever sent (or was about to be)."""
        with self._lock:
            return {
                v for run, v, kind, _ in self._requests.values() if (run, kind) == (run_id, SWEEP)
            }

    def venue_order_ids(self, run_id: str, venue: str) -> list[str]:
        """Every order id of a venue in the run, whatever its state."""
        with self._lock:
            return [self._orders[pk].order_id for pk in self._by_venue.get((run_id, venue), [])]

    def add_swept(
        self, run_id: str, venue: str, swept: Sequence[SweptOrder], *, sent_at: datetime
    ) -> int:
        """Record orders a cancel-all cancelled that the input did not list: each an order of
        the run, final at once, with its one (bulk) attempt."""
        with self._lock:
            for order in swept:
                pk, self._next_pk = self._next_pk, self._next_pk + 1
                self._orders[pk] = _Order(
                    run_id, venue, order.order_id, "", order.symbol, DONE, order.outcome,
                    order.reason, 1, sent_at, order.http_status, order.answered_at,
                )  # fmt: skip
                self._by_venue.setdefault((run_id, venue), []).append(pk)
                attempt = self._attempts[pk, 1] = _Attempt(run_id, sent_at)
                attempt.answer(
                    order.answered_at,
                    order.http_status,
                    order.outcome,
                    order.latency_ms,
                    order.detail,
                )
        return len(swept)


def _fits_lane_store(memory: MemoryStore, audit: AuditStore) -> tuple[LaneStore, LaneStore]:
    """Never called: mypy checks here that both stores implement the engine's LaneStore."""
    return memory, audit
