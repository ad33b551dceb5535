"""The ZebPay Futures simulator: `DELETE /api/v1/trade/order` as seed 004 and VENUES.md say.

It checks a JWT, or an API key with an HMAC over the exact bytes received and a fresh
timestamp, after the 180-per-60-s limit (ZebPay counts requests before authentication).

Its list route, `GET /api/v1/trade/order/open-orders?symbol=<SYM>[&limit=100]`, lists one
symbol's open orders (signed like any GET), newest first, with `totalCount` and a
`nextTimestamp` when more remain; `GET /api/v1/market/markets` is public and names the symbols.
"""

from __future__ import annotations

import hmac
import json
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from aiohttp import web

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Answer, BookOrder, OrderState, Simulator
from batchcancel.venues.base import ListVenue
from batchcancel.venues.zebpay import API_KEY_VAR, API_SECRET_VAR, JWT_VAR, ZebpayVenue, sign

__all__ = ["ZebpaySimulator"]


class ZebpaySimulator(Simulator):
    """ZebPay Futures: Bearer JWT or signed API key; the book is keyed by clientOrderId."""

    name: ClassVar[str] = "zebpay"
    venue: ClassVar[type[ListVenue]] = ZebpayVenue
    # The outcome a first cancel of an order seeded in each state ends with (None: unknown id).
    expected_outcomes: ClassVar[Mapping[OrderState | None, Outcome]] = {
        OrderState.OPEN: Outcome.CANCELED,
        OrderState.OPEN_ASYNC: Outcome.CANCELED,
        OrderState.PENDING: Outcome.CANCELED,
        OrderState.CANCELED: Outcome.ALREADY_CLOSED,
        OrderState.FILLED: Outcome.ALREADY_CLOSED,
        None: Outcome.NOT_FOUND,
    }
    # The symbol of each order in the book, where a test sets one (else BTCUSDT).
    symbols: dict[str, str]
    # ASSUMED: the accepted clock skew of a signed timestamp (undocumented), in seconds.
    timestamp_window: float = 5.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.symbols = {}
        # Symbols the markets endpoint names besides those of the book's orders.
        self.markets: set[str] = {"BTCUSDT"}

    def new_key(self) -> str:
        """A fresh clientOrderId."""
        self._serial += 1
        while f"runaway-{self._serial}" in self.book:
            self._serial += 1
        return f"runaway-{self._serial}"

    def _placed(self, key: str, order: BookOrder) -> None:
        """The order's symbol, for the list and the cancel-all alike."""
        self.symbols[key] = order.symbol or self.symbols.get(key, "BTCUSDT")

    def is_list_request(self, request: web.Request) -> bool:
        """GET /api/v1/trade/order/open-orders: one symbol's open orders."""
        return request.method == "GET" and request.path.endswith(_OPEN_ORDERS)

    def is_public(self, request: web.Request) -> bool:
        """The markets endpoint is public market data (ASSUMED)."""
        return request.method == "GET" and request.path.endswith(_MARKETS)

    def malformed_list_answer(self) -> Answer:
        """A page whose one order has no clientOrderId."""
        data = {
            "data": [{"symbol": "BTCUSDT", "side": "BUY", "status": "new"}],
            "totalCount": 1,
            "nextTimestamp": None,
        }
        return Answer.json(
            200,
            {"statusDescription": "OK", "data": data, "statusCode": 200, "customMessage": ["OK"]},
        )

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 004: DELETE /api/v1/trade/order with {"clientOrderId", "symbol"}; ZebPay trade
        docs: GET /api/v1/trade/order?id=<clientOrderId> for one order; VENUES.md (Bulk):
        DELETE /api/v1/trade/order/all cancels every open order of the user."""
        return [
            web.delete("/api/v1/trade/order", self._cancel),
            web.delete("/api/v1/trade/order/all", self._cancel_all),
            web.get("/api/v1/trade/order", self._status, allow_head=False),
            web.get(_OPEN_ORDERS, self._list, allow_head=False),
            web.get(_MARKETS, self._markets, allow_head=False),
        ]

    async def _list(self, request: web.Request) -> web.Response:
        """VENUES.md (zebpay, List open): one symbol's open orders, at most `limit`."""
        symbol = request.query.get("symbol", "")
        if not symbol:
            return _envelope(400, "symbol is required")  # ASSUMED wording
        limit = request.query.get("limit", str(self.list_max))
        if not limit.isdigit() or not 1 <= int(limit) <= self.list_max:
            return _envelope(400, f"limit must be 1 to {self.list_max}")  # ASSUMED wording
        keys = [k for k in self.listed_keys() if self.symbols.get(k, "BTCUSDT") == symbol]
        rows = [self._row(key) for key in keys[: int(limit)]]
        more = len(keys) > int(limit)
        last = rows[-1]["timestamp"] if more and rows else None
        data = {"data": rows, "totalCount": len(keys), "nextTimestamp": last}
        return _envelope(200, "OK", data)

    def _row(self, key: str) -> dict[str, object]:
        """An order as the list shows it (VENUES.md: clientOrderId, symbol, side, status...)."""
        state = self.state_of(key) or OrderState.CANCELED
        detail = self.detail(key)
        filled = 0.1 if state is OrderState.FILLED else 0
        return {
            "clientOrderId": key,
            "symbol": self.symbols.get(key, "BTCUSDT"),
            "side": (detail.side or "sell").upper(),
            "type": "LIMIT",
            "status": detail.listed_as
            if detail.listed_as and state in _WORKING
            else _STATUSES[state],
            "timestamp": int((detail.created or 1_712_346_300) * 1000),
            "amount": 0.1,
            "filled": filled,
            "remaining": round(0.1 - filled, 8),
            "reduceOnly": False,
        }

    async def _markets(self, request: web.Request) -> web.Response:
        """ZebPay client (markets): `data.symbols[].symbol`, every symbol the book uses."""
        names = sorted(self.markets | set(self.symbols.values()))
        data = {"symbols": [{"symbol": name, "status": "active"} for name in names]}
        return _envelope(200, "OK", data)

    async def order_key(self, request: web.Request) -> str | None:
        """The status query's id, or the cancel body's clientOrderId (None when neither)."""
        if request.method == "GET":
            return request.query.get("id") or None
        value = _body(await request.read()).get("clientOrderId")
        return value if isinstance(value, str) else None

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """ZebPay authentication and error-handling docs: 401, 400 signature / timestamp.

        With an API key a GET signs its query string exactly as transmitted, with `timestamp`
        among the parameters; any other method signs its exact body, timestamp at the root.
        """
        header = request.headers.get("Authorization")
        if header is not None:
            if header != f"Bearer {self.credentials[JWT_VAR]}":
                return _envelope(401, "Unauthorized")  # ASSUMED wording
            return None
        if request.headers.get("x-auth-apikey") != self.credentials[API_KEY_VAR]:
            return _envelope(401, "Unauthorized")  # ASSUMED wording
        if request.method == "GET":
            # The raw query string, as it came over the wire (not re-encoded).
            signed = request.raw_path.partition("?")[2].encode()
            stamp: object = request.query.get("timestamp")
        else:
            signed = body
            stamp = _body(body).get("timestamp")
        expected = sign(self.credentials[API_SECRET_VAR], signed)
        if not hmac.compare_digest(request.headers.get("x-auth-signature", ""), expected):
            return _envelope(400, "Invalid signature")
        if isinstance(stamp, str) and stamp.isdigit():
            stamp = int(stamp)  # ccxt sends it as a string
        if (
            not isinstance(stamp, int)
            or isinstance(stamp, bool)
            or abs(stamp / 1000 - time.time()) > self.timestamp_window
        ):
            return _envelope(400, "Invalid or expired timestamp")
        return None

    def too_many_requests(self, retry_after: float | None) -> web.Response:
        """ZebPay rate-limit docs: the envelope, and Retry-After when given."""
        limit = self.rate_limit if self.rate_limit is not None else self.venue.defaults.rate_limit
        message = f"Too many requests. Limit {limit} requests per {self.period:g} seconds."
        response = _envelope(429, message)
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def _retry_after_for_limit(self) -> float | None:
        """ZebPay rate-limit docs: Retry-After is the rest of the window, in whole seconds."""
        return float(math.ceil(max(self._locked_until - time.monotonic(), 0.0)))

    def truncated_body(self) -> bytes:
        """A 200 body cut short."""
        return b'{"statusDescription":"OK","data":{"clientOrderId":"'

    async def _cancel(self, request: web.Request) -> web.Response:
        body = _body(await request.read()) if request.content_type == "application/json" else {}
        key, symbol = body.get("clientOrderId"), body.get("symbol")
        if not isinstance(key, str) or not key:
            return _envelope(400, "clientOrderId is required")  # ASSUMED wording
        before = self.cancel(key)
        if before is None:
            return _envelope(404, "Order not found")  # ASSUMED (VENUES.md)
        if before in (OrderState.CANCELED, OrderState.FILLED):
            return _envelope(400, "Order already canceled or filled")  # ASSUMED (VENUES.md)
        self.book[key] = OrderState.CANCELED  # seed 004: the cancel is synchronous
        data = {"clientOrderId": key, "status": "canceled", "symbol": symbol}
        return _envelope(200, "OK", data)  # seed 004; "OK" per the current changelog

    async def _cancel_all(self, request: web.Request) -> web.Response:
        """VENUES.md (zebpay, Bulk): `data` lists each order cancelled, with its symbol.
        ZebPay cancels synchronously, so every order listed is canceled at once."""
        swept = self.sweep(list(self.book))
        data = []
        for key, _ in swept:
            self.book[key] = OrderState.CANCELED
            data.append(
                {
                    "clientOrderId": key,
                    "status": "canceled",
                    "symbol": self.symbols.get(key, "BTCUSDT"),
                }
            )
        return _envelope(200, "OK", data)

    async def _status(self, request: web.Request) -> web.Response:
        """ZebPay trade docs (Get Order Details): the envelope with the Order as data."""
        key = request.query.get("id", "")
        if not key:
            return _envelope(400, "id is required")  # ASSUMED wording
        state = self.state_of(key)
        if state is None:
            return _envelope(404, "Order not found")  # ASSUMED (VENUES.md), as for the cancel
        filled = 0.1 if state is OrderState.FILLED else 0
        order = {
            "clientOrderId": key,
            "datetime": "2025-04-05T13:05:00.000Z",
            "timestamp": 1712346300000,
            "symbol": "BTCUSDT",
            "type": "LIMIT",
            "timeInForce": "GTC",
            "side": "SELL",
            "price": 66000.0,
            "amount": 0.1,
            "filled": filled,
            "remaining": round(0.1 - filled, 8),
            "status": _STATUSES[state],
            "reduceOnly": False,
            "postOnly": False,
        }
        return _envelope(200, "OK", order)


_OPEN_ORDERS: Final = "/api/v1/trade/order/open-orders"
_MARKETS: Final = "/api/v1/market/markets"
_WORKING: Final = frozenset({OrderState.OPEN, OrderState.OPEN_ASYNC, OrderState.PENDING})

# ZebPay Order statuses (new, filled, canceled) by book state. ZebPay has no cancel-pending
# status: an order whose cancel has not reached it yet is still "new".
_STATUSES: Final[Mapping[OrderState, str]] = {
    OrderState.OPEN: "new",
    OrderState.OPEN_ASYNC: "new",
    OrderState.PENDING: "new",
    OrderState.CANCELED: "canceled",
    OrderState.FILLED: "filled",
}


def _body(raw: bytes) -> dict[str, object]:
    """A JSON object body, or {} for anything else."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _envelope(status: int, message: str, data: object = None) -> web.Response:
    """ZebPay error-handling docs: every answer is this envelope; errors carry data {}."""
    return web.json_response(
        {
            "statusDescription": message,
            "data": {} if data is None else data,
            "statusCode": status,
            "customMessage": [message],
        },
        status=status,
    )
