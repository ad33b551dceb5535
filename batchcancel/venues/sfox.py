"""sFOX: `DELETE /v1/orders/{order_id}` with a Bearer API key (seed 000, VENUES.md).

Also bulk cancel, the order-status read of the confirm pass, and the list of open orders
(`GET /v1/orders?limit=50[&before=<id>]`, a route with its own 10 per 10 s).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final
from urllib.parse import quote, unquote, urlencode

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
    NOT_FOUND_WORDS,
    BulkAnswer,
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
    disputes,
    early_verdict,
    envelope_verdict,
    error_envelope,
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
    reply_note,
    retry_after_seconds,
    side_of,
    symbol_key,
    text_field,
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
_NOT_FOUND_WORDS: Final = ("internal error", *NOT_FOUND_WORDS)
# ASSUMED (VENUES.md): a repeat cancel answers 400 "...already done/canceled...".
_CLOSED_WORDS: Final = ("already", "done", "canceled", "cancelled", "finished", "filled")
# ASSUMED (VENUES.md): error bodies are {"error": ...}; the others are read alike.
_MESSAGE_KEYS: Final = ("error", "message", "detail")

# sFOX "Get Single Order" (VENUES.md, Confirm): `status` with its `status_code`. "Started" is an
# open order: sFOX has its own "Cancel Pending" state, so an order still Started after a cancel
# answered "cancel pending" has no cancel in effect. It is not reported as pending (which would
# pass for success) but rejected, for a human to look at.
_STARTED: Final = "started"
_ORDER_STATUSES: Final[Mapping[str, Outcome]] = {
    "cancel pending": Outcome.CANCEL_PENDING,  # 90: may still receive fills
    "canceled": Outcome.CANCELED,  # 10
    "cancelled": Outcome.CANCELED,
    "filled": Outcome.ALREADY_CLOSED,  # 210: filled, not yet settled
    "done": Outcome.ALREADY_CLOSED,  # 300
    _STARTED: Outcome.REJECTED,  # 100
}
_STATUS_CODES: Final[Mapping[int, str]] = {
    90: "cancel pending",
    10: "canceled",
    210: "filled",
    300: "done",
    100: _STARTED,
}


# VENUES.md (sfox, List open): closed statuses and codes; any other value counts as working [A].
_LIST_CLOSED: Final = frozenset({"canceled", "cancelled", "filled", "done"})
_LIST_CLOSED_CODES: Final = frozenset({10, 210, 300})
_LIST_PENDING: Final = "cancel pending"  # 90: still working (it may fill), cancel under way
_LIST_PATH: Final = "/v1/orders"


class SfoxVenue:
    """The sFOX adapter."""

    name: ClassVar[str] = "sfox"
    bulk_size: ClassVar[int] = 50  # ids per bulk cancel; keeps the URL short
    has_status: ClassVar[bool] = True  # GET /v1/orders/{id}
    has_sweep: ClassVar[bool] = False
    sweep_page_limit: ClassVar[int] = 0
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (API_KEY_VAR,)
    # sFOX docs: production host; 250 requests per 10 s per IP; after a 429 wait 60 s.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://api.sfox.com", rate_limit=250, period=10.0, cooldown=60.0
    )

    # VENUES.md (sfox, List open): 50 orders a page, newest first, paged by `before`; the
    # route allows 10 requests per 10 s, and a 429 on it pauses the route only, for 10 s.
    list_page_size: ClassVar[int] = 50
    list_needs_account: ClassVar[bool] = False
    list_needs_symbol: ClassVar[bool] = False
    list_states: ClassVar[tuple[str, ...]] = ()
    list_fields: ClassVar[frozenset[str]] = frozenset({"symbol", "side"})
    list_limit: ClassVar[RouteLimit | None] = RouteLimit(rate_limit=10, period=10.0, cooldown=10.0)

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._api_key = credentials.get(API_KEY_VAR, "")

    def credentials_problem(self) -> str | None:
        """sFOX needs its API key."""
        return None if self._api_key else f"{API_KEY_VAR} is not set"

    def validate(self, row: OrderRow) -> str | None:
        """An sFOX order id is a non-empty token of printable characters."""
        if not _ORDER_ID_RE.fullmatch(row.order_id):
            return f"sfox order_id must be 1-128 printable characters without spaces, got {row.order_id!r}"
        if _dot_segment(row.order_id):
            return (
                f"sfox order_id {row.order_id!r} is a dot segment ('.' or '..', percent-encoded"
                " or not): a gateway would resolve it to another path"
            )
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 000: DELETE /v1/orders/:order_id, no body."""
        return CancelRequest(
            method="DELETE",
            path=f"/v1/orders/{quote(row.order_id, safe='')}",
            headers=(("Authorization", f"Bearer {self._api_key}"),),
        )

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """VENUES.md (sfox, Confirm): GET /v1/orders/:order_id, Bearer key, no body."""
        return CancelRequest(
            method="GET",
            path=f"/v1/orders/{quote(row.order_id, safe='')}",
            headers=(("Authorization", f"Bearer {self._api_key}"),),
        )

    def classify_status(self, reply: Reply) -> Verdict:
        """Map an sFOX order (its `status`, else its `status_code`) to a confirm verdict."""
        if (verdict := early_verdict(reply)) is not None:
            return verdict
        body = json_object(reply.body)
        if body is None:
            if reply.status == 404 and not reply.body.strip():
                return Verdict.final(Outcome.NOT_FOUND, "HTTP 404")
            # An HTML page from a proxy or a wrong base URL says nothing about the order: retry.
            return Verdict.transient(f"HTTP {reply.status} with an unparsable body")
        error = message_text(body, *_MESSAGE_KEYS)
        if reply.status == 200:
            verdict = envelope_verdict(reply, body, error, not_found=_NOT_FOUND_WORDS)
            if verdict is not None:
                return verdict
            # Casing differs by endpoint (sFOX docs): "Cancel Pending" here, matched lower-case.
            status = " ".join(message_of(body, "status").split())
            code = _status_code(body.get("status_code"))
            if status not in _ORDER_STATUSES and code is not None:
                status = _STATUS_CODES.get(code, status)
            outcome = _ORDER_STATUSES.get(status)
            if outcome is Outcome.REJECTED:
                return Verdict.final(
                    outcome, "the order is still open (Started): no cancel is in effect"
                )
            return Verdict.final(outcome, status) if outcome else unclassified(reply)
        # ASSUMED: an unknown id answers as the cancel does, 400 "internal error" (seed 000);
        # a 404 is read the same way, unless its words say otherwise.
        if reply.status in (400, 404):
            default = Outcome.NOT_FOUND if reply.status == 404 else None
            return message_verdict(reply, error, not_found=_NOT_FOUND_WORDS, default=default)
        return unclassified(reply)

    def build_bulk_cancel(self, rows: Sequence[OrderRow], *, now: float) -> CancelRequest:
        """sFOX docs, Cancel Multiple Orders: DELETE /v1/orders?ids=1,2,3."""
        ids = ",".join(quote(row.order_id, safe="") for row in rows)
        return CancelRequest(
            method="DELETE",
            path=f"/v1/orders?ids={ids}",
            headers=(("Authorization", f"Bearer {self._api_key}"),),
        )

    def classify_bulk(self, reply: Reply) -> BulkAnswer:
        """200 lists only the orders that began or finished cancelling; 400 when none did.
        Orders not listed are cancelled one by one, which tells why (closed, unknown)."""
        if (verdict := early_verdict(reply)) is not None:
            return BulkAnswer(verdict, {})
        body = json_object(reply.body)
        listed = body.get("orders") if body is not None else None
        refused = error_envelope(body) or disputes(message_text(body, *_MESSAGE_KEYS))
        if reply.status == 200 and isinstance(listed, list) and not refused:
            per_order = {}
            for item in listed:
                if not isinstance(item, dict) or item.get("id") is None:
                    continue
                if disputes(message_text(item, *_MESSAGE_KEYS)):
                    continue  # left to a cancel of its own
                status = message_of(item, "status").strip()
                outcome = _STATUS_OUTCOMES.get(status)
                if outcome is not None:
                    per_order[str(item["id"])] = Verdict.final(outcome, f"bulk: {status}")
            return BulkAnswer(None, per_order)
        # 400 "...invalid or ... already done/canceled": none began cancelling; anything
        # else is unknown too. Either way each order is cancelled on its own.
        return BulkAnswer(None, {}, note=reply_note(reply))

    def classify(self, reply: Reply) -> Verdict:
        """Map an sFOX answer to an outcome (VENUES.md, sfox table)."""
        if (verdict := early_verdict(reply)) is not None:
            return verdict
        body = json_object(reply.body)
        error = message_text(body, *_MESSAGE_KEYS)
        if reply.status == 200:
            if body is None:
                return Verdict.transient("HTTP 200 with an unparsable body")
            verdict = envelope_verdict(
                reply, body, error, not_found=_NOT_FOUND_WORDS, closed=_CLOSED_WORDS
            )
            if verdict is not None:
                return verdict
            status = message_of(body, "status").strip()
            outcome = _STATUS_OUTCOMES.get(status)
            return Verdict.final(outcome, status) if outcome else unclassified(reply)
        if reply.status == 400:
            if body is None:
                return Verdict.transient("HTTP 400 with an unparsable body")
            return message_verdict(reply, error, not_found=_NOT_FOUND_WORDS, closed=_CLOSED_WORDS)
        if reply.status == 422:
            return Verdict.final(Outcome.REJECTED, reply_note(reply))
        return unclassified(reply)

    # -- list open orders (VENUES.md, sfox "List open") ---------------------------------------

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """One walk per symbol (or one for the whole book), narrowed to a side. An sFOX key is
        one account, and its rows name none: an account scope leaves sFOX out."""
        if accounts:
            return []
        return [ListTarget(symbol=s, side=side) for s in (symbols or [""])]

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """GET /v1/orders?limit=50[&before=<id>] with the filters the target has:
        `currency_pair` (sFOX pairs are lower-case, btcusd) and `action` (Buy / Sell: the
        filters are case sensitive)."""
        params: list[tuple[str, str]] = [("limit", str(self.list_page_size))]
        if page.cursor is not None:
            params.append(("before", page.cursor))
        if page.target.symbol:
            params.append(("currency_pair", symbol_key(page.target.symbol)))
        if page.target.side:
            params.append(("action", page.target.side.capitalize()))
        return CancelRequest(
            method="GET",
            path=f"{_LIST_PATH}?{urlencode(params)}",
            headers=(("Authorization", f"Bearer {self._api_key}"),),
        )

    @never_raises
    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """A bare JSON array, newest first; a page shorter than the limit is the last [A]; the
        next page is `before=<smallest id seen>`."""
        if reply.status == 429:
            # VENUES.md: a 429 on the list route pauses this route only, for 10 s (sFOX sends
            # no Retry-After); `list_limit.cooldown` is that pause.
            wait = retry_after_seconds(reply.headers)
            cooldown = self.list_limit.cooldown if self.list_limit is not None else 10.0
            return ListAnswer.failed(
                Verdict.transient(
                    "HTTP 429 rate limited (list route)",
                    rate_limited=True,
                    retry_after=wait if wait is not None else cooldown,
                )
            )
        if (failure := list_failure(reply)) is not None:
            return failure
        try:
            value = json.loads(reply.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return malformed_list(reply, "not JSON")
        if isinstance(value, dict) or reply.status != 200:
            body = value if isinstance(value, dict) else None
            return refused_list(reply, message_text(body, *_MESSAGE_KEYS))
        if not isinstance(value, list):
            return malformed_list(reply, "not a JSON array")
        try:
            answer = list_page(
                page.target,
                self.list_fields,
                value,
                self._listed,
                complete=len(value) < self.list_page_size,
                next_page=ListPage(page.target, _smallest_id(value)) if value else None,
            )
        except Unreadable as exc:
            return malformed_list(reply, str(exc))
        return answer

    def _listed(self, row: Mapping[str, object]) -> tuple[ListedOrder, bool]:
        """One row: its cancel id, pair, action and status; working unless closed."""
        order_id = text_field(row, "id")
        if self.validate(OrderRow(self.name, order_id)) is not None:
            raise Unreadable("id is not an sFOX order id")
        status = " ".join(text_field(row, "status", required=False).split())
        code = int_field(row.get("status_code"))
        word = status.lower()
        closed = word in _LIST_CLOSED or (not word and code in _LIST_CLOSED_CODES)
        order = ListedOrder(
            venue=self.name,
            order_id=order_id,
            symbol=text_field(row, "pair", required=False),
            side=side_of(text_field(row, "action", required=False)),
            state=status or (str(code) if code is not None else ""),
            cancel_pending=word == _LIST_PENDING or (not word and code == 90),
        )
        return order, not closed


def _smallest_id(rows: Sequence[object]) -> str:
    """The `before` cursor: the smallest numeric id of the page; the last row's id (the page is
    newest first) when an id is not numeric. Rows are checked by the reader before it is used."""
    ids = [text_field(row, "id", required=False) if isinstance(row, dict) else "" for row in rows]
    if ids and all(i.isdigit() for i in ids):
        return str(min(int(i) for i in ids))
    return ids[-1] if ids else ""


def _dot_segment(order_id: str) -> bool:
    """True when the id is `.` or `..` as given or once percent-decoded, however many times a
    gateway decodes it: such a path segment is resolved away (VENUES.md, sfox)."""
    text = order_id
    while text not in (".", ".."):
        decoded = unquote(text)
        if decoded == text:
            return False
        text = decoded
    return True


def _status_code(value: object) -> int | None:
    """A JSON status code, an integer or digits in a string (ids and codes may come as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None
