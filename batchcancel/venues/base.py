"""The sans-I/O venue boundary: value types, the Venue protocol, and parsers every adapter shares.

An adapter validates a row, builds the exact request for it and classifies the answer. It
never does I/O: transport.py sends, engine.py retries and paces. What every venue's answers
share is read here once: 3xx redirects, 429 and 5xx, error envelopes in a 2xx, and the words of
a message (VENUES.md, "General rules for every adapter").

Listing a venue's own book (`ListVenue`, VENUES.md "List open") is sans-I/O too: plan the walks
with `list_targets`, build each page's request with `build_list`, read it with `classify_list`
into a `ListAnswer` (working `ListedOrder`s in scope, `complete`, `next`, or a verdict).
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, Protocol, TypeVar

from batchcancel.outcomes import Outcome

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
    "refused_list",
    "retry_after_seconds",
    "side_of",
    "stated_outcome",
    "supports_bulk",
    "supports_list",
    "supports_sweep",
    "symbol_key",
    "text_field",
    "unclassified",
]

EXCERPT_CHARS: Final = 200
MAX_RETRY_AFTER: Final = 3600.0  # a venue asking for more than an hour is capped at one
_INT_RE: Final = re.compile(r"[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class VenueDefaults:
    """A venue's production endpoint and documented (or assumed) limits; config may override."""

    base_url: str  # '' where the venue has no public production host
    rate_limit: int  # requests per period, per credential
    period: float  # seconds
    cooldown: float  # pause after a 429 that carries no Retry-After


@dataclass(frozen=True, slots=True)
class OrderRow:
    """One order to cancel, as the input gave it. Missing optional columns are ''."""

    venue: str
    order_id: str
    account_id: str = ""
    symbol: str = ""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """An exact HTTP request: `path` is appended to the venue's base URL, already URL-encoded."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None = field(default=None)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the venue answered. Header names are lower-case."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class VerdictKind(StrEnum):
    """How the engine treats an answer."""

    FINAL = "final"  # the order has its outcome
    TRANSIENT = "transient"  # outcome unknown: retry with backoff
    AUTH_REFUSED = "auth_refused"  # stop sending to this venue


@dataclass(frozen=True, slots=True)
class Verdict:
    """An adapter's reading of one answer."""

    kind: VerdictKind
    outcome: Outcome | None = None
    reason: str = ""
    # 429: the whole venue pauses, for retry_after seconds or the venue's cooldown.
    rate_limited: bool = False
    retry_after: float | None = None
    # Transient once, auth refusal if the same order's previous attempt said the same.
    escalate_on_repeat: bool = False
    # A 3xx (kind AUTH_REFUSED): the venue stops as on refused credentials, but the cause is
    # its base_url, and the halt should say so.
    redirect: bool = False

    @classmethod
    def final(cls, outcome: Outcome, reason: str = "") -> Verdict:
        """The order ended with `outcome`."""
        return cls(VerdictKind.FINAL, outcome, reason)

    @classmethod
    def transient(
        cls, reason: str, *, rate_limited: bool = False, retry_after: float | None = None
    ) -> Verdict:
        """Outcome unknown: retry later."""
        return cls(VerdictKind.TRANSIENT, None, reason, rate_limited, retry_after)

    @classmethod
    def auth_refused(cls, reason: str) -> Verdict:
        """The venue refused our credentials."""
        return cls(VerdictKind.AUTH_REFUSED, None, reason)

    @property
    def label(self) -> str:
        """The audit's `verdict` column: an outcome, `transient` or `auth_refused`."""
        return str(self.outcome) if self.outcome is not None else str(self.kind)


class Venue(Protocol):
    """What every venue adapter provides. Construct it with the credentials it reads."""

    name: ClassVar[str]
    required_columns: ClassVar[frozenset[str]]
    credential_vars: ClassVar[tuple[str, ...]]
    defaults: ClassVar[VenueDefaults]

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
        """The order-status request of the confirm pass (VENUES.md "Confirm"), or None when
        the venue documents no such endpoint."""
        ...

    def classify_status(self, reply: Reply) -> Verdict:
        """What an order-status answer means for a cancel: final CANCELED (confirmed),
        ALREADY_CLOSED (it filled or finished instead), CANCEL_PENDING (not settled yet),
        NOT_FOUND; or transient / auth refused as for cancels."""
        ...


