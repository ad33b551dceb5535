"""ETNA Trader: `DELETE /v1.0/accounts/{a}/orders/{o}` with an app key and a Bearer token.

Seed 001 and VENUES.md (etna). Each broker has its own host, so there is no default base URL.
Open orders are listed per account (`GET /v1.0/accounts/{a}/orders`, paged from 0).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar, Final
from urllib.parse import quote, urlencode

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
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
    early_verdict,
    envelope_verdict,
    error_envelope,
    excerpt,
    id_field,
    int_field,
    is_integer_id,
    json_object,
    list_failure,
    list_page,
    malformed_list,
    message_of,
    message_text,
    message_verdict,
    never_raises,
    redirected,
    refused_list,
    side_of,
    text_field,
    unclassified,
)

__all__ = ["APP_KEY_VAR", "TOKEN_VAR", "EtnaVenue"]

APP_KEY_VAR: Final = "BATCHCANCEL_ETNA_APP_KEY"
TOKEN_VAR: Final = "BATCHCANCEL_ETNA_TOKEN"
_NOT_LETTERS: Final = re.compile(r"[^a-z]")

# seed 001 / VENUES.md: a 200 answer carries the order object; its "Status", letters only.
_STATUS_OUTCOMES: Final[Mapping[str, Outcome]] = {
    "canceled": Outcome.CANCELED,
    "cancelled": Outcome.CANCELED,
    "pendingcancel": Outcome.CANCEL_PENDING,
}

# VENUES.md (etna, List open) [A]: closed statuses, letters only, lower-case; anything else
# (New, PartiallyFilled, PendingCancel, ... and names we do not know) counts as working.
_LIST_CLOSED: Final = frozenset(
    {"filled", "canceled", "cancelled", "rejected", "expired", "calculated", "doneforday"}
)
_LIST_PENDING: Final = "pendingcancel"
_MESSAGE_KEYS: Final = ("Message", "message", "error", "detail")


class EtnaVenue:
    """The ETNA Trader adapter."""

    name: ClassVar[str] = "etna"
    bulk_size: ClassVar[int] = 0
    has_status: ClassVar[bool] = False  # VENUES.md names no order-status endpoint
    has_sweep: ClassVar[bool] = False
    sweep_page_limit: ClassVar[int] = 0
    required_columns: ClassVar[frozenset[str]] = frozenset({"account_id", "order_id"})
    credential_vars: ClassVar[tuple[str, ...]] = (APP_KEY_VAR, TOKEN_VAR)
    # ETNA docs: no public production host (each broker has its own base, ending in /api).
    # ASSUMED (VENUES.md): no documented limit, so 20 per 1 s; 10 s pause after a bare 429.
    defaults: ClassVar[VenueDefaults] = VenueDefaults(
        base_url="", rate_limit=20, period=1.0, cooldown=10.0
    )

    # VENUES.md (etna, List open): one walk per account, pages of at most 100 from page 0,
    # newest first (sortField=Id, desc=true). The route shares the venue's limit.
    list_page_size: ClassVar[int] = 100
    list_needs_account: ClassVar[bool] = True
    list_needs_symbol: ClassVar[bool] = False
    list_states: ClassVar[tuple[str, ...]] = ()
    list_fields: ClassVar[frozenset[str]] = frozenset({"account_id", "symbol", "side"})
    list_limit: ClassVar[RouteLimit | None] = None

    def __init__(self, credentials: Mapping[str, str]) -> None:
        self._app_key = credentials.get(APP_KEY_VAR, "")
        self._token = credentials.get(TOKEN_VAR, "")

    def credentials_problem(self) -> str | None:
        """ETNA needs both its app key and an administrator's token."""
        missing = [
            var
            for var, value in ((APP_KEY_VAR, self._app_key), (TOKEN_VAR, self._token))
            if not value
        ]
        if not missing:
            return None
        return f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set"

    def validate(self, row: OrderRow) -> str | None:
        """Both ids are plain integers (seed 001: numeric account and order ids)."""
        for column, value in (("account_id", row.account_id), ("order_id", row.order_id)):
            if not is_integer_id(value):
                return f"etna {column} must be a non-negative integer, got {value!r}"
        return None

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """seed 001: DELETE apiURL/v1.0/accounts/:accountId/orders/:orderId, no body."""
        return CancelRequest(
            method="DELETE",
            path=f"/v1.0/accounts/{row.account_id}/orders/{row.order_id}",
            headers=(
                ("Et-App-Key", self._app_key),
                ("Authorization", f"Bearer {self._token}"),
            ),
        )

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """VENUES.md names no order-status endpoint for ETNA: nothing to confirm with."""
        return None

    def classify_status(self, reply: Reply) -> Verdict:
        """Never called: ETNA has no status request."""
        return redirected(reply) or unclassified(reply)

    def classify(self, reply: Reply) -> Verdict:
        """Map an ETNA answer to an outcome (VENUES.md, etna table)."""
        # seed 001: 401 {"Message": "Authorization has been denied..."}, 403 {"error": "Application
        # key is not defined or does not exist"}.
        if (verdict := early_verdict(reply)) is not None:
            return verdict
        if reply.status == 204:
            return Verdict.final(Outcome.CANCELED, "HTTP 204")  # seed 001
        body = json_object(reply.body)
        message = message_text(body, "Message", "message", "error", "detail")
        if reply.status == 200:
            if body is None:
                return Verdict.transient("HTTP 200 with an unparsable body")
            if (verdict := envelope_verdict(reply, body, message)) is not None:
                return verdict
            status = _NOT_LETTERS.sub("", message_of(body, "Status", "status"))
            outcome = _STATUS_OUTCOMES.get(status)
            return Verdict.final(outcome, status) if outcome else unclassified(reply)
        if reply.status == 409:
            # ETNA docs: only outstanding orders can be cancelled; but a 409 whose words
            # refuse, or speak of the market, is not that. ASSUMED body {"Message": ...}.
            return message_verdict(reply, message, default=Outcome.ALREADY_CLOSED)
        if reply.status == 404:
            # ASSUMED (VENUES.md). A non-JSON 404 is a proxy or a wrong base URL, not an answer.
            if body is None and reply.body.strip():
                return Verdict.transient("HTTP 404 with an unparsable body")
            return message_verdict(reply, message, default=Outcome.NOT_FOUND)
        if reply.status == 422:
            reason = message or excerpt(reply.body, 120)
            return Verdict.final(Outcome.REJECTED, f"HTTP 422: {reason}")
        return unclassified(reply)

    # -- list open orders (VENUES.md, etna "List open") ---------------------------------------

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """One walk per account and symbol (ETNA filters neither symbol nor side: the adapter
        does, on the rows). [] without accounts: ETNA cannot list a user's whole book."""
        return [
            ListTarget(account_id=account, symbol=symbol, side=side)
            for account in dict.fromkeys(accounts)
            for symbol in (symbols or [""])
        ]

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """GET /v1.0/accounts/{account}/orders?pageNumber=N&pageSize=100&sortField=Id&desc=true,
        the cancel's headers. No `filter`: VENUES.md gives no status codes, so closed rows are
        read and left out here."""
        number = page.cursor if page.cursor is not None else "0"
        params = [
            ("pageNumber", number),
            ("pageSize", str(self.list_page_size)),
            ("sortField", "Id"),
            ("desc", "true"),
        ]
        account = quote(page.target.account_id, safe="")
        return CancelRequest(
            method="GET",
            path=f"/v1.0/accounts/{account}/orders?{urlencode(params)}",
            headers=(
                ("Et-App-Key", self._app_key),
                ("Authorization", f"Bearer {self._token}"),
            ),
        )

    @never_raises
    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """`{"Result": [...], "NextPageLink", "TotalCount"}`; the last page has an empty
        NextPageLink or covers TotalCount [A]."""
        if reply.status == 500:
            # ETNA docs: 500 "Unexpected server error" usually means a wrong account id.
            return ListAnswer.failed(
                Verdict.transient(
                    f"HTTP 500 listing account {page.target.account_id}"
                    " (ETNA answers so for a wrong account id)"
                )
            )
        if (failure := list_failure(reply)) is not None:
            return failure
        body = json_object(reply.body)
        if body is None:
            return malformed_list(reply, "not a JSON object")
        if reply.status != 200 or (error_envelope(body) and "Result" not in body):
            return refused_list(reply, message_text(body, *_MESSAGE_KEYS))
        rows = body.get("Result")
        if not isinstance(rows, list):
            return malformed_list(reply, "no Result list")
        number = int(page.cursor) if page.cursor is not None and page.cursor.isdigit() else 0
        total = int_field(body.get("TotalCount"))
        link = body.get("NextPageLink")
        # The last page has an empty NextPageLink or covers TotalCount [A]. When both are
        # given and disagree, the total wins: a proof never rests on the weaker sign.
        if not rows:
            complete = True
        elif total is not None:
            complete = number * self.list_page_size + len(rows) >= total
        else:
            complete = not link
        try:
            return list_page(
                page.target,
                self.list_fields,
                rows,
                lambda row: self._listed(row, page.target.account_id),
                complete=complete,
                next_page=ListPage(page.target, str(number + 1)),
            )
        except Unreadable as exc:
            return malformed_list(reply, str(exc))

    def _listed(self, row: Mapping[str, object], account: str) -> tuple[ListedOrder, bool]:
        """One row: Id and AccountId (the cancel ids), Symbol, Side, Status (a name). A row
        without AccountId is of the account listed (the route is per account)."""
        status = text_field(row, "Status", "status", required=False)
        word = _NOT_LETTERS.sub("", status.lower())
        order = ListedOrder(
            venue=self.name,
            order_id=id_field(row, "Id", "id"),
            account_id=(
                id_field(row, "AccountId", "accountId")
                if row.get("AccountId", row.get("accountId")) is not None
                else account
            ),
            symbol=text_field(row, "Symbol", "symbol", required=False),
            side=side_of(text_field(row, "Side", "side", required=False)),
            state=status,
            cancel_pending=word == _LIST_PENDING,
        )
        return order, word not in _LIST_CLOSED
