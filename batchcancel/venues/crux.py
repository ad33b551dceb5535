"""Crux Connect: `PATCH /orders/cancel/` with `{"order_uuid": ...}` and a Token (seed 002).

The cancel is a request passed on to the supplier, so a success is `cancel_pending` (VENUES.md).
Open orders are listed by `POST /orders/`, paged by offset; an order whose cancel still waits
for its supplier lists as working.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
    CancelRequest,
    ListAnswer,
    ListedOrder,
    ListPage,
    ListTarget,
    OrderRow,
    Reply,
    RouteLimit,
    Unreadable,
    VenueDefaults,
    Verdict,
    early_verdict,
    envelope_verdict,
    error_envelope,
    excerpt,
    int_field,
    json_object,
    list_failure,
    list_page,
    malformed_list,
    message_of,
    message_text,
    message_verdict,
    never_raises,
    refused_list,
    text_field,
    unclassified,
)

__all__ = ["TOKEN_VAR", "CruxVenue", "is_uuid"]

TOKEN_VAR: Final = "BATCHCANCEL_CRUX_TOKEN"
_UUID_RE: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# seed 002: the curl, HTTPie and requests examples all send this exact header.
_CONTENT_TYPE: Final = "application/json; charset=utf-8"
# ASSUMED (VENUES.md): error bodies are {"detail": "..."}; the others are read alike.
_MESSAGE_KEYS: Final = ("detail", "message", "error")
# Crux response codes: 401 bad token, 403 no cancel_order permission, 409 wrong org type.
_AUTH_STATUSES: Final = (401, 403, 409)


# Crux docs (line_item object): Unallocated, Allocated, Rejected, HasTracking, Backordered,
# Cancelled. There is no order-level cancel status (VENUES.md, Confirm): the supplier confirms a
# cancel by turning every line item to Cancelled.
_CANCELLED: Final = frozenset({"cancelled", "canceled"})
# ASSUMED: a line item with tracking has shipped, so the order finished instead of cancelling.
_SHIPPED: Final = frozenset({"hastracking"})
# ASSUMED: a supplier-rejected item will never ship; with the rest cancelled the order is over.
_REJECTED: Final = frozenset({"rejected"})
# Still with the supplier. Crux has no "cancel requested" state, so an order whose cancel is
# waiting for the supplier cannot be told from one never cancelled: both read as pending.
# Nor does a supplier's rejection of the cancel change the items: such an order stays
# cancel_pending until the confirm pass times out.
_OPEN: Final = frozenset({"unallocated", "allocated", "backordered"})

# VENUES.md (crux, List open) [A]: an order is working while any line item is not one of these.
# A cancel waiting for its supplier changes no line item, so such an order still lists as
# working: at Crux "flat" can only follow the supplier's confirmation.
_LIST_CLOSED_ITEMS: Final = _CANCELLED | _SHIPPED | _REJECTED
_LIST_ALLOCATIONS: Final = ("Unallocated", "Partial", "Allocated")


def is_uuid(value: str) -> bool:
    """True for a canonical 8-4-4-4-12 hexadecimal UUID, in either case."""
    return _UUID_RE.fullmatch(value.lower()) is not None


class CruxVenue:
    """The Crux Connect adapter."""

    name: ClassVar[str] = "crux"
    bulk_size: ClassVar[int] = 0
    has_status: ClassVar[bool] = True  # GET /orders/{uuid}/
    has_sweep: ClassVar[bool] = False
    sweep_page_limit: ClassVar[int] = 0
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (TOKEN_VAR,)
    # Crux docs: production host. ASSUMED (VENUES.md): no documented limit, so 5 per 1 s,
    # and a 10 s pause after a 429 without Retry-After.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://api.cruxconnect.com", rate_limit=5, period=1.0, cooldown=10.0
    )

    # VENUES.md (crux, List open): POST /orders/ paged by start/limit; the rows carry no
    # account, symbol or side, so any such scope leaves Crux out. Shares the venue's limit.
    list_page_size: ClassVar[int] = 100
    list_needs_account: ClassVar[bool] = False
    list_needs_symbol: ClassVar[bool] = False
    list_states: ClassVar[tuple[str, ...]] = ()
    list_fields: ClassVar[frozenset[str]] = frozenset()
    list_limit: ClassVar[RouteLimit | None] = None

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

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """VENUES.md (crux, Confirm): GET /orders/<uuid>/ with the Token, no body."""
        return CancelRequest(
            method="GET",
            path=f"/orders/{row.order_id}/",  # validated: a UUID needs no encoding
            headers=(("Authorization", f"Token {self._token}"),),
        )

    def classify_status(self, reply: Reply) -> Verdict:
        """Map a Crux order's line-item statuses to a confirm verdict."""
        if (verdict := early_verdict(reply, _AUTH_STATUSES)) is not None:
            return verdict
        body = json_object(reply.body)
        if body is None and reply.body.strip():
            return Verdict.transient(f"HTTP {reply.status} with an unparsable body")
        detail = message_text(body, *_MESSAGE_KEYS)
        if reply.status == 404:
            # Crux docs (order detail): 404 Not Found. ASSUMED body {"detail": "Not found."}.
            return message_verdict(reply, detail, default=Outcome.NOT_FOUND)
        if reply.status != 200 or body is None:
            return unclassified(reply)
        if (verdict := envelope_verdict(reply, body, detail)) is not None:
            return verdict
        seen = _line_item_statuses(body)
        if not seen:
            return unclassified(reply)
        summary = ", ".join(sorted(seen))
        if seen <= _CANCELLED:
            return Verdict.final(Outcome.CANCELED, f"every line item {summary}")
        if seen & _SHIPPED:
            return Verdict.final(Outcome.ALREADY_CLOSED, f"line items {summary}: shipped")
        if seen <= _CANCELLED | _REJECTED:
            return Verdict.final(Outcome.ALREADY_CLOSED, f"line items {summary}")
        if seen <= _CANCELLED | _REJECTED | _OPEN:
            return Verdict.final(Outcome.CANCEL_PENDING, f"line items {summary}")
        return unclassified(reply)

    def classify(self, reply: Reply) -> Verdict:
        """Map a Crux answer to an outcome (VENUES.md, crux table)."""
        if (verdict := early_verdict(reply, _AUTH_STATUSES)) is not None:
            return verdict
        if reply.status == 204:
            # ASSUMED (VENUES.md): 204 is what a cancel returns; the supplier confirms later.
            return Verdict.final(Outcome.CANCEL_PENDING, "sent to supplier")
        body = json_object(reply.body)
        detail = message_text(body, *_MESSAGE_KEYS)
        # An HTML page from a proxy or a wrong base URL says nothing about the order: retry.
        unparsable = body is None and bool(reply.body.strip())
        if reply.status == 200:
            if unparsable:
                return Verdict.transient("HTTP 200 with an unparsable body")
            # {"detail": ..., "success": false} and the like are refusals, not a hand-over.
            if (verdict := envelope_verdict(reply, body, detail)) is not None:
                return verdict
            return Verdict.final(Outcome.CANCEL_PENDING, "sent to supplier")
        if reply.status == 404:
            if unparsable:
                return Verdict.transient("HTTP 404 with an unparsable body")
            # ASSUMED (VENUES.md), unless the words are of another thing or refuse.
            return message_verdict(reply, detail, default=Outcome.NOT_FOUND)
        if reply.status in (400, 422):
            # Crux response codes: 400 something required is missing; 422 the action can't be
            # performed on the identifier provided.
            reason = detail or excerpt(reply.body, 120)
            return Verdict.final(Outcome.REJECTED, f"HTTP {reply.status}: {reason}")
        return unclassified(reply)

    # -- list open orders (VENUES.md, crux "List open") ---------------------------------------

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """The whole book in one walk; [] for a scope Crux orders cannot be inside (they name
        no account, symbol or side)."""
        return [] if accounts or symbols or side else [ListTarget()]

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """POST /orders/ {"start", "limit": 100, "line_item_allocation_statuses": [...]}."""
        start = int(page.cursor) if page.cursor is not None and page.cursor.isdigit() else 0
        body = {
            "start": start,
            "limit": self.list_page_size,
            "line_item_allocation_statuses": list(_LIST_ALLOCATIONS),
        }
        return CancelRequest(
            method="POST",
            path="/orders/",
            headers=(
                ("Authorization", f"Token {self._token}"),
                ("Content-Type", _CONTENT_TYPE),
            ),
            body=json.dumps(body).encode(),
        )

    @never_raises
    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """`{"total_results", "orders": [{"uuid", "line_items": [{"status"}]}]}`; the next page
        starts at start + len(orders) until total_results is covered [A]."""
        if (failure := list_failure(reply, auth=_AUTH_STATUSES)) is not None:
            return failure
        body = json_object(reply.body)
        if body is None:
            return malformed_list(reply, "not a JSON object")
        if reply.status != 200 or (error_envelope(body) and "orders" not in body):
            return refused_list(reply, message_text(body, *_MESSAGE_KEYS))
        rows = body.get("orders")
        if not isinstance(rows, list):
            return malformed_list(reply, "no orders list")
        start = int(page.cursor) if page.cursor is not None and page.cursor.isdigit() else 0
        total = int_field(body.get("total_results"))
        if total is None:
            complete = len(rows) < self.list_page_size
        elif not rows and start < total:
            return malformed_list(reply, f"total_results {total} but no orders from {start}")
        else:
            complete = start + len(rows) >= total
        try:
            return list_page(
                page.target,
                self.list_fields,
                rows,
                self._listed,
                complete=complete,
                next_page=ListPage(page.target, str(start + len(rows))),
            )
        except Unreadable as exc:
            return malformed_list(reply, str(exc))

    def _listed(self, row: Mapping[str, object]) -> tuple[ListedOrder, bool]:
        """One order: its uuid (the cancel's order_uuid) and its line items' statuses."""
        order_uuid = text_field(row, "uuid")
        if not is_uuid(order_uuid):
            raise Unreadable("uuid is not a UUID")
        items = row.get("line_items")
        if items is not None and not isinstance(items, list):
            raise Unreadable("line_items is not a list")
        statuses = [
            text_field(item, "status", required=False) if isinstance(item, dict) else ""
            for item in items or []
        ]
        if items and any(not isinstance(item, dict) for item in items):
            raise Unreadable("a line item is not an object")
        # No line items (or none readable) cannot prove the order over: it counts as working.
        working = not statuses or any(s.lower() not in _LIST_CLOSED_ITEMS for s in statuses)
        order = ListedOrder(
            venue=self.name, order_id=order_uuid, state=",".join(dict.fromkeys(statuses))
        )
        return order, working


def _line_item_statuses(order: Mapping[str, object]) -> set[str]:
    """The lower-cased statuses of an order's line items; empty when any item has none."""
    items = order.get("line_items")
    if not isinstance(items, list):
        return set()
    statuses = {message_of(item, "status") if isinstance(item, dict) else "" for item in items}
    return set() if "" in statuses else statuses