@dataclass(frozen=True, slots=True)
class BulkAnswer:
    """An adapter's reading of a bulk-cancel answer.

    `whole` applies to every order of the request (transient, auth refused); otherwise
    `per_order` gives the outcome of each order the answer accounts for, and every order it
    does not account for is cancelled on its own afterwards.
    """

    whole: Verdict | None
    per_order: Mapping[str, Verdict]
    note: str = ""
    # A sweep answer: the symbol of each order listed (for orders not in the input), and
    # whether the venue may have more to cancel for the same target (its limit was reached).
    symbols: Mapping[str, str] = field(default_factory=dict)
    more: bool = False


class BulkVenue(Venue, Protocol):
    """A venue with a bulk-cancel endpoint for a list of order ids."""

    bulk_size: ClassVar[int]  # most order ids per bulk request

    def build_bulk_cancel(self, rows: Sequence[OrderRow], *, now: float) -> CancelRequest:
        """One request cancelling every row."""
        ...

    def classify_bulk(self, reply: Reply) -> BulkAnswer:
        """What a bulk answer says of each order."""
        ...


class SweepVenue(Venue, Protocol):
    """A venue with a cancel-all endpoint: it cancels every open order of the account (or of
    a market and side), listed in the input or not. Used only with `--all-open`."""

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
    """True when the adapter (or its class) has a cancel-all endpoint."""
    return hasattr(venue, "build_sweep")


def supports_bulk(venue: Venue) -> bool:
    """True when the adapter has a bulk-cancel endpoint for order ids."""
    return getattr(venue, "bulk_size", 0) > 1 and hasattr(venue, "build_bulk_cancel")


def is_integer_id(value: str) -> bool:
    """True for a plain non-negative decimal integer of at most 19 digits."""
    return _INT_RE.fullmatch(value) is not None


