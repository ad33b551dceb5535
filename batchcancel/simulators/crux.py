"""The Crux simulator: `PATCH /orders/cancel/` answered as seed 002 and VENUES.md say.

Its list route, `POST /orders/` with `{"start", "limit", "line_item_allocation_statuses"}`,
pages by offset, newest first. A cancel only hands the order to its supplier (OPEN_ASYNC, then
PENDING until `settle_after`): such an order still lists as working, its items Allocated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final

from aiohttp import web

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import Answer, OrderState, Simulator
from batchcancel.venues.base import ListVenue
from batchcancel.venues.crux import TOKEN_VAR, CruxVenue, is_uuid

__all__ = ["CruxSimulator"]


class CruxSimulator(Simulator):
    """Crux Connect: `Authorization: Token ...`; the book is keyed by order UUID."""

    name: ClassVar[str] = "crux"
    venue: ClassVar[type[ListVenue]] = CruxVenue
    # The outcome a first cancel of an order seeded in each state ends with (None: unknown id).
    expected_outcomes: ClassVar[Mapping[OrderState | None, Outcome]] = {
        OrderState.OPEN: Outcome.CANCEL_PENDING,
        OrderState.OPEN_ASYNC: Outcome.CANCEL_PENDING,
        OrderState.PENDING: Outcome.CANCEL_PENDING,
        OrderState.CANCELED: Outcome.CANCEL_PENDING,
        OrderState.FILLED: Outcome.REJECTED,
        None: Outcome.NOT_FOUND,
    }

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 002: PATCH /orders/cancel/ with {"order_uuid": ...}; Crux docs: GET
        /orders/<order_uuid>/ for the order and its line items."""
        return [
            web.patch("/orders/cancel/", self._cancel),
            web.post("/orders/", self._list),
            web.get("/orders/{order_uuid}/", self._status, allow_head=False),
        ]

    async def order_key(self, request: web.Request) -> str | None:
        """The status path's UUID, or the cancel body's order_uuid (None when there is none)."""
        if request.method == "GET":
            return request.match_info.get("order_uuid")
        return _order_uuid(await request.read())

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """Crux response codes: 401 when the token is incorrect."""
        header = request.headers.get("Authorization")
        if header is None:
            # ASSUMED (VENUES.md): {"detail": ...} bodies, worded as Django REST Framework's.
            return _detail("Authentication credentials were not provided.", 401)
        if header != f"Token {self.credentials[TOKEN_VAR]}":
            return _detail("Invalid token.", 401)
        return None

    def is_list_request(self, request: web.Request) -> bool:
        """POST /orders/: the orders list."""
        return request.method == "POST" and request.path.endswith("/orders/")

    def new_key(self) -> str:
        """A fresh order UUID."""
        self._serial += 1
        while True:
            key = f"{self._serial:08x}-0000-4000-8000-{self._serial:012x}"
            if key not in self.book:
                return key
            self._serial += 1

    def malformed_list_answer(self) -> Answer:
        """A page whose one order has no uuid."""
        return Answer.json(
            200,
            {
                "total_results": 1,
                "orders": [{"purchase_order_id": "PO-1", "line_items": [{"status": "Allocated"}]}],
            },
        )

    async def _list(self, request: web.Request) -> web.Response:
        """VENUES.md (crux, List open): `total_results` and the orders from `start`."""
        if request.content_type != "application/json":
            return _detail(f"Unsupported media type {request.content_type!r}.", 415)
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError):
            body = None
        start = body.get("start", 0) if isinstance(body, dict) else None
        limit = body.get("limit", self.list_max) if isinstance(body, dict) else None
        if (
            not isinstance(start, int)
            or not isinstance(limit, int)
            or isinstance(start, bool)
            or isinstance(limit, bool)
            or start < 0
            or not 1 <= limit <= self.list_max
        ):
            return _detail(f"start must be >= 0 and limit 1 to {self.list_max}.", 400)
        keys = self.listed_keys()
        orders = [self._order(key) for key in keys[start : start + limit]]
        return web.json_response({"total_results": len(keys), "orders": orders})

    def _order(self, key: str) -> dict[str, object]:
        """An order as the list shows it: uuid, purchase order, created date, line items."""
        state = self.state_of(key) or OrderState.CANCELED
        detail = self.detail(key)
        working = state in (OrderState.OPEN, OrderState.OPEN_ASYNC, OrderState.PENDING)
        status = detail.listed_as if detail.listed_as and working else _LINE_ITEM_STATUS[state]
        return {
            "uuid": key,
            "purchase_order_id": f"PO-{key[:8]}",
            "created_date": time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(detail.created or 1_712_345_678)
            ),
            "line_items": [
                {"uuid": f"{key[:-1]}{n}", "sku_id": f"SKU-{n}", "status": status} for n in (1, 2)
            ],
        }

    async def _cancel(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            # Crux response codes: 415, the Content-Type header was not application/json.
            return _detail(f"Unsupported media type {request.content_type!r}.", 415)
        order_uuid = _order_uuid(await request.read())
        if order_uuid is None or not is_uuid(order_uuid):
            # Crux response codes: 400, something required for the request is missing.
            return _detail("order_uuid: a valid UUID is required.", 400)
        before = self.cancel(order_uuid)
        if before is None:
            return _detail("Not found.", 404)  # ASSUMED (VENUES.md)
        if before is OrderState.FILLED:
            # Crux response codes: 422, the action can't be performed on the identifier.
            return _detail("The order has shipped and can no longer be cancelled.", 422)
        # seed 002: the request is passed on to the supplier. ASSUMED (VENUES.md): 204, and a
        # repeat cancel answers as the first did.
        return web.Response(status=204)

    async def _status(self, request: web.Request) -> web.Response:
        """Crux docs (order detail): the order with its line items; 404 for an unknown one."""
        order_uuid = request.match_info["order_uuid"]
        state = self.state_of(order_uuid)
        if state is None:
            return _detail("Not found.", 404)  # ASSUMED body (VENUES.md)
        status = _LINE_ITEM_STATUS[state]
        items = [
            {
                "uuid": f"{order_uuid[:-1]}{n}",
                "sku_id": f"SKU-{n}",
                "status": status,
                "tracking_numbers": (
                    [{"tracking_number": f"1Z{n:016d}", "shipping_carrier": "UPS"}]
                    if state is OrderState.FILLED
                    else []
                ),
            }
            for n in (1, 2)
        ]
        return web.json_response(
            {"uuid": order_uuid, "purchase_order_id": "PO-1", "line_items": items}
        )


# Crux line_item statuses by book state. Crux has no "cancel requested" status: an order whose
# cancel waits for the supplier shows its items as they were (Allocated). A filled order is one
# the supplier shipped (HasTracking).
_LINE_ITEM_STATUS: Final[Mapping[OrderState, str]] = {
    OrderState.OPEN: "Allocated",
    OrderState.OPEN_ASYNC: "Allocated",
    OrderState.PENDING: "Allocated",
    OrderState.CANCELED: "Cancelled",
    OrderState.FILLED: "HasTracking",
}


def _order_uuid(body: bytes) -> str | None:
    """The order_uuid string of a JSON object body, or None."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    uuid = value.get("order_uuid") if isinstance(value, dict) else None
    return uuid if isinstance(uuid, str) else None


def _detail(message: str, status: int) -> web.Response:
    return web.json_response({"detail": message}, status=status)
