"""Crux Connect: `PATCH /orders/cancel/` with `{"order_uuid": ...}` and a Token (seed 002).

The cancel is a request passed on to the supplier, so a success is `cancel_pending` (VENUES.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import ClassVar, Final

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

__all__ = ["TOKEN_VAR", "CruxVenue", "is_uuid"]

TOKEN_VAR: Final = "BATCHCANCEL_CRUX_TOKEN"
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# seed 002: the curl, HTTPie and requests examples all send this exact header.
_CONTENT_TYPE: Final = "application/json; charset=utf-8"


def is_uuid(value: str) -> bool:
    """True for a canonical 8-4-4-4-12 hexadecimal UUID, in either case."""
    return _UUID_RE.fullmatch(value.lower()) is not None


class CruxVenue:
    """The Crux Connect adapter."""

    name: ClassVar[str] = "crux"
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (TOKEN_VAR,)
    # Crux docs: production host. ASSUMED (VENUES.md): no documented limit, so 5 per 1 s,
    # and a 10 s pause after a 429 without Retry-After.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://api.cruxconnect.com", rate_limit=5, period=1.0, cooldown=10.0
    )

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._token = credentials.get(TOKEN_VAR, "")

    def credentials_problem(self) -> str | None:
        """Crux needs its auth token."""
        return None if self._token else f"{TOKEN_VAR} is not set"

    def validate(self, row: OrderRow) -> str | None:
        """A Crux order id is the order's UUID (seed 002: order_uuid)."""
        if not is_uuid(row.order_id):
            return f"crux order_id must be a UUID (8-4-4-4-12 hex digits), got {row.order_id!r}"
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 002: PATCH /orders/cancel/ with a JSON body naming the order's UUID."""
        return CancelRequest(
            method="PATCH",
            path="/orders/cancel/",
            headers=(
                ("Authorization", f"Token {self._token}"),
                ("Content-Type", _CONTENT_TYPE),
            ),
            body=json.dumps({"order_uuid": row.order_id}).encode(),
        )

    def classify(self, reply: Reply) -> Verdict:
        """Map a Crux answer to an outcome (VENUES.md, crux table)."""
        if (verdict := generic_transient(reply)) is not None:
            return verdict
        # Crux response codes: 401 bad token, 403 no cancel_order permission, 409 wrong org type.
        if reply.status in (401, 403, 409):
            return Verdict.auth_refused(f"HTTP {reply.status}: {excerpt(reply.body, 120)}")
        if reply.status == 204:
            # ASSUMED (VENUES.md): 204 is what a cancel returns; the supplier confirms later.
            return Verdict.final(Outcome.CANCEL_PENDING, "sent to supplier")
        body = json_object(reply.body)
        # ASSUMED (VENUES.md): error bodies are {"detail": "..."}.
        detail = message_of(body, "detail", "message", "error")
        # An HTML page from a proxy or a wrong base URL says nothing about the order: retry.
        unparsable = body is None and bool(reply.body.strip())
        if reply.status == 200:
            if unparsable:
                return Verdict.transient("HTTP 200 with an unparsable body")
            return Verdict.final(Outcome.CANCEL_PENDING, "sent to supplier")
        if reply.status == 404:
            if unparsable:
                return Verdict.transient("HTTP 404 with an unparsable body")
            return Verdict.final(Outcome.NOT_FOUND, detail or "HTTP 404")  # ASSUMED (VENUES.md)
        if reply.status in (400, 422):
            # Crux response codes: 400 something required is missing; 422 the action can't be
            # performed on the identifier provided.
            reason = detail or excerpt(reply.body, 120)
            return Verdict.final(Outcome.REJECTED, f"HTTP {reply.status}: {reason}")
        return unclassified(reply)
