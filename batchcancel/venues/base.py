"""The sans-I/O venue boundary: the Venue protocols and the capabilities each adapter declares.

An adapter validates a row, builds the exact request for it and classifies the answer. It
never does I/O: transport.py sends, the engine retries and paces. What it can do beyond a
single cancel is declared as class attributes, read without building a request:

    bulk_size         most order ids per bulk-cancel request; 0 when there is no such endpoint
    has_status        an order-status endpoint for the confirm pass (VENUES.md "Confirm")
    has_sweep         a cancel-all endpoint (`--all-open`; the `SweepVenue` methods)
    sweep_page_limit  most orders one cancel-all answer cancels; 0 when one answer covers all
    list_*            how its open orders are listed (`ListVenue`, VENUES.md "List open")

The value types (values.py), the shared parsers (parsing.py), the reading of messages
(words.py) and the list helpers (listing.py) are re-exported here, so adapters and callers
import them from one place.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar, Protocol

from batchcancel.venues.listing import (
    LIST_MAX_BODY,
    ListAnswer,
    ListedOrder,
    ListPage,
    ListTarget,
    RouteLimit,
    Unreadable,
    id_field,
    in_scope,
    int_field,
    list_failure,
    list_page,
    malformed_list,
    never_raises,
    refused_list,
    side_of,
    symbol_key,
    text_field,
)
from batchcancel.venues.parsing import (
    EXCERPT_CHARS,
    early_verdict,
    excerpt,
    generic_transient,
    is_integer_id,
    json_object,
    message_of,
    message_text,
    redirected,
    refused_credentials,
    reply_note,
    retry_after_seconds,
    unclassified,
)
from batchcancel.venues.values import (
    BulkAnswer,
    CancelRequest,
    OrderRow,
    Reply,
    VenueDefaults,
    Verdict,
    VerdictKind,
)
from batchcancel.venues.words import (
    NOT_FOUND_WORDS,
    disputes,
    envelope_verdict,
    error_envelope,
    message_verdict,
    stated_outcome,
)

__all__ = [
    "EXCERPT_CHARS",
    "LIST_MAX_BODY",
    "NOT_FOUND_WORDS",
    "BulkAnswer",
    "BulkVenue",
    "CancelRequest",
    "ListAnswer",
    "ListPage",
    "ListTarget",
    "ListVenue",
    "ListedOrder",
    "OrderRow",
    "Reply",
    "RouteLimit",
    "SweepVenue",
    "Unreadable",
    "Venue",
    "VenueDefaults",
    "Verdict",
    "VerdictKind",
    "disputes",
    "early_verdict",
    "envelope_verdict",
    "error_envelope",
    "excerpt",
    "generic_transient",
    "id_field",
    "in_scope",
    "int_field",
    "is_integer_id",
    "json_object",
    "list_failure",
    "list_page",
    "malformed_list",
    "message_of",
    "message_text",
    "message_verdict",
    "never_raises",
    "redirected",
    "refused_credentials",
    "refused_list",
    "reply_note",
    "retry_after_seconds",
    "side_of",
    "stated_outcome",
    "supports_bulk",
    "supports_list",
    "supports_status",
    "supports_sweep",
    "symbol_key",
    "text_field",
    "unclassified",
]


class Venue(Protocol):
    """What every venue adapter provides. Construct it with the credentials it reads."""

    name: ClassVar[str]
    required_columns: ClassVar[frozenset[str]]
    credential_vars: ClassVar[tuple[str, ...]]
    defaults: ClassVar[VenueDefaults]
    # Declared capabilities (the module docstring): read them, never probe the adapter.
    bulk_size: ClassVar[int]
    has_status: ClassVar[bool]
    has_sweep: ClassVar[bool]
    sweep_page_limit: ClassVar[int]

    def __init__(self, credentials: Mapping[str, str]) -> None: ...

    def credentials_problem(self) -> str | None:
        """Why the credentials given cannot work (e.g. a variable is unset), or None."""
        ...

    def validate(self, row: OrderRow) -> str | None:
        """Why the row cannot be a valid order at this venue, or None."""
        ...

    def build_cancel(self, row: OrderRow, *, now: float) -> CancelRequest:
        """The exact cancel request for a valid row; `now` is Unix time in seconds."""
        ...

    def classify(self, reply: Reply) -> Verdict:
        """What the venue's answer to a cancel means."""
        ...

    def build_status(self, row: OrderRow, *, now: float) -> CancelRequest | None:
        """The order-status request of the confirm pass (VENUES.md "Confirm"); None exactly
        when `has_status` is False (the venue documents no such endpoint)."""
        ...

    def classify_status(self, reply: Reply) -> Verdict:
        """What an order-status answer means for a cancel: final CANCELED (confirmed),
        ALREADY_CLOSED (it filled or finished instead), CANCEL_PENDING (not settled yet),
        NOT_FOUND; or transient / auth refused as for cancels."""
        ...


