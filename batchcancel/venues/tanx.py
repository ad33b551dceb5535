"""tanX: `POST /sapi/v1/orders/cancel/` with `{"order_id": <int>}` and a JWT (seed 003).

A success is usually "queued for cancellation" (`cancel_pending`); VENUES.md has the table.
Open orders are listed one state at a time (`GET /sapi/v1/orders/?state=wait|pending`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final
from urllib.parse import urlencode

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
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
    VerdictKind,
    disputes,
    error_envelope,
    generic_transient,
    id_field,
    is_integer_id,
    json_object,
    list_page,
    malformed_list,
    message_of,
    message_text,
    message_verdict,
    never_raises,
    redirected,
    refused_list,
    reply_note,
    side_of,
    text_field,
    unclassified,
)

__all__ = ["JWT_VAR", "LIST_STATES", "SWEEP_LIMIT", "TanxVenue", "market_of", "order_id_of"]

JWT_VAR: Final = "BATCHCANCEL_TANX_JWT"
# VENUES.md (tanx): a larger id cannot travel exactly as a JSON number to a JavaScript backend.
MAX_ORDER_ID: Final = 2**53 - 1

# seed 003: payload.state of a success; list-orders states are pending, wait, done, cancel.
_STATE_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "wait": Outcome.CANCEL_PENDING,  # seed 003: queued, not done
    "cancel": Outcome.CANCELED,  # ASSUMED (VENUES.md)
}
# tanX docs (list orders): states pending, wait, done, cancel; VENUES.md (Confirm): "cancel"
# and "done". tanX has no cancel-pending state: "wait" is an open order, with or without a
# queued cancel, and the two cannot be told apart, so "wait" (and "pending", not yet in the
# book; ASSUMED) read as pending.
_ORDER_STATES: Final[Mapping[str, Outcome]] = {
    "cancel": Outcome.CANCELED,
    "done": Outcome.ALREADY_CLOSED,
    "wait": Outcome.CANCEL_PENDING,
    "pending": Outcome.CANCEL_PENDING,
}
# seed 003: "Order is successfully queued for cancellation"; tanX Go SDK: the older
# "Cancelled Order Successfully".
_QUEUED_WORDS: Final = ("queued",)
_CANCELED_WORDS: Final = ("cancelled order successfully", "canceled order successfully")
# tanX Node SDK mocks: 401 "Authentication credentials were not provided." or a SimpleJWT
# payload with code "token_not_valid".
_AUTH_WORDS: Final = ("credentials were not provided", "token not valid", "token_not_valid")
# ASSUMED (VENUES.md): undocumented 4xx messages, matched by their words.
_CLOSED_WORDS: Final = ("already", "filled")
_MESSAGE_KEYS: Final = ("message", "detail", "error")


# VENUES.md (tanx, Bulk): POST /sapi/v1/user/bulkcancel/ {"market","side","limit"}; 100 is the
# documented example's limit, taken as the most one request cancels.
SWEEP_LIMIT: Final = 100
# VENUES.md (tanx, List open): one state per request [C]; done and cancel are closed, any
# other state counts as working [A].
LIST_STATES: Final = ("wait", "pending")
_LIST_CLOSED: Final = frozenset({"done", "cancel", "cancelled", "canceled"})
_SIDES: Final = ("buy", "sell")


def market_of(symbol: str) -> str:
    """A tanX market name from the symbol column: BTCUSDT, BTC-USDT or btc/usdt -> btcusdt."""
    return re.sub(r"[^a-z0-9]", "", symbol.lower())


def order_id_of(value: object) -> str | None:
    """A JSON order id (an integer, or digits in a string) as its decimal string, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value >= 0:
        return str(value)
    if isinstance(value, str) and is_integer_id(value):
        return str(int(value))
    return None


