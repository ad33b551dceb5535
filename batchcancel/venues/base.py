"""The sans-I/O venue boundary: value types, the Venue protocol, and parsers every adapter shares.

An adapter validates a row, builds the exact request for it and classifies the answer. It
never does I/O: transport.py sends, engine.py retries and paces. What every venue's answers
share is read here once: 3xx redirects, 429 and 5xx, error envelopes in a 2xx, and the words of
a message (VENUES.md, "General rules for every adapter").
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Final, Protocol

from batchcancel.outcomes import Outcome

__all__ = [
    "EXCERPT_CHARS",
    "NOT_FOUND_WORDS",
    "BulkAnswer",
    "BulkVenue",
    "CancelRequest",
    "OrderRow",
    "Reply",
    "SweepVenue",
    "Venue",
    "VenueDefaults",
    "Verdict",
    "VerdictKind",
    "disputes",
    "envelope_verdict",
    "error_envelope",
    "excerpt",
    "generic_transient",
    "is_integer_id",
    "json_object",
    "message_of",
    "message_text",
    "message_verdict",
    "redirected",
    "retry_after_seconds",
    "stated_outcome",
    "supports_bulk",
    "supports_sweep",
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