class BulkVenue(Venue, Protocol):
    """A venue with a bulk-cancel endpoint for a list of order ids."""

    bulk_size: ClassVar[int]  # most order ids per bulk request, above 1

    def build_bulk_cancel(self, rows: Sequence[OrderRow], *, now: float) -> CancelRequest:
        """One request cancelling every row."""
        ...

    def classify_bulk(self, reply: Reply) -> BulkAnswer:
        """What a bulk answer says of each order."""
        ...


class SweepVenue(Venue, Protocol):
    """A venue with a cancel-all endpoint (`has_sweep`): it cancels every open order of the
    account (or of a market and side), listed in the input or not. Used only with `--all-open`.
    A target whose answer cancelled `sweep_page_limit` orders may have more: it is sent again."""

    def sweep_targets(self, rows: Sequence[OrderRow]) -> list[str]:
        """The sweep requests that cover the rows (one per market and side, or one for the
        whole account); [] when none can be built for them."""
        ...

    def sweep_key(self, row: OrderRow) -> str:
        """The row's order id as a sweep answer names it."""
        ...

    def build_sweep(self, target: str, *, now: float) -> CancelRequest:
        """The cancel-all request for one target of `sweep_targets`."""
        ...

    def classify_sweep(self, reply: Reply) -> BulkAnswer:
        """What a cancel-all answer says of each order it lists (keyed as `sweep_key`)."""
        ...


def supports_sweep(venue: Venue | type[Venue] | None) -> bool:
    """The adapter's (or its class's) declared `has_sweep`; False for no adapter."""
    return venue is not None and venue.has_sweep


def supports_bulk(venue: Venue | type[Venue] | None) -> bool:
    """True when the adapter declares a bulk-cancel endpoint (`bulk_size` above 1)."""
    return venue is not None and venue.bulk_size > 1


def supports_status(venue: Venue | type[Venue] | None) -> bool:
    """The adapter's declared `has_status`: whether the confirm pass can ask the venue."""
    return venue is not None and venue.has_status


class ListVenue(Venue, Protocol):
    """A venue whose open orders can be listed (every venue here). Capabilities are class
    attributes, so the engine can plan without probing."""

    list_page_size: ClassVar[int]  # rows per page the adapter asks for (the venue's limit)
    list_needs_account: ClassVar[bool]  # ETNA: one walk per account id
    list_needs_symbol: ClassVar[bool]  # ZebPay: one walk per symbol
    list_states: ClassVar[tuple[str, ...]]  # tanX: one walk per state; () elsewhere
    # The scope filters the venue's rows carry ("account_id", "symbol", "side"). A filter the
    # rows cannot carry (a symbol at Crux) leaves every row out of scope.
    list_fields: ClassVar[frozenset[str]]
    list_limit: ClassVar[RouteLimit | None]  # the list route's own limit (sFOX), else None

    def list_targets(
        self, *, accounts: Sequence[str] = (), symbols: Sequence[str] = (), side: str = ""
    ) -> list[ListTarget]:
        """The walks that cover a scope (accounts, symbols: [] for all; side: '' for both).
        [] when the venue needs what the scope lacks (ETNA without accounts, ZebPay without
        symbols)."""
        ...

    def build_list(self, page: ListPage, *, now: float) -> CancelRequest:
        """The exact request for one page; `now` is Unix time in seconds (ZebPay signs it)."""
        ...

    def classify_list(self, page: ListPage, reply: Reply) -> ListAnswer:
        """What the venue's answer to `build_list(page)` says. Never raises."""
        ...


def supports_list(venue: Venue | type[Venue] | None) -> bool:
    """True when the adapter (or its class) can list the venue's open orders."""
    return hasattr(venue, "build_list") and hasattr(venue, "classify_list")
