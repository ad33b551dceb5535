"""The ETNA simulator: `DELETE /v1.0/accounts/{a}/orders/{o}` as seed 001 and VENUES.md say."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from aiohttp import web

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import OrderState, Simulator
from batchcancel.venues.etna import APP_KEY_VAR, TOKEN_VAR

__all__ = ["EtnaSimulator"]


class EtnaSimulator(Simulator):
    """ETNA Trader: Et-App-Key plus a Bearer token; the book is keyed by order id."""

    name: ClassVar[str] = "etna"
    # ASSUMED (VENUES.md): ETNA documents no limit; the adapter's default, 20 per 1 s.
    default_rate_limit: ClassVar[int | None] = 20
    default_period: ClassVar[float] = 1.0
    default_penalty: ClassVar[float] = 10.0
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
        """seed 001: DELETE apiURL/v1.0/accounts/:accountId/orders/:orderId."""
        return [web.delete("/v1.0/accounts/{account_id}/orders/{order_id}", self._cancel)]

    async def order_key(self, request: web.Request) -> str | None:
        """The path's order id (any account may hold it)."""
        return request.match_info.get("order_id")

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """seed 001: the app key is checked first (403), then the token (401)."""
        if request.headers.get("Et-App-Key") != self.credentials[APP_KEY_VAR]:
            return web.json_response(
                {"error": "Application key is not defined or does not exist"}, status=403
            )
        if request.headers.get("Authorization") != f"Bearer {self.credentials[TOKEN_VAR]}":
            return web.json_response(
                {"Message": "Authorization has been denied for this request."}, status=401
            )
        return None

    async def _cancel(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        before = self.cancel(order_id)
        if before is None:
            # ASSUMED (VENUES.md): an unknown order is a 404.
            return web.json_response({"Message": "Order not found."}, status=404)
        if before is OrderState.OPEN:
            return web.Response(status=204)  # seed 001: 204, no JSON
        if before in (OrderState.OPEN_ASYNC, OrderState.PENDING):
            # ETNA docs: 200 with the order object; Status "PendingCancel" (quick path).
            return web.json_response(_order(request, "PendingCancel"))
        # ETNA docs: 409 Conflict, only outstanding orders can be cancelled.
        # ASSUMED (VENUES.md): the body is {"Message": ...}.
        return web.json_response(
            {"Message": "Only outstanding orders can be cancelled."}, status=409
        )


def _order(request: web.Request, status: str) -> dict[str, object]:
    """A minimal ETNA order object."""
    account_id, order_id = request.match_info["account_id"], request.match_info["order_id"]
    return {
        "Id": int(order_id) if order_id.isdigit() else order_id,
        "AccountId": int(account_id) if account_id.isdigit() else account_id,
        "Status": status,
        "ExecutionStatus": status,
        "RequestStatus": "Executing",
    }
