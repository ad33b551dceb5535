"""sFOX: `DELETE /v1/orders/{order_id}` with a Bearer API key (seed 000, VENUES.md)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import ClassVar, Final
from urllib.parse import quote

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
    CancelRequest,
    OrderRow,
    Reply,
    VenueDefaults,
    Verdict,
    excerpt,
    generic_transient,
    json_object,
    message_of,
    unclassified,
)

__all__ = ["SfoxVenue"]

API_KEY_VAR: Final = "BATCHCANCEL_SFOX_API_KEY"
_ORDER_ID_RE: Final = re.compile(r"[!-~]{1,128}")  # printable ASCII, no spaces

# seed 000: 200 bodies' "status", matched case-insensitively (casing differs by endpoint).
_STATUS_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "canceled": Outcome.CANCELED,
    "cancelled": Outcome.CANCELED,
    "cancel pending": Outcome.CANCEL_PENDING,
    "order already finished": Outcome.ALREADY_CLOSED,
}
# seed 000: 400 {"error": "internal error"} means "order_id does not exist in your account".
_NOT_FOUND_WORDS: Final = ("internal error", "does not exist", "not found")
# ASSUMED (VENUES.md): a repeat cancel answers 400 "...already done/canceled...".
_CLOSED_WORDS: Final = ("already", "done", "canceled", "cancelled", "finished", "filled")


class SfoxVenue:
    """The sFOX adapter."""

    name: ClassVar[str] = "sfox"
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (API_KEY_VAR,)
    # sFOX docs: production host; 250 requests per 10 s per IP; after a 429 wait 60 s.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://api.sfox.com", rate_limit=250, period=10.0, cooldown=60.0
    )

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._api_key = credentials.get(API_KEY_VAR, "")

    def credentials_problem(self) -> str | None:
        """sFOX needs its API key."""
        return None if self._api_key else f"{API_KEY_VAR} is not set"

    def validate(self, row: OrderRow) -> str | None:
        """An sFOX order id is a non-empty token of printable characters."""
        if not _ORDER_ID_RE.fullmatch(row.order_id):
            return f"sfox order_id must be 1-128 printable characters without spaces, got {row.order_id!r}"
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 000: DELETE /v1/orders/:order_id, no body."""
        return CancelRequest(
            method="DELETE",
            path=f"/v1/orders/{quote(row.order_id, safe='')}",
            headers=(("Authorization", f"Bearer {self._api_key}"),),
        )

    def classify(self, reply: Reply) -> Verdict:
        """Map an sFOX answer to an outcome (VENUES.md, sfox table)."""
        if (verdict := generic_transient(reply)) is not None:
            return verdict
        body = json_object(reply.body)
        if reply.status in (401, 403):
            return Verdict.auth_refused(f"HTTP {reply.status}: {excerpt(reply.body, 120)}")
        if reply.status == 200:
            if body is None:
                return Verdict.transient("HTTP 200 with an unparsable body")
            status = message_of(body, "status").strip()
            outcome = _STATUS_OUTCOMES.get(status)
            return Verdict.final(outcome, status) if outcome else unclassified(reply)
        if reply.status == 400:
            if body is None:
                return Verdict.transient("HTTP 400 with an unparsable body")
            error = message_of(body, "error", "message")
            if any(word in error for word in _NOT_FOUND_WORDS):
                return Verdict.final(Outcome.NOT_FOUND, error)
            if any(word in error for word in _CLOSED_WORDS):
                return Verdict.final(Outcome.ALREADY_CLOSED, error)
            return Verdict.final(Outcome.REJECTED, error or excerpt(reply.body, 120))
        if reply.status == 422:
            return Verdict.final(Outcome.REJECTED, f"HTTP 422: {excerpt(reply.body, 120)}")
        return unclassified(reply)