def json_object(body: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is empty, not JSON, or not an object."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def message_text(obj: Mapping[str, object] | None, *keys: str) -> str:
    """The first string among `keys` in obj, as sent ('' when there is none); a list of
    strings is joined."""
    if obj is None:
        return ""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return " ".join(str(v) for v in value)
    return ""


def message_of(obj: Mapping[str, object] | None, *keys: str) -> str:
    """The first string among `keys` in obj, lower-cased ('' when there is none)."""
    return message_text(obj, *keys).lower()


def excerpt(body: bytes, limit: int = EXCERPT_CHARS) -> str:
    """A short, printable excerpt of a body for the audit and the report."""
    text = body[: limit * 4].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The Retry-After header in seconds (delta form only), or None."""
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        seconds = float(raw.strip())
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None  # "inf", "nan", negative: not a delay we can honour; use the cooldown
    return min(seconds, MAX_RETRY_AFTER)


def redirected(reply: Reply) -> Verdict | None:
    """A 3xx, read before anything else: never followed (SPEC.md), it says nothing about the
    order but that the base URL is wrong or has moved. The venue stops, resumably."""
    if not 300 <= reply.status < 400:
        return None
    location = reply.headers.get("location", "").strip()
    where = f"redirect to {excerpt(location.encode())}" if location else "redirect, no Location"
    return Verdict(
        VerdictKind.AUTH_REFUSED,
        reason=f"HTTP {reply.status} {where}: the venue's base_url is wrong or has moved;"
        " fix the venues config, then resume",
        redirect=True,
    )


def generic_transient(reply: Reply) -> Verdict | None:
    """The answers every venue retries: 429 (pausing the venue) and 5xx."""
    if reply.status == 429:
        return Verdict.transient(
            "HTTP 429 rate limited",
            rate_limited=True,
            retry_after=retry_after_seconds(reply.headers),
        )
    if reply.status >= 500:
        return Verdict.transient(f"HTTP {reply.status} server error")
    return None


def unclassified(reply: Reply) -> Verdict:
    """An answer the adapter does not know: `rejected`, with evidence for a human."""
    return Verdict.final(
        Outcome.REJECTED, f"unrecognised answer HTTP {reply.status}: {excerpt(reply.body, 120)}"
    )


# -- what a message says (VENUES.md, general rules) -----------------------------------------
#
# Words decide an outcome only when they state the order's own state. A message is normalised
# first: camelCase and SNAKE_CASE codes become words, case and punctuation go, curly
# apostrophes become straight ones. Patterns mostly match inside glued words too.

# Refusals: the cancel could not be done, whatever else the message says. The last branch is a
# negated cancel or order state ("was not canceled", "hasn't been filled"); "not found" and
# "does not exist" are not negated states.
_REFUSAL_RE: Final = re.compile(
    r"could ?n'?o?t|can ?not|\bcan'?t\b|unable|\bnot able\b|not ?allowed|disallow"
    r"|not ?permitted|fail|denied|\bden(?:y|ies)\b|refus|reject|declin|forbid|prohibit"
    r"|impossible|not ?possible|unsuccessful|not ?successful|\bwon'?t\b|will ?not"
    r"|unavailab|not ?available|unsupported|not ?supported"
    r"|(?<![a-z])lock|locked|blocked"
    r"|(?:\bnot|\bnever|\bno ?longer|\b(?:is|was|has|have|had|did|does|do|were|are|would)n'?t)"
    r"\b ?(?:(?!found\b|exist)[a-z0-9']+ ){0,2}(?:cancel|fill|clos|done|finish|execut)"
)
# The market or the system, not the order: "market closed", "trading halted", "maintenance".
_SYSTEM_SUBJECTS: Final = (
    r"(?:market|exchange|trading|session|venue|system|platform|service|server)"
)
_SYSTEM_RE: Final = re.compile(
    r"maint[ae]n|halt|suspen|circuit ?breaker|(?:trading|market) ?hours|offline|outage"
    r"|overload|froze|freez"
    rf"|{_SYSTEM_SUBJECTS}s? ?(?:[a-z0-9']+ ){{0,3}}?"
    r"(?:clos|paus|disabl|unavailab|down\b|busy|stop|not ?open)"
    rf"|(?:clos|paus|disabl)[a-z]* ?(?:[a-z0-9']+ ){{0,2}}?{_SYSTEM_SUBJECTS}"
)
# Order types are orders: "market order already filled" is about the order.
_ORDER_TYPE_RE: Final = re.compile(r"\b(?:market|limit|stop) ?(?=orders?\b)")
# What a message may be about: the order, or another thing (an account, a market, a route...).
# The last one named before a state or "not found" is what that word is said of.
_NOUN_RE: Final = re.compile(
    r"[a-z]*?(order|account|market|symbol|pair|instrument|user|customer|client|key|token"
    r"|route|endpoint|path|url|uri|page|resource|method|wallet|currency|asset|portfolio"
    r"|session|product|ticker|contract|position|exchange|venue|trade)(?:s|id|ids|uuid|no)?"
)
# Phrases that say the order is unknown (each venue may add its own, e.g. sFOX's).
NOT_FOUND_WORDS: Final = (
    "not found",
    "does not exist",
    "doesn't exist",
    "not exist",
    "no such order",
    "unknown order",
)
# Any order-state word, for `disputes`: said of another thing, it contradicts a success.
_STATE_WORDS: Final = ("already", "filled", "canceled", "cancelled", "closed", "done", "finished")
_APOSTROPHES: Final = str.maketrans("\u2019\u2018\u02bc`\u00b4", "'''''")


def _normalise(message: str) -> str:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", message).lower().translate(_APOSTROPHES)
    text = " ".join(re.sub(r"[^a-z0-9']+", " ", text).split())
    return _ORDER_TYPE_RE.sub("", text)


@functools.lru_cache(maxsize=64)
def _phrase_re(phrases: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for a venue's phrases, tolerant of glued words and dropped apostrophes;
    "filled" does not match "unfilled"."""
    if not phrases:
        return None
    parts = [" ?".join(re.escape(w).replace("'", "'?") for w in p.split()) for p in phrases]
    return re.compile("(?<!un)(?:" + "|".join(parts) + ")")


def _about(text: str) -> str | None:
    """What the text names last: 'order', another thing, or None when it names nothing."""
    for word in reversed(text.split()):
        if (match := _NOUN_RE.fullmatch(word)) is not None:
            return match.group(1)
    return None


def _refuses(text: str) -> bool:
    """True when a normalised message refuses the cancel or speaks of the market or system."""
    return _REFUSAL_RE.search(text) is not None or _SYSTEM_RE.search(text) is not None


def stated_outcome(
    message: str,
    *,
    not_found: Sequence[str] = NOT_FOUND_WORDS,
    closed: Sequence[str] = (),
    default: Outcome | None = None,
) -> Outcome | None:
    """The outcome a venue's message states about the order (VENUES.md, general rules).

    REJECTED when it refuses the cancel or speaks of the market or the system, whatever else it
    says; NOT_FOUND for one of `not_found` said of the order (or of nothing named), and
    ALREADY_CLOSED for one of `closed`, but REJECTED when said of another thing (an account, a
    market). Otherwise `default` (what the status alone would mean), unless the message is
    about another thing; None when nothing decides.
    """
    text = _normalise(message)
    if not text:
        return default
    if _refuses(text):
        return Outcome.REJECTED
    for phrases, outcome in ((not_found, Outcome.NOT_FOUND), (closed, Outcome.ALREADY_CLOSED)):
        pattern = _phrase_re(tuple(phrases))
        subjects = {_about(text[: m.end()]) for m in pattern.finditer(text)} if pattern else set()
        if subjects:
            # "Internal error: account not found" is not about the order.
            return outcome if subjects <= {None, "order"} else Outcome.REJECTED
    if default is not None and _about(text) not in (None, "order"):
        return Outcome.REJECTED
    return default


def disputes(message: str) -> bool:
    """True when the message of an answer that looks like a success says otherwise: it
    refuses, speaks of the market or the system, says the order (or anything) is unknown, or
    gives another thing's state ("position already closed")."""
    outcome = stated_outcome(message, closed=_STATE_WORDS)
    return outcome in (Outcome.REJECTED, Outcome.NOT_FOUND)


def message_verdict(
    reply: Reply,
    message: str,
    *,
    not_found: Sequence[str] = NOT_FOUND_WORDS,
    closed: Sequence[str] = (),
    default: Outcome | None = None,
) -> Verdict:
    """A final verdict from an answer's message: the outcome it states, else `rejected`; the
    reason records the status and the message."""
    outcome = stated_outcome(message, not_found=not_found, closed=closed, default=default)
    text = (
        excerpt(message.encode(errors="backslashreplace"), 120)
        if message.strip()
        else excerpt(reply.body, 120)
    )
    reason = f"HTTP {reply.status}: {text}" if text else f"HTTP {reply.status}"
    return Verdict.final(outcome or Outcome.REJECTED, reason)


def error_envelope(body: Mapping[str, object] | None) -> bool:
    """True when a 2xx body is an error envelope (VENUES.md): a `success` that is not true,
    or a non-empty `error`, `errors`, `detail` or `message` with no `success` at all."""
    if body is None:
        return False
    fields = {key.lower(): value for key, value in body.items()}
    if "success" in fields:
        success = fields["success"]
        return not (success is True or str(success).lower() == "true")
    return any(fields.get(key) for key in ("error", "errors", "detail", "message"))


def envelope_verdict(
    reply: Reply,
    body: Mapping[str, object] | None,
    message: str,
    *,
    not_found: Sequence[str] = NOT_FOUND_WORDS,
    closed: Sequence[str] = (),
) -> Verdict | None:
    """For a 2xx: the message's verdict when the body is an error envelope or its message
    disputes a success; None when the venue's own reading of a success applies."""
    if error_envelope(body) or disputes(message):
        return message_verdict(reply, message, not_found=not_found, closed=closed)
    return None


# -- listing a venue's own book (VENUES.md "List open"; SPEC.md "The venues' own books") ------
#
# A list walk is a sequence of pages for one `ListTarget` (ETNA: one account; ZebPay: one
# symbol; tanX: one state; sFOX and Crux: the whole book, or one symbol/side where the venue
# filters). `build_list(page)` is the exact request for a page; `classify_list(page, reply)`
# reads the answer into a `ListAnswer`. The adapter applies the target's scope to every row it
# reads as well (a venue that ignored a filter touches nothing outside the scope), and keeps
# only working orders. Nothing here does I/O.


# A list page is larger than a cancel answer (up to 100 orders with all their fields): send
# list requests with `transport.send(..., max_body=LIST_MAX_BODY)`. A page cut short by a
# smaller limit reads as malformed, never as a shorter, complete list.
LIST_MAX_BODY: Final = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RouteLimit:
    """A limit of its own on one route, on top of the venue's (sFOX's list route)."""

    rate_limit: int  # requests per period
    period: float  # seconds
    cooldown: float  # pause of this route after a 429 on it (the venue has no Retry-After)


@dataclass(frozen=True, slots=True)
class ListTarget:
    """What one list walk covers. '' is "not narrowed". `symbol` and `side` are scope filters;
    `account_id` (ETNA), `symbol` (ZebPay) and `state` (tanX) are also what the venue needs."""

    account_id: str = ""
    symbol: str = ""  # as the operator wrote it; each adapter normalises it for its venue
    side: str = ""  # "buy" | "sell" | ""
    state: str = ""  # tanX: one state per walk ("wait", "pending")


@dataclass(frozen=True, slots=True)
class ListPage:
    """One page of a walk: the target and the venue's cursor (None: the first page). The
    cursor is an opaque string (sFOX `before` id, ETNA page number, Crux start, tanX page), so
    it can be written to the audit and read back on resume."""

    target: ListTarget
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class ListedOrder:
    """One working order a list showed: the row to cancel it by, and what the venue said."""

    venue: str
    order_id: str  # the cancel id, as OrderRow.order_id (tanX: decimal digits)
    account_id: str = ""
    symbol: str = ""
    side: str = ""  # "buy" | "sell" | "" (the venue gave none)
    state: str = ""  # the venue's own status word, as sent
    # The venue itself says a cancel is under way (sFOX "Cancel Pending", ETNA "PendingCancel").
    # Crux, tanX and ZebPay cannot say so: a pending cancel there lists as a plain working order.
    cancel_pending: bool = False

    def row(self) -> OrderRow:
        """The order as a row of the run."""
        return OrderRow(self.venue, self.order_id, self.account_id, self.symbol)


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """An adapter's reading of one list page.

    `verdict` is None for a usable list; otherwise it says why the page is not one, as for a
    cancel: transient (5xx, unparsable, a malformed page: `malformed` True), rate limited
    (`rate_limited`, `retry_after`), auth refused, or a 3xx (`redirect`). A page that is not
    usable lists nothing and proves nothing.

    `orders` are the working orders in scope, in the venue's order. `complete` is True when
    this page is the last of its walk (shorter than the limit, a total covered, a null cursor):
    a complete *first* page with no orders is the proof of a flat book for its target. `next`
    is the following page; None when complete, or when the venue cannot page (ZebPay: cancel,
    then list again).
    """

    verdict: Verdict | None
    orders: tuple[ListedOrder, ...] = ()
    complete: bool = False
    next: ListPage | None = None
    rows: int = 0  # rows on the page, working or not, in scope or not
    closed: int = 0  # rows in scope that are not working (filled, cancelled...)
    out_of_scope: int = 0  # working rows outside the target's scope (never to be touched)
    malformed: bool = False  # the page, or an entry of it, could not be read
    refused: bool = False  # the venue answered with an error (a 4xx, an error envelope)

    @property
    def usable(self) -> bool:
        """The page could be read as a list."""
        return self.verdict is None

    @property
    def flat(self) -> bool:
        """This page, if it is the first of its walk, proves nothing is working in scope."""
        return self.verdict is None and self.complete and not self.orders

    @classmethod
    def failed(
        cls, verdict: Verdict, *, malformed: bool = False, refused: bool = False
    ) -> ListAnswer:
        """A page that is not a usable list."""
        return cls(verdict, malformed=malformed, refused=refused)


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


def list_failure(reply: Reply, *, auth: Sequence[int] = (401, 403)) -> ListAnswer | None:
    """What makes any list answer unusable before its body is read: a 3xx, 429, 5xx, or an
    auth refusal by status."""
    if (verdict := redirected(reply) or generic_transient(reply)) is not None:
        return ListAnswer.failed(verdict)
    if reply.status in auth:
        return ListAnswer.failed(
            Verdict.auth_refused(f"HTTP {reply.status}: {excerpt(reply.body, 120)}")
        )
    return None


def malformed_list(reply: Reply, why: str) -> ListAnswer:
    """A list page that cannot be read: transient (it says nothing about any order), marked
    malformed so that a venue whose list stays unreadable ends `not_flat` with the reason."""
    return ListAnswer.failed(
        Verdict.transient(f"malformed list answer (HTTP {reply.status}): {why}"), malformed=True
    )


_V = TypeVar("_V")


def never_raises(
    read: Callable[[_V, ListPage, Reply], ListAnswer],
) -> Callable[[_V, ListPage, Reply], ListAnswer]:
    """Wrap a `classify_list`: an answer it cannot read (JSON nested past the recursion limit,
    a shape nobody foresaw) is a malformed page, never an exception in the engine."""

    @functools.wraps(read)
    def guarded(self: _V, page: ListPage, reply: Reply) -> ListAnswer:
        try:
            return read(self, page, reply)
        except Exception as exc:  # the contract: a list answer never crashes the run
            return malformed_list(reply, f"unreadable ({type(exc).__name__})")

    return guarded


def refused_list(reply: Reply, message: str) -> ListAnswer:
    """A list answer that is an error (4xx, an error envelope): nothing listed. Retried as
    transient; the message is kept for a human."""
    text = excerpt(message.encode(errors="backslashreplace"), 120) if message.strip() else ""
    text = text or excerpt(reply.body, 120)
    return ListAnswer.failed(
        Verdict.transient(f"list refused, HTTP {reply.status}: {text}"), refused=True
    )


class Unreadable(ValueError):
    """An entry of a list page that cannot be read (raised and caught inside adapters)."""


def text_field(row: Mapping[str, object], *keys: str, required: bool = True) -> str:
    """A string field of a list row: a string, or a number given as one ([A] forms). '' when
    absent and not required; Unreadable when required and absent, or of another type."""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool):
            raise Unreadable(f"{key} is a boolean")
        if isinstance(value, str):
            return value
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        raise Unreadable(f"{key} is not a string or an integer")
    if required:
        raise Unreadable(f"{'/'.join(keys)} missing")
    return ""


