"""ZebPay Futures: `DELETE /api/v1/trade/order` with a JSON body, JWT or HMAC-signed (seed 004).

With an API key, the body gains `"timestamp": <unix ms>` at its root, is serialized as compact
JSON, and exactly those bytes are signed and sent (VENUES.md, zebpay). Open orders are listed
per symbol (`GET /api/v1/trade/order/open-orders?symbol=...`), the query signed as sent.
"""

from __future__ import annotations

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
    int_field,
    json_object,
    list_failure,
    list_page,
    malformed_list,
    message_of,
    message_verdict,
    never_raises,
    refused_list,
    reply_note,
    side_of,
    symbol_key,
    text_field,
    unclassified,
)
from batchcancel.venues.zebpay_envelope import (
    compact,
    early_answer,
    envelope_message,
    refused_signature,
    sign,
    succeeded,
)

__all__ = ["API_KEY_VAR", "API_SECRET_VAR", "JWT_VAR", "ZebpayVenue", "compact", "sign"]

JWT_VAR: Final = "BATCHCANCEL_ZEBPAY_JWT"
API_KEY_VAR: Final = "BATCHCANCEL_ZEBPAY_API_KEY"
API_SECRET_VAR: Final = "BATCHCANCEL_ZEBPAY_API_SECRET"
# Printable ASCII only: the signed bytes then cannot differ between JSON serializers.
_CLIENT_ORDER_ID_RE: Final = re.compile(r"[!-~]{1,128}")
_SYMBOL_RE: Final = re.compile(r"[A-Z0-9]{1,32}")

# ASSUMED (VENUES.md): undocumented 400/404 messages, matched by their words.
_CLOSED_WORDS: Final = ("already", "filled", "canceled", "cancelled", "closed")
_ORDER_PATH: Final = "/api/v1/trade/order"
_ALL_PATH: Final = "/api/v1/trade/order/all"
_OPEN_ORDERS_PATH: Final = "/api/v1/trade/order/open-orders"  # VENUES.md (zebpay, List open)
_MARKETS_PATH: Final = "/api/v1/market/markets"
# VENUES.md (zebpay, List open) [A]: every row is working unless its status is one of these.
_LIST_CLOSED: Final = frozenset(
    {"filled", "canceled", "cancelled", "rejected", "expired", "closed"}
)  # VENUES.md (zebpay, Bulk): cancel every open order

# ZebPay Order model (Get Order Details): `status` such as new, filled, canceled. ZebPay has no
# cancel-pending status, so an order still "new" cannot be told from one whose cancel is on its
# way: it reads as pending. ASSUMED: the other open, filled or finished spellings of the Order
# model (it is ccxt's unified order: open, closed, expired, rejected) read the same way.
_ORDER_STATUSES: Final[Mapping[str, Outcome]] = {
    "canceled": Outcome.CANCELED,
    "cancelled": Outcome.CANCELED,
    "filled": Outcome.ALREADY_CLOSED,
    "closed": Outcome.ALREADY_CLOSED,
    "expired": Outcome.ALREADY_CLOSED,
    "rejected": Outcome.ALREADY_CLOSED,
    "new": Outcome.CANCEL_PENDING,
    "open": Outcome.CANCEL_PENDING,
    "partially_filled": Outcome.CANCEL_PENDING,
}


