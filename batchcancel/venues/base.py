"""The sans-I/O venue boundary: value types, the Venue protocol, and parsers every adapter shares.

An adapter validates a row, builds the exact request for it and classifies the answer. It
never does I/O: transport.py sends, engine.py retries and paces.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, Protocol

from batchcancel.outcomes import Outcome

__all__ = [
    "EXCERPT_CHARS",
    "BulkAnswer",
    "BulkVenue",
    "CancelRequest",
    "OrderRow",
    "Reply",
    "SweepVenue",
    "Venue",
    "VenueDefaults",
    "Verdict",
    "VerdictKind",
    "excerpt",
    "generic_transient",
    "is_integer_id",
    "json_object",
    "message_of",
    "retry_after_seconds",
    "supports_bulk",
    "supports_sweep",
    "unclassified",
]

EXCERPT_CHARS: Final = 200
MAX_RETRY_AFTER: Final = 3600.0  # a venue asking for more than an hour is capped at one
_INT_RE: Final = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class VenueDefaults:
    """A venue's production endpoint and documented (or assumed) limits; config may override."""

    base_url: str  # '' where the venue has no public production host
    rate_limit: int  # requests per period, per credential
    period: float  # seconds
    cooldown: float  # pause after a 429 that carries no Retry-After


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order to cancel, as the input gave it. Missing optional columns are ''."""

    venue: str
    order_id: str
    account_id: str = ""
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """An exact HTTP request: `path` is appended to the venue's base URL, already URL-encoded."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the venue answered. Header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class VerdictKind(StrEnum):
    """How the engine treats an answer."""

    FINAL = "final"  # the order has its outcome
    TRANSIENT = "transient"  # outcome unknown: retry with backoff
    AUTH_REFUSED = "auth_refused"  # stop sending to this venue


@dataclass(frozen=True, slots=True)
class Verdict:
    """An adapter's reading of one answer."""

    kind: VerdictKind
    outcome: Outcome | None = None
    reason: str = ""
    # 429: the whole venue pauses, for retry_after seconds or the venue's cooldown.
    rate_limited: bool = False
    retry_after: float | None = None
    # Transient once, auth refusal if the same order's previous attempt said the same.
    escalate_on_repeat: bool = False

    @classmethod
    def final(cls, outcome: Outcome, reason: str = "") -> Verdict:
        """The order ended with `outcome`."""
        return cls(VerdictKind.FINAL, outcome, reason)

    @classmethod
    def transient(
        cls, reason: str, *, rate_limited: bool = False, retry_after: float | None = None
    ) -> Verdict:
        """Outcome unknown: retry later."""
        return cls(VerdictKind.TRANSIENT, None, reason, rate_limited, retry_after)

    @classmethod
    def auth_refused(cls, reason: str) -> Verdict:
        """The venue refused our credentials."""
        return cls(VerdictKind.AUTH_REFUSED, None, reason)

    @property
    def label(self) -> str:
        """The audit's `verdict` column: an outcome, `transient` or `auth_refused`."""
        return str(self.outcome) if self.outcome is not None else str(self.kind)


class Venue(Protocol):
    """What every venue adapter provides. Construct it with the credentials it reads."""

    name: ClassVar[str]
    required_columns: ClassVar[frozenset[str]]
    credential_vars: ClassVar[tuple[str, ...]]
    defaults: ClassVar[VenueDefaults]

    def __init__(self, credentials: Mapping[str, str]) -> None: ...

    def credentials_problem(self) -> str | None:
        """Why the credentials given cannot work (e.g. a variable is unset), or None."""
        ...

    def validate(self, row: OrderRow) -> str | None:
        """Why the row cannot be a valid order at this venue, or None."""
        ...

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """The exact cancel request for a valid row; `now` is Unix time in seconds."""
        ...

    def classify(self, reply: Reply) -> Verdict:
        """What the venue's answer to a cancel means."""
        ...

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """The order-status request of the confirm pass (VENUES.md "Confirm"), or None when
        the venue documents no such endpoint."""
        ...

    def classify_status(self, reply: Reply) -> Verdict:
        """What an order-status answer means for a cancel: final CANCELED (confirmed),
        ALREADY_CLOSED (it filled or finished instead), CANCEL_PENDING (not settled yet),
        NOT_FOUND; or transient / auth refused as for cancels."""
        ...