def id_field(row: Mapping[str, object], *keys: str, max_value: int | None = None) -> str:
    """An integer id of a list row (a JSON integer or its digits in a string) as its decimal
    string. A float is refused: it may have lost digits on the way."""
    for key in keys:
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise Unreadable(f"{key} is not an integer id")
        text = value.strip() if isinstance(value, str) else str(value)
        if not is_integer_id(text):
            raise Unreadable(f"{key} {excerpt(text.encode(), 40)!r} is not an integer id")
        number = int(text)
        if max_value is not None and not 1 <= number <= max_value:
            raise Unreadable(f"{key} {number} is out of range 1..{max_value}")
        return str(number)
    raise Unreadable(f"{'/'.join(keys)} missing")


def side_of(value: str) -> str:
    """A venue's side word as "buy" / "sell", '' when it is neither."""
    word = value.strip().lower()
    return word if word in ("buy", "sell") else ""


def int_field(value: object) -> int | None:
    """A JSON count or cursor: an integer, or its digits in a string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def symbol_key(symbol: str) -> str:
    """A symbol compared across spellings: BTC-USD, btc/usd and BTCUSD are one."""
    return re.sub(r"[^a-z0-9]", "", symbol.lower())


def in_scope(target: ListTarget, order: ListedOrder, fields: frozenset[str]) -> bool:
    """True when a listed order is inside the target's scope. A filter the venue's rows do not
    carry (`fields`), or a row without the field, is outside: never touch what may not be ours."""
    if target.account_id and ("account_id" not in fields or order.account_id != target.account_id):
        return False
    if target.symbol and (
        "symbol" not in fields or symbol_key(order.symbol) != symbol_key(target.symbol)
    ):
        return False
    return not target.side or ("side" in fields and order.side == target.side)


def list_page(
    target: ListTarget,
    fields: frozenset[str],
    rows: Sequence[object],
    read: Callable[[Mapping[str, object]], tuple[ListedOrder, bool]],
    *,
    complete: bool,
    next_page: ListPage | None,
) -> ListAnswer:
    """A usable page from its rows: `read` gives each row's order and whether it is working,
    or raises Unreadable (the caller turns that into a malformed answer)."""
    orders: list[ListedOrder] = []
    closed = out = 0
    for item in rows:
        if not isinstance(item, dict):
            raise Unreadable("an entry is not an object")
        order, working = read(item)
        if not in_scope(target, order, fields):
            out += working
        elif working:
            orders.append(order)
        else:
            closed += 1
    return ListAnswer(
        None,
        tuple(orders),
        complete=complete,
        next=None if complete else next_page,
        rows=len(rows),
        closed=closed,
        out_of_scope=out,
    )
