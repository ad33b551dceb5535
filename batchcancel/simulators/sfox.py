"""The sFOX simulator: `DELETE /v1/orders/{id}` answered as seed 000 and VENUES.md say.

Its list route, `GET /v1/orders?limit=50[&before=<id>]`, answers a bare array newest first
(largest id first), filters by currency_pair, action and status (case sensitive), and has its
own limit of 10 requests per 10 s, a 429 on it pausing that route alone for 10 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final

from aiohttp import web

from batchcancel.simulators.base import Answer, OrderState, Simulator
from batchcancel.venues.base import ListVenue
from batchcancel.venues.sfox import API_KEY_VAR, SfoxVenue

__all__ = ["SfoxSimulator"]


class SfoxSimulator(Simulator):
    """sFOX: Bearer API key, 250 requests per 10 s per IP, then a 60 s wait (sFOX docs)."""

    name: ClassVar[str] = "sfox"
    venue: ClassVar[type[ListVenue]] = SfoxVenue

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 000: DELETE /v1/orders/:order_id; sFOX docs: GET /v1/orders/:order_id."""
        return [
            web.delete("/v1/orders/{order_id}", self._cancel),
            web.delete("/v1/orders", self._bulk_cancel),
            web.get("/v1/orders", self._list, allow_head=False),
            web.get("/v1/orders/{order_id}", self._status, allow_head=False),
        ]

    async def order_key(self, request: web.Request) -> str | None:
        """The path's order id (cancel and status alike)."""
        return request.match_info.get("order_id")

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """docs.sfox.com errors: 401 for a missing or incorrect API key."""
        expected = f"Bearer {self.credentials[API_KEY_VAR]}"
        if request.headers.get("Authorization") != expected:
            # ASSUMED (VENUES.md): sFOX error bodies are {"error": ...}
            return web.json_response(
                {"error": "Unauthorized: Missing or incorrect API key"}, status=401
            )
        return None

    def is_list_request(self, request: web.Request) -> bool:
        """GET /v1/orders (no id): the list of open orders."""
        return request.method == "GET" and request.path.endswith("/v1/orders")

    def malformed_list_answer(self) -> Answer:
        """A page whose one order has no id."""
        return Answer.json(200, [{"pair": "btcusd", "action": "Buy", "status": "Started"}])

    async def _list(self, request: web.Request) -> web.Response:
        """VENUES.md (sfox, List open): at most `limit` (≤ 50) orders, newest first, those
        older than `before` when it is given, filtered as asked."""
        query = request.query
        raw_limit = query.get("limit", str(self.list_max))
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= self.list_max:
            return web.json_response({"error": f"limit must be 1 to {self.list_max}"}, status=400)
        keys = sorted(self.listed_keys(), key=_id_order, reverse=True)
        if "before" in query:
            cursor = _id_order(query["before"])
            keys = [k for k in keys if _id_order(k) < cursor]
        rows = [self._row(key) for key in keys]
        for name, field in (("currency_pair", "pair"), ("action", "action"), ("status", "status")):
            if name in query:
                rows = [row for row in rows if row[field] == query[name]]  # case sensitive
        return web.json_response(rows[: int(raw_limit)])

    def _row(self, key: str) -> dict[str, object]:
        """An order as the list shows it (sFOX docs: id, pair, action, status, status_code)."""
        state = self.state_of(key) or OrderState.CANCELED
        status, code = _STATUSES[state]
        detail = self.detail(key)
        side = detail.side or ("buy" if key.isdigit() and int(key) % 2 == 0 else "sell")
        return {
            "id": _json_id(key),
            "client_order_id": "",
            "pair": (detail.symbol or "btcusd").lower(),
            "action": side.capitalize(),
            "type": "Limit",
            "status": detail.listed_as if detail.listed_as and state in _UNCANCELLED else status,
            "status_code": code,
            "date_added": time.strftime(
                "%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(detail.created or 1_712_345_678)
            ),
            "quantity": 1,
            "filled": 1 if state is OrderState.FILLED else 0,
        }

    async def _cancel(self, request: web.Request) -> web.Response:
        before = self.cancel(request.match_info["order_id"])
        if before is None:
            # seed 000: "order_id does not exist in your account"
            return web.json_response({"error": "internal error"}, status=400)
        if before is OrderState.OPEN:
            return web.json_response({"status": "canceled"})  # seed 000
        if before in (OrderState.OPEN_ASYNC, OrderState.PENDING):
            return web.json_response({"status": "cancel pending"})  # seed 000
        if before is OrderState.FILLED:
            return web.json_response({"status": "order already finished"})  # seed 000
        # ASSUMED (VENUES.md): a repeat cancel of a canceled order
        return web.json_response({"error": "the order is already done/canceled"}, status=400)

    async def _bulk_cancel(self, request: web.Request) -> web.Response:
        """sFOX docs, Cancel Multiple Orders: lists only the orders that began or finished
        cancelling; 400 when none did."""
        self.bulk_requests += 1
        listed = []
        for order_id in filter(None, request.query.get("ids", "").split(",")):
            self.bulk_ids[order_id] += 1
            before = self.cancel(order_id)
            if before is OrderState.OPEN:
                listed.append({"id": _json_id(order_id), "status": "Canceled"})
            elif before in (OrderState.OPEN_ASYNC, OrderState.PENDING):
                listed.append({"id": _json_id(order_id), "status": "Cancel pending"})
        if not listed:
            return web.json_response(
                {
                    "error": "the order ids provided were invalid or the orders were already "
                    "done/canceled"
                },
                status=400,
            )
        return web.json_response({"orders": listed})

    async def _status(self, request: web.Request) -> web.Response:
        """sFOX "Get Single Order": the order with its status and status_code (title case)."""
        order_id = request.match_info["order_id"]
        state = self.state_of(order_id)
        if state is None:
            # ASSUMED: an unknown id answers as the cancel does (seed 000).
            return web.json_response({"error": "internal error"}, status=400)
        status, code = _STATUSES[state]
        return web.json_response(
            {
                "id": int(order_id) if order_id.isdigit() else order_id,
                "client_order_id": "",
                "action": "Buy",
                "pair": "btcusd",
                "type": "Limit",
                "quantity": 1,
                "filled": 1 if state is OrderState.FILLED else 0,
                "status": status,
                "status_code": code,
            }
        )


# sFOX docs: Started 100, Cancel Pending 90, Canceled 10, Filled 210, Done 300. An order whose
# cancel completes later (OPEN_ASYNC) is open, Started, until a cancel reaches it.
_STATUSES: Final[Mapping[OrderState, tuple[str, int]]] = {
    OrderState.OPEN: ("Started", 100),
    OrderState.OPEN_ASYNC: ("Started", 100),
    OrderState.PENDING: ("Cancel Pending", 90),
    OrderState.CANCELED: ("Canceled", 10),
    OrderState.FILLED: ("Done", 300),
}


_UNCANCELLED: Final = frozenset({OrderState.OPEN, OrderState.OPEN_ASYNC})


def _id_order(order_id: str) -> tuple[int, int, str]:
    """Ids in the order sFOX gives them: numeric ids by value, above any other id."""
    return (1, int(order_id), "") if order_id.isdigit() else (0, 0, order_id)


def _json_id(order_id: str) -> int | str:
    """sFOX ids are numbers in JSON."""
    return int(order_id) if order_id.isdigit() else order_id
