"""The audit's record types and vocabulary: what is written and read back, and the words
(order states, attempt kinds) stored with it. No database code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "BULK",
    "CANCEL",
    "CONFIRM",
    "CONFIRMED_PREFIX",
    "DONE",
    "IN_FLIGHT_LOST",
    "IN_FLIGHT_TAKEN_OVER",
    "LIST",
    "LOADING",
    "PENDING",
    "SENDING",
    "SWEEP",
    "Answer",
    "Begin",
    "BookRecord",
    "KnownOrder",
    "OrderToSend",
    "PlannedOrder",
    "RunInfo",
    "SweptOrder",
    "utcnow",
]

PENDING: Final = "pending"  # never sent, or resumable (failed/skipped, or between retries)
SENDING: Final = "sending"  # an attempt is in flight
DONE: Final = "done"  # final outcome
LOADING: Final = "loading"  # run status until every source row is recorded
IN_FLIGHT_LOST: Final = "no answer recorded: the process stopped while this request was in flight"
IN_FLIGHT_TAKEN_OVER: Final = (
    "no answer recorded: another worker took the lane over while this request was in flight"
)


def utcnow() -> datetime:
    """Naive UTC now, with microseconds: what every audit timestamp is."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class PlannedOrder:
    """One input row as planned: `invalid_reason` set means it is recorded invalid, never sent."""

    seq: int
    venue: str
    order_id: str
    account_id: str
    symbol: str
    invalid_reason: str | None = None


@dataclass(frozen=True, slots=True)
class OrderToSend:
    """An order the engine may send: its audit key and its input fields."""

    pk: int
    venue: str
    order_id: str
    account_id: str
    symbol: str
    attempts: int  # attempts recorded so far, in every session


CANCEL: Final = "cancel"  # attempt kinds
BULK: Final = "bulk"  # a cancel carried by a bulk request with other orders
CONFIRM: Final = "confirm"
SWEEP: Final = "sweep"  # a cancel-all request (requests table): it names no order
LIST: Final = "list"  # a list-open-orders request (requests table; `--from-venues`)
CONFIRMED_PREFIX: Final = "confirmed by order status: "  # reason of a confirm-pass outcome


@dataclass(frozen=True, slots=True)
class Begin:
    """An attempt about to be sent: written (and committed) before the request leaves.

    A confirm (order-status) attempt leaves its order's state alone: the order is final.
    """

    order_pk: int
    attempt: int
    sent_at: datetime
    kind: str = CANCEL
    venue: str = ""  # the lane it is sent on: the write is fenced by that lane's lease


@dataclass(frozen=True, slots=True)
class Answer:
    """What came back for an attempt. `outcome` None means the order stays resumable."""

    order_pk: int
    attempt: int
    answered_at: datetime
    http_status: int | None
    verdict: str  # an outcome, "transient" or "auth_refused"
    latency_ms: float
    detail: str
    outcome: str | None
    reason: str
    venue: str = ""  # the lane it came back on (see Begin.venue)


@dataclass(frozen=True, slots=True)
class SweptOrder:
    """An order a cancel-all cancelled although the input did not list it."""

    order_id: str
    symbol: str
    outcome: str
    reason: str
    http_status: int | None
    answered_at: datetime
    latency_ms: float
    detail: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    """A run's identity and standing."""

    id: str
    run_key: str | None
    command: str
    status: str
    dry_run: bool
    source: str
    reason: str
    orders_total: int
    duplicates: int
    created_at: datetime
    finished_at: datetime | None
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class KnownOrder:
    """An order of the run that a venue's list showed working: its key, where it stands, and
    whether this list added it to the run (it was in no input)."""

    pk: int
    order_id: str
    state: str
    outcome: str | None
    from_input: bool  # in the run before any list showed it (seq > 0)
    added: bool  # recorded by this list


@dataclass(frozen=True, slots=True)
class BookRecord:
    """A venue's own book at the end of a session (the books table, one row per venue)."""

    venue: str
    verdict: str  # flat / draining / not_flat
    listed: int = 0
    from_input: int = 0
    cancelled: int = 0
    working_at_end: int = 0
    lists: int = 0
    started_at: datetime | None = None
    first_request_at: datetime | None = None
    last_answer_at: datetime | None = None
    flat_at: datetime | None = None
    seconds_to_flat: float | None = None
    detail: str = ""