class TanxVenue:
    """The tanX adapter."""

    name: ClassVar[str] = "tanx"
    bulk_size: ClassVar[int] = 0  # its bulk cancel is by market and side: a sweep
    has_status: ClassVar[bool] = True  # GET /sapi/v1/orders/{id}/
    has_sweep: ClassVar[bool] = True  # POST /sapi/v1/user/bulkcancel/
    sweep_page_limit: ClassVar[int] = SWEEP_LIMIT
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (JWT_VAR,)
    # tanX docs: production host. ASSUMED (VENUES.md): no documented limit, so 10 per 1 s,
    # and a 10 s pause after a 429 without Retry-After.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://api.tanx.fi", rate_limit=10, period=1.0, cooldown=10.0
    )

    # VENUES.md (tanx, List open): pages of 50 from page 1, one walk per state, filters
    # market and side; no total, no cursor. Shares the venue's limit.
    list_page_size: ClassVar[int] = 50
    list_needs_account: ClassVar[bool] = False
    list_needs_symbol: ClassVar[bool] = False
    list_states: ClassVar[tuple[str, ...]] = LIST_STATES
    list_fields: ClassVar[frozenset[str]] = frozenset({"symbol", "side"})
    list_limit: ClassVar[RouteLimit | None] = None

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._jwt = credentials.get(JWT_VAR, "")

    def credentials_problem(self) -> str | None:
        """tanX needs the JWT access token of a wallet login."""
        return None if self._jwt else f"{JWT_VAR} is not set"

    def validate(self, row: OrderRow) -> str | None:
        """seed 003: order_id is an INTEGER, sent as a JSON number: 1 to 2^53-1 (VENUES.md)."""
        if not is_integer_id(row.order_id) or not 1 <= int(row.order_id) <= MAX_ORDER_ID:
            return (
                f"tanx order_id must be an integer from 1 to {MAX_ORDER_ID} (larger ones"
                f" would be rounded as a JSON number), got {row.order_id!r}"
            )
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 003: POST /sapi/v1/orders/cancel/ with `Authorization: JWT` and a JSON integer."""
        return CancelRequest(
            method="POST",
            path="/sapi/v1/orders/cancel/",
            headers=(
                ("Authorization", f"JWT {self._jwt}"),
                ("Content-Type", "application/json"),
            ),
            body=json.dumps({"order_id": int(row.order_id)}, separators=(",", ":")).encode(),
        )

    # -- bulk cancel by market and side (--all-open) -----------------------------------------

    def sweep_targets(self, rows: Sequence[OrderRow]) -> list[str]:
        """Both sides of every market the rows name (the input has no side column); rows
        without a symbol are left to single cancels."""
        markets = sorted({market_of(row.symbol) for row in rows} - {""})
        return [f"{market}/{side}" for market in markets for side in _SIDES]

    def sweep_key(self, row: OrderRow) -> str:
        """Answers name orders by their integer id: 0042 is 42."""
        return order_id_of(row.order_id) or row.order_id

    def build_sweep(self, target: str, *, now: float) -> CancelRequest:
        """VENUES.md (tanx, Bulk): POST /sapi/v1/user/bulkcancel/ with market, side, limit."""
        market, _, side = target.partition("/")
        body = {"market": market, "side": side, "limit": SWEEP_LIMIT}
        return CancelRequest(
            method="POST",
            path="/sapi/v1/user/bulkcancel/",
            headers=(
                ("Authorization", f"JWT {self._jwt}"),
                ("Content-Type", "application/json"),
            ),
            body=json.dumps(body, separators=(",", ":")).encode(),
        )

    def classify_sweep(self, reply: Reply) -> BulkAnswer:
        """ASSUMED (the answer is undocumented): the success envelope with `payload` listing
        the orders it cancelled, each as the single cancel's payload (`id`, `state`, `market`).
        A full page (`limit` orders) may leave more to cancel: the target is sent again."""
        if (early := _early_verdict(reply)) is not None:
            return BulkAnswer(early, {})
        body = json_object(reply.body) or {}
        payload = body.get("payload")
        if (
            reply.status != 200
            or message_of(body, "status") != "success"
            or not isinstance(payload, list)
            or disputes(message_text(body, *_MESSAGE_KEYS))
        ):
            return BulkAnswer(None, {}, note=reply_note(reply))
        per_order: dict[str, Verdict] = {}
        symbols: dict[str, str] = {}
        for item in payload:
            if not isinstance(item, dict):
                continue
            key = order_id_of(item.get("id", item.get("order_id")))
            state = message_of(item, "state")
            outcome = _STATE_OUTCOMES.get(state)
            if key is not None and outcome is not None:
                per_order[key] = Verdict.final(outcome, f"bulk cancel: state {state}")
                symbols[key] = message_of(item, "market").upper()
        return BulkAnswer(None, per_order, symbols=symbols, more=len(payload) >= SWEEP_LIMIT)

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """VENUES.md (tanx, Confirm): GET /sapi/v1/orders/<order_id>/ with the JWT, no body."""
        return CancelRequest(
            method="GET",
            path=f"/sapi/v1/orders/{int(row.order_id)}/",  # the integer the cancel sends
            headers=(("Authorization", f"JWT {self._jwt}"),),
        )

    def classify_status(self, reply: Reply) -> Verdict:
        """Map a tanX order's `payload.state` to a confirm verdict."""
        if (early := _early_verdict(reply)) is not None:
            return early
        body = json_object(reply.body) or {}
        message = message_text(body, *_MESSAGE_KEYS)
        if _success(reply, body) and not disputes(message):
            payload = body.get("payload")
            state = message_of(payload if isinstance(payload, dict) else None, "state")
            outcome = _ORDER_STATES.get(state)
            return Verdict.final(outcome, f"state {state}") if outcome else unclassified(reply)
        # ASSUMED: an unknown order is an error envelope saying "not found", as for cancels.
        if _error(reply, body) or disputes(message):
            return message_verdict(reply, message)
        return unclassified(reply)

    def classify(self, reply: Reply) -> Verdict:
        """Map a tanX answer to an outcome (VENUES.md, tanx table)."""
        if (early := _early_verdict(reply)) is not None:
            return early
        body = json_object(reply.body) or {}
        payload = body.get("payload")
        payload = payload if isinstance(payload, dict) else None
        message = message_text(body, *_MESSAGE_KEYS)
        # A success whose message refuses is read by its words, as an error envelope is.
        if _success(reply, body) and not disputes(message):
            state = message_of(payload, "state")
            outcome = _STATE_OUTCOMES.get(state)
            words = message.lower()
            if not state and any(w in words for w in _QUEUED_WORDS):
                outcome = Outcome.CANCEL_PENDING
            if not state and any(w in words for w in _CANCELED_WORDS):
                outcome = Outcome.CANCELED
            return Verdict.final(outcome, message) if outcome else unclassified(reply)
        if _error(reply, body) or disputes(message):
            return message_verdict(reply, message, closed=_CLOSED_WORDS)
        return unclassified(reply)

    # -- list open orders (VENUES.md, tanx "List open") ---------------------------------------

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """One walk per state, and per market when symbols are given; narrowed to a side. A
        JWT is one wallet, and the rows name no account: an account scope leaves tanX out."""
        if accounts:
            return []
        markets = list(dict.fromkeys(market_of(s) for s in symbols)) or [""]
        return [
            ListTarget(symbol=market, side=side, state=state)
            for state in self.list_states
            for market in markets
        ]

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """GET /sapi/v1/orders/?state=<s>&limit=50&page=<n>[&market=<m>][&side=<buy|sell>]."""
        target = page.target
        params = [
            ("state", target.state or LIST_STATES[0]),
            ("limit", str(self.list_page_size)),
            ("page", page.cursor if page.cursor is not None else "1"),
        ]
        if target.symbol:
            params.append(("market", market_of(target.symbol)))
        if target.side:
            params.append(("side", target.side))
        return CancelRequest(
            method="GET",
            path=f"/sapi/v1/orders/?{urlencode(params)}",
            headers=(("Authorization", f"JWT {self._jwt}"),),
        )

    @never_raises
    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """The success envelope with `payload` a list of orders (an empty one may be `{}`);
        a page shorter than the limit is the last [A]."""
        early = _early_verdict(reply)
        if early is not None:
            # An unparsable 2xx-4xx body is a page we cannot read, not a retry of a cancel.
            unparsable = (
                early.kind is VerdictKind.TRANSIENT
                and not early.rate_limited
                and reply.status < 500
                and json_object(reply.body) is None
            )
            return malformed_list(reply, "not JSON") if unparsable else ListAnswer.failed(early)
        body = json_object(reply.body) or {}
        if not _success(reply, body):
            return refused_list(reply, message_text(body, *_MESSAGE_KEYS))
        # The envelope decides, not the words: "No orders found" with [] is an empty list.
        payload = body.get("payload")
        if payload is None or payload == {} or payload == "":
            rows: list[object] = []
        elif isinstance(payload, list):
            rows = payload
        else:
            return malformed_list(reply, "payload is not a list")
        number = int(page.cursor) if page.cursor is not None and page.cursor.isdigit() else 1
        try:
            return list_page(
                page.target,
                self.list_fields,
                rows,
                self._listed,
                complete=len(rows) < self.list_page_size,
                next_page=ListPage(page.target, str(number + 1)),
            )
        except Unreadable as exc:
            return malformed_list(reply, str(exc))

    def _listed(self, row: Mapping[str, object]) -> tuple[ListedOrder, bool]:
        """One row: `id` (the cancel id, 1 to 2^53-1, exactly), market, side, state."""
        state = text_field(row, "state", required=False)
        order = ListedOrder(
            venue=self.name,
            order_id=id_field(row, "id", "order_id", max_value=MAX_ORDER_ID),
            symbol=market_of(text_field(row, "market", required=False)).upper(),
            side=side_of(text_field(row, "side", required=False)),
            state=state,
        )
        return order, state.lower() not in _LIST_CLOSED


