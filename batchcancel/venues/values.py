"""The venue boundary's value types: a row, a request, a reply, and an adapter's verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from batchcancel.outcomes import Outcome

__all__ = [
    "BulkAnswer",
    "CancelRequest",
    "OrderRow",
    "Reply",
    "VenueDefaults",
    "Verdict",
    "VerdictKind",
]


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
    # A 3xx (kind AUTH_REFUSED): the venue stops as on refused credentials, but the cause is
    # its base_url, and the halt should say so.
    redirect: bool = False

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
