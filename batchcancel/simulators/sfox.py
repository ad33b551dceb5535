"""The sFOX simulator: `DELETE /v1/orders/{id}` answered as seed 000 and VENUES.md say."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar, Final

from aiohttp import web

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.venues.sfox import API_KEY_VAR

__all__ = ["SfoxSimulator"]


class SfoxSimulator(Simulator):
    """sFOX: Bearer API key, 250 requests per 10 s per IP, then a 60 s wait (sFOX docs)."""

    name: ClassVar[str] = "sfox"
    default_rate_limit: ClassVar[int | None] = 250
    default_period: ClassVar[float] = 10.0
    default_penalty: ClassVar[float] = 60.0
    # The outcome a first cancel of an order seeded in each state ends with (None: unknown id).
    expected_outcomes: ClassVar[Mapping[OrderState | None, Outcome]] = {
        OrderState.OPEN: Outcome.CANCELED,
        OrderState.OPEN_ASYNC: Outcome.CANCEL_PENDING,
        OrderState.PENDING: Outcome.CANCEL_PENDING,
        OrderState.CANCELED: Outcome.ALREADY_CLOSED,
        OrderState.FILLED: Outcome.ALREADY_CLOSED,
        None: Outcome.NOT_FOUND,
    }

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 000: DELETE /v1/orders/:order_id; sFOX docs: GET /v1/orders/:order_id."""
        return [
            web.delete("/v1/orders/{order_id}", self._cancel),
            web.delete("/v1/orders", self._bulk_cancel),
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


def _json_id(order_id: str) -> int | str:
    """sFOX ids are numbers in JSON."""
    return int(order_id) if order_id.isdigit() else order_id