def _success(reply: Reply, body: Mapping[str, object]) -> bool:
    """seed 003: a success is HTTP 200 with the envelope's "status":"success"."""
    return reply.status == 200 and message_of(body, "status") == "success"


def _error(reply: Reply, body: Mapping[str, object]) -> bool:
    """A 4xx, or a 2xx error envelope ("status":"error", or an error with no success)
    (VENUES.md): read by its message."""
    if 400 <= reply.status < 500:
        return True
    status = message_of(body, "status")
    return 200 <= reply.status < 300 and (
        status == "error" or (not status and error_envelope(body))
    )


def _early_verdict(reply: Reply) -> Verdict | None:
    """What every tanX answer may mean before its body is read: redirected, retry, refused,
    unparsable."""
    if (verdict := redirected(reply) or generic_transient(reply)) is not None:
        return verdict
    body = json_object(reply.body)
    payload = body.get("payload") if body is not None else None
    message = message_of(body, "message", "detail", "error")
    code = message_of(payload if isinstance(payload, dict) else None, "code")
    if reply.status in (401, 403) or any(w in f"{message} {code}" for w in _AUTH_WORDS):
        return Verdict.auth_refused(reply_note(reply))
    if body is None:
        # An HTML page from a proxy says nothing about the order: retry.
        return Verdict.transient(f"HTTP {reply.status} with an unparsable body")
    return None
