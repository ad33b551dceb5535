"""The tanX simulator: `POST /sapi/v1/orders/cancel/` answered as seed 003 and VENUES.md say.

Its list route, `GET /sapi/v1/orders/?state=<s>&limit&page[&market][&side]`, lists one state
per request (an order is "wait" while open, or the `listed_as` it was placed with, such as
"pending"), pages from 1, and has no total or cursor.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final

from aiohttp import web

from batchcancel.simulators.base import Answer, BookOrder, OrderState, Simulator
from batchcancel.venues.base import ListVenue
from batchcancel.venues.tanx import (
    JWT_VAR,
    MAX_ORDER_ID,
    TanxVenue,
    market_of,
    order_id_of,
)

__all__ = ["TanxSimulator"]


class TanxSimulator(Simulator):
    """tanX: `Authorization: JWT ...`; the book is keyed by the integer order id, as a string."""

    name: ClassVar[str] = "tanx"
    venue: ClassVar[type[ListVenue]] = TanxVenue

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # (market, side) of each order in the book, where a test sets one; else btcusdt, and
        # buy for an even id, sell for an odd one.
        self.markets: dict[str, tuple[str, str]] = {}
        # How an empty list page's payload is sent: [] or {} (tanX sends either, [C]).
        self.empty_payload: list[object] | dict[str, object] = []

    def new_key(self) -> str:
        """A fresh integer id above the others, while that stays within 2^53-1."""
        key = super().new_key()
        if int(key) <= MAX_ORDER_ID:
            return key
        n = 10**9
        while str(n) in self.book:
            n += 1
        return str(n)

    def _placed(self, key: str, order: BookOrder) -> None:
        """The order's market and side, for the list and the bulk cancel alike."""
        default = self.market_of(key)
        self.markets[key] = (market_of(order.symbol) or default[0], order.side or default[1])

    def market_of(self, key: str) -> tuple[str, str]:
        """The order's market and side."""
        default = ("btcusdt", "buy" if key.isdigit() and int(key) % 2 == 0 else "sell")
        return self.markets.get(key, default)

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 003: POST /sapi/v1/orders/cancel/ with {"order_id": <integer>}; tanX docs:
        GET /sapi/v1/orders/<order_id>/ for one order; VENUES.md (Bulk): POST
        /sapi/v1/user/bulkcancel/ with {"market", "side", "limit"}."""
        return [
            web.post("/sapi/v1/orders/cancel/", self._cancel),
            web.post("/sapi/v1/user/bulkcancel/", self._bulk_cancel),
            web.get("/sapi/v1/orders/{order_id}/", self._status, allow_head=False),
            web.get("/sapi/v1/orders/", self._list, allow_head=False),
        ]

    def is_list_request(self, request: web.Request) -> bool:
        """GET /sapi/v1/orders/ (no id): the list of orders in one state."""
        return request.method == "GET" and request.path.endswith("/sapi/v1/orders/")

    def malformed_list_answer(self) -> Answer:
        """A page whose one order has no id."""
        return Answer.json(
            200,
            {
                "status": "success",
                "message": "Orders Retrieved Successfully",
                "payload": [{"market": "btcusdt", "side": "buy", "state": "wait"}],
            },
        )

    def listed_state(self, key: str) -> str:
        """The state the list shows the order in."""
        state = self.state_of(key) or OrderState.CANCELED
        listed_as = self.detail(key).listed_as
        if listed_as and state in (OrderState.OPEN, OrderState.OPEN_ASYNC):
            return listed_as
        return _STATES[state]

    async def _list(self, request: web.Request) -> web.Response:
        """VENUES.md (tanx, List open): one state, one page of at most `limit` orders."""
        query = request.query
        state = query.get("state", "")
        if not state:
            return _error("state: This field is required.", 400)  # ASSUMED wording
        limit, page = query.get("limit", str(self.list_max)), query.get("page", "1")
        if not limit.isdigit() or not 1 <= int(limit) <= self.list_max:
            return _error(f"limit: Must be between 1 and {self.list_max}.", 400)  # ASSUMED
        if not page.isdigit() or int(page) < 1:
            return _error("page: Must be 1 or more.", 400)  # ASSUMED
        keys = [
            k
            for k in reversed(self.book)
            if self.state_of(k) is not None and self.listed_state(k) == state
        ]
        if "market" in query:
            keys = [k for k in keys if self.market_of(k)[0] == query["market"]]
        if "side" in query:
            keys = [k for k in keys if self.market_of(k)[1] == query["side"]]
        first = (int(page) - 1) * int(limit)
        rows = [self._row(key) for key in keys[first : first + int(limit)]]
        return web.json_response(
            {
                "status": "success",
                "message": "Orders Retrieved Successfully",
                "payload": rows or self.empty_payload,
            }
        )

    def _row(self, key: str) -> dict[str, object]:
        """An order as the list shows it (tanX docs: id, market, side, state, volumes)."""
        market, side = self.market_of(key)
        done = self.state_of(key) is OrderState.FILLED
        return {
            "id": int(key),
            "market": market,
            "side": side,
            "ord_type": "limit",
            "state": self.listed_state(key),
            "created_at": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(self.detail(key).created or 1_712_345_678)
            ),
            "origin_volume": "1.0",
            "remaining_volume": "0.0" if done else "1.0",
        }

    async def order_key(self, request: web.Request) -> str | None:
        """The status path's order id, or the cancel body's (None when there is none)."""
        if request.method == "GET":
            return order_id_of(request.match_info.get("order_id"))
        return order_id_of(_body(await request.read()).get("order_id"))

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """tanX Node SDK mocks: 401 bodies for a missing header and for a bad token."""
        header = request.headers.get("Authorization")
        if header is None:
            return _error("Authentication credentials were not provided.", 401)
        if header != f"JWT {self.credentials[JWT_VAR]}":
            payload = {
                "token_class": "AccessToken",
                "token_type": "access",
                "message": "Token is invalid or expired",
                "code": "token_not_valid",
            }
            return _error("Given token not valid for any token type", 401, payload)
        return None

    def too_many_requests(self, retry_after: float | None) -> web.Response:
        """ASSUMED (VENUES.md): tanX documents no 429; the error envelope, as its others."""
        response = _error("Request was throttled.", 429)
        if retry_after is not None:
            response.headers["Retry-After"] = f"{retry_after:g}"
        return response

    def truncated_body(self) -> bytes:
        """A 200 body cut short."""
        return b'{"status":"success","message":"Order is successfully que'

    async def _cancel(self, request: web.Request) -> web.Response:
        value = _body(await request.read()).get("order_id")
        if request.content_type != "application/json" or value is None:
            return _error("order_id: This field is required.", 400)  # ASSUMED
        # seed 003: order_id is an INTEGER; a JSON string is not one here.
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            return _error("order_id: A valid integer is required.", 400)  # ASSUMED
        before = self.cancel(str(value))
        if before is None:
            return _error("Order not found", 400)  # ASSUMED (VENUES.md)
        if before in (OrderState.CANCELED, OrderState.FILLED):
            return _error("Order already cancelled or filled", 400)  # ASSUMED (VENUES.md)
        # seed 003: the documented message; payload.state "wait" while the cancel is queued,
        # ASSUMED (VENUES.md) "cancel" when it completed at once.
        done = before is OrderState.OPEN
        payload = {
            "id": value,
            "side": "buy",
            "ord_type": "limit",
            "state": "cancel" if done else "wait",
            "market": "btcusdc",
            "cancel_reason": "Order cancelled by user" if done else None,
        }
        return web.json_response(
            {
                "status": "success",
                "message": "Order is successfully queued for cancellation",
                "payload": payload,
            }
        )

    async def _bulk_cancel(self, request: web.Request) -> web.Response:
        """Cancel up to `limit` open orders of one market and side. ASSUMED (undocumented):
        the answer lists them in `payload`, each as the single cancel's payload."""
        body = _body(await request.read())
        market, side, limit = body.get("market"), body.get("side"), body.get("limit")
        if not isinstance(market, str) or not market:
            return _error("market: This field is required.", 400)  # ASSUMED wording
        if side not in ("buy", "sell"):
            return _error("side: Must be buy or sell.", 400)  # ASSUMED wording
        most = self.venue.sweep_page_limit  # the most one request cancels
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
            return _error(f"limit: Must be between 1 and {most}.", 400)  # ASSUMED
        keys = [k for k in self.book if self.market_of(k) == (market, side)]
        payload = [
            {
                "id": int(key),
                "side": side,
                "ord_type": "limit",
                "state": "cancel" if before is OrderState.OPEN else "wait",
                "market": market,
                "cancel_reason": "Order cancelled by user" if before is OrderState.OPEN else None,
            }
            for key, before in self.sweep(keys, limit)
        ]
        return web.json_response(
            {
                "status": "success",
                "message": "Orders are successfully queued for cancellation",  # ASSUMED
                "payload": payload,
            }
        )

    async def _status(self, request: web.Request) -> web.Response:
        """tanX docs (get order): the success envelope with the order as payload."""
        key = order_id_of(request.match_info["order_id"])
        state = self.state_of(key) if key is not None else None
        if key is None or state is None:
            return _error("Order not found", 404)  # ASSUMED (VENUES.md: "...not found...")
        canceled = state is OrderState.CANCELED
        payload = {
            "id": int(key),
            "side": "buy",
            "ord_type": "limit",
            "state": _STATES[state],
            "market": "btcusdc",
            "cancel_reason": "Order cancelled by user" if canceled else None,
        }
        # ASSUMED message wording; the adapter reads only status and payload.state.
        return web.json_response(
            {"status": "success", "message": "Order fetched successfully", "payload": payload}
        )


# tanX order states (list orders: pending, wait, done, cancel) by book state. An order open
# or with its cancel still queued is "wait" either way.
_STATES: Final[Mapping[OrderState, str]] = {
    OrderState.OPEN: "wait",
    OrderState.OPEN_ASYNC: "wait",
    OrderState.PENDING: "wait",
    OrderState.CANCELED: "cancel",
    OrderState.FILLED: "done",
}


def _body(raw: bytes) -> dict[str, object]:
    """A JSON object body, or {} for anything else."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _error(message: str, status: int, payload: object = "") -> web.Response:
    """tanX Node SDK mocks: {"status":"error","message":"<text>","payload":""}."""
    return web.json_response(
        {"status": "error", "message": message, "payload": payload}, status=status
    )
