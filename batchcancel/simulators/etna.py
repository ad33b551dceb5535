"""The ETNA simulator: `DELETE /v1.0/accounts/{a}/orders/{o}` as seed 001 and VENUES.md say.

Its list route, `GET /v1.0/accounts/{a}/orders?pageNumber&pageSize&sortField=Id&desc=true`,
lists the orders placed with that account (`place(..., account_id=...)`), pages from 0 of at
most 100, and answers 500 "Unexpected server error" for an account it does not know.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Final
from urllib.parse import urlencode

from aiohttp import web

from batchcancel.simulators.base import Answer, OrderState, Simulator
from batchcancel.venues.base import ListVenue
from batchcancel.venues.etna import APP_KEY_VAR, TOKEN_VAR, EtnaVenue

__all__ = ["EtnaSimulator"]


class EtnaSimulator(Simulator):
    """ETNA Trader: Et-App-Key plus a Bearer token; the book is keyed by order id."""

    name: ClassVar[str] = "etna"
    venue: ClassVar[type[ListVenue]] = EtnaVenue

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Accounts that exist though they may hold no order (listing them answers an empty
        # page); any account an order was placed with exists too.
        self.accounts: set[str] = set()
        # The account an order without one (seeded by `seed`) lists under; None: under none.
        self.default_account: str | None = None

    def routes(self) -> Iterable[web.RouteDef]:
        """seed 001: DELETE apiURL/v1.0/accounts/:accountId/orders/:orderId; VENUES.md (List
        open): GET apiURL/v1.0/accounts/:accountId/orders."""
        return [
            web.delete("/v1.0/accounts/{account_id}/orders/{order_id}", self._cancel),
            web.get("/v1.0/accounts/{account_id}/orders", self._list, allow_head=False),
        ]

    def is_list_request(self, request: web.Request) -> bool:
        """GET .../accounts/{a}/orders: an account's orders."""
        info = request.match_info
        return request.method == "GET" and "account_id" in info and "order_id" not in info

    def malformed_list_answer(self) -> Answer:
        """A page whose one row has no Id."""
        return Answer.json(
            200,
            {
                "Result": [{"AccountId": 77, "Symbol": "AAPL", "Side": "Buy", "Status": "New"}],
                "NextPageLink": None,
                "PreviousPageLink": None,
                "TotalCount": 1,
            },
        )

    async def _list(self, request: web.Request) -> web.Response:
        """VENUES.md (etna, List open): the account's orders by Id, descending, one page."""
        account = request.match_info["account_id"]
        known = self.accounts | {d.account_id for d in self.details.values()}
        if self.default_account is not None:
            known.add(self.default_account)
        if account not in known:
            # ETNA docs: 500 "Unexpected server error" usually means a wrong account id.
            return web.json_response({"Message": "Unexpected server error"}, status=500)
        query = request.query
        number, size = query.get("pageNumber", "0"), query.get("pageSize", str(self.list_max))
        if not number.isdigit() or not size.isdigit() or not 1 <= int(size) <= self.list_max:
            return web.json_response(
                {"Message": f"pageSize must be 1 to {self.list_max}"}, status=400
            )
        keys = [k for k in self.listed_keys() if self._account_of(k) == account]
        keys.sort(key=lambda k: int(k) if k.isdigit() else -1, reverse=True)
        first = int(number) * int(size)
        rows = [self._row(key) for key in keys[first : first + int(size)]]

        def link(page: int) -> str:
            params = {**query, "pageNumber": str(page), "pageSize": size}
            return f"{request.path}?{urlencode(params)}"

        more = first + int(size) < len(keys)
        return web.json_response(
            {
                "Result": rows,
                "NextPageLink": link(int(number) + 1) if more else None,
                "PreviousPageLink": link(int(number) - 1) if int(number) > 0 else None,
                "TotalCount": len(keys),
            }
        )

    def _account_of(self, key: str) -> str | None:
        return self.detail(key).account_id or self.default_account

    def _row(self, key: str) -> dict[str, object]:
        """An order as ETNA lists it (VENUES.md: Id, AccountId, Symbol, Side, Status...)."""
        state = self.state_of(key) or OrderState.CANCELED
        detail = self.detail(key)
        status = detail.listed_as if detail.listed_as and state in _UNCANCELLED else None
        filled = 1 if state is OrderState.FILLED else 0
        account = self._account_of(key) or ""
        return {
            "Id": int(key) if key.isdigit() else key,
            "AccountId": int(account) if account.isdigit() else account,
            "Symbol": detail.symbol or "AAPL",
            "Side": (detail.side or "buy").capitalize(),
            "Status": status or _LIST_STATUS[state],
            "CreateDate": time.strftime(
                "%Y-%m-%dT%H:%M:%S", time.gmtime(detail.created or 1_712_345_678)
            ),
            "Quantity": 1,
            "ExecutedQuantity": filled,
            "LeavesQuantity": 1 - filled,
        }

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


# VENUES.md (etna, List open): Status names by book state. A cancel completing later leaves
# the order PendingCancel (still working) until it settles.
_LIST_STATUS: Final[Mapping[OrderState, str]] = {
    OrderState.OPEN: "New",
    OrderState.OPEN_ASYNC: "New",
    OrderState.PENDING: "PendingCancel",
    OrderState.CANCELED: "Canceled",
    OrderState.FILLED: "Filled",
}
_UNCANCELLED: Final = frozenset({OrderState.OPEN, OrderState.OPEN_ASYNC})