@dataclass(frozen=True, slots=True)
class BulkAnswer:
    """An adapter's reading of a bulk-cancel answer.

    `whole` applies to every order of the request (transient, auth refused); otherwise
    `per_order` gives the outcome of each order the answer accounts for, and every order it
    does not account for is cancelled on its own afterwards.
    """

    whole: Verdict | None
    per_order: Mapping[str, Verdict]
    note: str = ""
    # A sweep answer: the symbol of each order listed (for orders not in the input), and
    # whether the venue may have more to cancel for the same target (its limit was reached).
    symbols: Mapping[str, str] = field(default_factory=dict)
    more: bool = False


class BulkVenue(Venue, Protocol):
    """A venue with a bulk-cancel endpoint for a list of order ids."""

    bulk_size: ClassVar[int]  # most order ids per bulk request

    def build_bulk_cancel(self, rows: Sequence[OrderRow], *, now: float) -> CancelRequest:
        """One request cancelling every row."""
        ...

    def classify_bulk(self, reply: Reply) -> BulkAnswer:
        """What a bulk answer says of each order."""
        ...


class SweepVenue(Venue, Protocol):
    """A venue with a cancel-all endpoint: it cancels every open order of the account (or of
    a market and side), listed in the input or not. Used only with `--all-open`."""

    def sweep_targets(self, rows: Sequence[OrderRow]) -> list[str]:
        """The sweep requests that cover the rows (one per market and side, or one for the
        whole account); [] when none can be built for them."""
        ...

    def sweep_key(self, row: OrderRow) -> str:
        """The row's order id as a sweep answer names it."""
        ...

    def build_sweep(self, target: str, *, now: float) -> CancelRequest:
        """The cancel-all request for one target of `sweep_targets`."""
        ...

    def classify_sweep(self, reply: Reply) -> BulkAnswer:
        """What a cancel-all answer says of each order it lists (keyed as `sweep_key`)."""
        ...


def supports_sweep(venue: Venue | type[Venue] | None) -> bool:
    """True when the adapter (or its class) has a cancel-all endpoint."""
    return hasattr(venue, "build_sweep")


def supports_bulk(venue: Venue) -> bool:
    """True when the adapter has a bulk-cancel endpoint for order ids."""
    return getattr(venue, "bulk_size", 0) > 1 and hasattr(venue, "build_bulk_cancel")


def is_integer_id(value: str) -> bool:
    """True for a plain non-negative decimal integer of at most 19 digits."""
    return _INT_RE.fullmatch(value) is not None


def json_object(body: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is empty, not JSON, or not an object."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def message_of(obj: Mapping[str, object] | None, *keys: str) -> str:
    """The first string among `keys` in obj, lower-cased ('' when there is none)."""
    if obj is None:
        return ""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value.lower()
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return " ".join(str(v) for v in value).lower()
    return ""


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of a body for the audit and the report."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (delta form only), or None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None  # "inf", "nan", negative: not a delay we can honour; use the cooldown
    return min(seconds, MAX_RETRY_AFTER)


def generic_transient(reply: Reply) -> Verdict | None:
    """The answers every venue retries: 429 (pausing the venue) and 5xx."""
    if reply.status == 429:
        return Verdict.transient(
            "HTTP 429 rate limited",
            rate_limited=True,
            retry_after=retry_after_seconds(reply.headers),
        )
    if reply.status >= 500:
        return Verdict.transient(f"HTTP {reply.status} server error")
    return None


def unclassified(reply: Reply) -> Verdict:
    """An answer the adapter does not know: `rejected`, with evidence for a human."""
    return Verdict.final(
        Outcome.REJECTED, f"unrecognised answer HTTP {reply.status}: {excerpt(reply.body, 120)}"
    )