class ZebpayVenue:
    """The ZebPay Futures adapter. An API key and secret, when both are set, win over a JWT."""

    name: ClassVar[str] = "zebpay"
    bulk_size: ClassVar[int] = 0
    has_status: ClassVar[bool] = True  # GET /api/v1/trade/order?id=
    has_sweep: ClassVar[bool] = True  # DELETE /api/v1/trade/order/all
    sweep_page_limit: ClassVar[int] = 0  # one answer cancels every open order
    required_columns: ClassVar[frozenset[str]] = frozenset({"order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (JWT_VAR, API_KEY_VAR, API_SECRET_VAR)
    # ZebPay docs: production host; 180 requests per 60 s per IP; 429 carries Retry-After
    # (60 s right after the window is exhausted), used as the cooldown when it is missing.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="https://futuresbe.zebpay.com", rate_limit=180, period=60.0, cooldown=60.0
    )

    # VENUES.md (zebpay, List open): one walk per symbol (symbol is required), up to 100 rows,
    # no page cursor: a full page or a non-null nextTimestamp means cancel, then list again.
    # Listing shares the 180 per 60 s per IP.
    list_page_size: ClassVar[int] = 100
    list_needs_account: ClassVar[bool] = False
    list_needs_symbol: ClassVar[bool] = True
    list_states: ClassVar[tuple[str, ...]] = ()
    list_fields: ClassVar[frozenset[str]] = frozenset({"symbol", "side"})
    list_limit: ClassVar[RouteLimit | None] = None

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._jwt = credentials.get(JWT_VAR, "")
        self._api_key = credentials.get(API_KEY_VAR, "")
        self._api_secret = credentials.get(API_SECRET_VAR, "")

    @property
    def _signs(self) -> bool:
        return bool(self._api_key and self._api_secret)

    def credentials_problem(self) -> str | None:
        """ZebPay needs a JWT, or an API key with its secret."""
        if self._signs or self._jwt:
            return None
        if self._api_key:
            return f"{API_SECRET_VAR} is not set (needed with {API_KEY_VAR})"
        if self._api_secret:
            return f"{API_KEY_VAR} is not set (needed with {API_SECRET_VAR})"
        return f"{JWT_VAR} is not set, nor {API_KEY_VAR} and {API_SECRET_VAR}"

    def validate(self, row: OrderRow) -> str | None:
        """order_id is the clientOrderId, a printable token; symbol, if given, like BTCUSDT."""
        if not _CLIENT_ORDER_ID_RE.fullmatch(row.order_id):
            return (
                "zebpay order_id (clientOrderId) must be 1-128 printable ASCII characters"
                f" without spaces, got {row.order_id!r}"
            )
        if row.symbol and not _SYMBOL_RE.fullmatch(row.symbol):
            return f"zebpay symbol must be upper-case letters and digits, got {row.symbol!r}"
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 004: DELETE /api/v1/trade/order with {"clientOrderId", "symbol"} as JSON."""
        body: dict[str, object] = {"clientOrderId": row.order_id}
        if row.symbol:
            body["symbol"] = row.symbol
        return self._delete(_ORDER_PATH, body, now)

    def _delete(self, path: str, body: dict[str, object], now: float) -> CancelRequest:
        """A DELETE with a JSON body: a JWT, or the body signed with a timestamp at its root."""
        common = (("Content-Type", "application/json"), ("Accept", "application/json"))
        if not self._signs:
            # The timestamp is for API-key auth only (ZebPay trade docs): none with a JWT.
            auth: tuple[tuple[str, str], ...] = (("Authorization", f"Bearer {self._jwt}"),)
            return CancelRequest("DELETE", path, auth + common, compact(body))
        data = compact({**body, "timestamp": int(now * 1000)})
        auth = (
            ("x-auth-apikey", self._api_key),
            ("x-auth-signature", sign(self._api_secret, data)),
        )
        return CancelRequest("DELETE", path, auth + common, data)

    # -- cancel-all (--all-open) -------------------------------------------------------------

    def sweep_targets(self, rows: Sequence[OrderRow]) -> list[str]:
        """One cancel-all covers the whole account, whatever the rows."""
        return ["all"] if rows else []

    def sweep_key(self, row: OrderRow) -> str:
        """Answers name orders by clientOrderId, the order_id column."""
        return row.order_id

    def build_sweep(self, target: str, *, now: float) -> CancelRequest:
        """VENUES.md (zebpay, Bulk): DELETE /api/v1/trade/order/all. ASSUMED: the body is an
        empty JSON object (with the timestamp alone when signed), as every signed call has."""
        return self._delete(_ALL_PATH, {}, now)

    def classify_sweep(self, reply: Reply) -> BulkAnswer:
        """VENUES.md (zebpay, Bulk): `data` lists {"clientOrderId","status":"canceled",
        "symbol"}. Any other answer that is not a retry or a refusal accounts for no order:
        each is then cancelled on its own."""
        verdict = self.classify(reply)
        if verdict.kind is not VerdictKind.FINAL:
            return BulkAnswer(verdict, {})
        body = json_object(reply.body) or {}
        data = body.get("data")
        if (
            reply.status != 200
            or not succeeded(body)
            or not isinstance(data, list)
            or disputes(envelope_message(body))
        ):
            return BulkAnswer(None, {}, note=reply_note(reply))
        per_order: dict[str, Verdict] = {}
        symbols: dict[str, str] = {}
        for item in data:
            key = item.get("clientOrderId") if isinstance(item, dict) else None
            if not isinstance(key, str) or not key:
                continue
            status = message_of(item, "status")
            if status in ("canceled", "cancelled"):
                per_order[key] = Verdict.final(Outcome.CANCELED, f"cancel-all: {status}")
                symbol = item.get("symbol")
                symbols[key] = symbol if isinstance(symbol, str) else ""
        return BulkAnswer(None, per_order, symbols=symbols)

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """VENUES.md (zebpay, Confirm): GET /api/v1/trade/order?id=<clientOrderId>, no body.

        ZebPay authentication docs, for a GET with an API key: append `timestamp` (unix ms) to
        the query parameters and sign the query string exactly as it is transmitted (here
        `id=...&timestamp=...`, encoded as the official Python client's urlencode does). There
        is no body, so nothing else is signed; a JWT request carries no timestamp.
        """
        params: list[tuple[str, str]] = [("id", row.order_id)]
        accept = (("Accept", "application/json"),)
        if not self._signs:
            auth: tuple[tuple[str, str], ...] = (("Authorization", f"Bearer {self._jwt}"),)
            return CancelRequest("GET", f"{_ORDER_PATH}?{urlencode(params)}", auth + accept)
        params.append(("timestamp", str(int(now * 1000))))
        query = urlencode(params)
        auth = (
            ("x-auth-apikey", self._api_key),
            ("x-auth-signature", sign(self._api_secret, query.encode())),
        )
        return CancelRequest("GET", f"{_ORDER_PATH}?{query}", auth + accept)

    def classify_status(self, reply: Reply) -> Verdict:
        """Map a ZebPay order's `data.status` to a confirm verdict."""
        if (early := early_answer(reply)) is not None:
            return early
        body = json_object(reply.body) or {}
        message = envelope_message(body)
        if reply.status == 200 and succeeded(body) and not disputes(message):
            data = body.get("data")
            status = message_of(data if isinstance(data, dict) else None, "status")
            outcome = _ORDER_STATUSES.get(status)
            return Verdict.final(outcome, status) if outcome else unclassified(reply)
        if (verdict := refused_signature(reply, message)) is not None:
            return verdict
        if reply.status in (200, 400, 404):
            # An error envelope, with a 2xx or not: read by its words.
            return message_verdict(reply, message)
        return unclassified(reply)

    def classify(self, reply: Reply) -> Verdict:
        """Map a ZebPay answer to an outcome (VENUES.md, zebpay table)."""
        if (early := early_answer(reply)) is not None:
            return early
        body = json_object(reply.body) or {}
        message = envelope_message(body)
        if reply.status == 200 and succeeded(body) and not disputes(message):
            # Success by HTTP status, statusCode and data.status, never statusDescription.
            data = body.get("data")
            status = message_of(data if isinstance(data, dict) else None, "status")
            if status in ("canceled", "cancelled"):
                return Verdict.final(Outcome.CANCELED, status)
            return unclassified(reply)
        if (verdict := refused_signature(reply, message)) is not None:
            return verdict
        if reply.status == 200:
            # statusCode other than 200, or words that refuse: an error envelope (VENUES.md).
            return message_verdict(reply, message, closed=_CLOSED_WORDS)
        if reply.status == 400:
            return message_verdict(reply, message, closed=_CLOSED_WORDS)
        if reply.status == 404:
            return message_verdict(reply, message)
        return unclassified(reply)

    # -- list open orders (VENUES.md, zebpay "List open") -------------------------------------

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """One walk per symbol, narrowed to a side by the adapter (ZebPay filters only by
        symbol). [] without symbols: take them from the input, the venues config, or
        `build_markets`. The rows name no account: an account scope leaves ZebPay out."""
        if accounts:
            return []
        keys = dict.fromkeys(symbol_key(s).upper() for s in symbols)
        return [ListTarget(symbol=symbol, side=side) for symbol in keys if symbol]

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """GET /api/v1/trade/order/open-orders?symbol=<SYM>&limit=100. With an API key,
        `timestamp` (unix ms) is appended and the query string is signed exactly as sent, as
        for the status read; a JWT request carries no timestamp."""
        params = [("symbol", symbol_key(page.target.symbol).upper())]
        params.append(("limit", str(self.list_page_size)))
        return self._get(_OPEN_ORDERS_PATH, params, now)

    def _get(self, path: str, params: list[tuple[str, str]], now: float) -> CancelRequest:
        """A GET with a JWT, or with `timestamp` in its query and the query signed."""
        accept = (("Accept", "application/json"),)
        if not self._signs:
            auth: tuple[tuple[str, str], ...] = (("Authorization", f"Bearer {self._jwt}"),)
            return CancelRequest("GET", f"{path}?{urlencode(params)}", auth + accept)
        query = urlencode([*params, ("timestamp", str(int(now * 1000)))])
        auth = (
            ("x-auth-apikey", self._api_key),
            ("x-auth-signature", sign(self._api_secret, query.encode())),
        )
        return CancelRequest("GET", f"{path}?{query}", auth + accept)

    @never_raises
    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """The envelope with `data` = {"data" (or "items"): [...], "totalCount",
        "nextTimestamp"}. Complete when nextTimestamp is null, the page is not full and
        totalCount is covered [A]; there is never a next page to ask for."""
        # Any 403 on a list is a scope or IP refusal: no order of ours is forbidden here.
        if (failure := list_failure(reply)) is not None:
            return failure
        body = json_object(reply.body)
        if body is None:
            return malformed_list(reply, "not a JSON object")
        message = envelope_message(body)
        if (verdict := refused_signature(reply, message)) is not None:
            return ListAnswer.failed(verdict)
        if reply.status != 200 or not succeeded(body):
            return refused_list(reply, message)
        # HTTP status and statusCode decide (VENUES.md), not words: "No open orders" is a list.
        data = body.get("data")
        if not isinstance(data, dict):
            return malformed_list(reply, "data is not an object")
        rows = data.get("data", data.get("items"))
        if rows is None and ("totalCount" in data or "nextTimestamp" in data):
            rows = []
        if not isinstance(rows, list):
            return malformed_list(reply, "no list of orders in data")
        total = int_field(data.get("totalCount"))
        more = (
            data.get("nextTimestamp") is not None
            or len(rows) >= self.list_page_size
            or (total is not None and total > len(rows))
        )
        try:
            return list_page(
                page.target, self.list_fields, rows, self._listed, complete=not more, next_page=None
            )
        except Unreadable as exc:
            return malformed_list(reply, str(exc))

    def _listed(self, row: Mapping[str, object]) -> tuple[ListedOrder, bool]:
        """One row: clientOrderId (the cancel id), symbol, side, status."""
        order_id = text_field(row, "clientOrderId")
        if not _CLIENT_ORDER_ID_RE.fullmatch(order_id):
            raise Unreadable("clientOrderId is not printable ASCII")
        status = text_field(row, "status", required=False)
        order = ListedOrder(
            venue=self.name,
            order_id=order_id,
            symbol=text_field(row, "symbol", required=False),
            side=side_of(text_field(row, "side", required=False)),
            state=status,
        )
        return order, status.lower() not in _LIST_CLOSED

    # -- the markets, when neither the input nor the config names the symbols ------------------

    def build_markets(self, *, now: float) -> CancelRequest:
        """VENUES.md (zebpay, List open) [C]: GET /api/v1/market/markets. ASSUMED: public
        market data, sent without credentials."""
        return CancelRequest("GET", _MARKETS_PATH, (("Accept", "application/json"),))

    def classify_markets(self, reply: Reply) -> tuple[Verdict | None, list[str]]:
        """The symbols of `data.symbols[].symbol` (None and the list), or why there are none
        to trust (a verdict and [])."""
        failure = list_failure(reply)
        if failure is not None and failure.verdict is not None:
            return failure.verdict, []
        body = json_object(reply.body)
        data = body.get("data") if body is not None else None
        entries = data.get("symbols") if isinstance(data, dict) else None
        if reply.status != 200 or body is None or not succeeded(body):
            return Verdict.transient(f"markets: {reply_note(reply)}"), []
        if not isinstance(entries, list):
            return Verdict.transient("markets: no data.symbols list"), []
        symbols = []
        for entry in entries:
            symbol = entry.get("symbol") if isinstance(entry, dict) else entry
            if isinstance(symbol, str) and _SYMBOL_RE.fullmatch(symbol):
                symbols.append(symbol)
        return None, list(dict.fromkeys(symbols))
