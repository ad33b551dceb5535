"""What a venue's message says about the order (VENUES.md, general rules): refusals, the
market or system speaking, "not found", a closed state, and error envelopes in a 2xx."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Final

from batchcancel.outcomes import Outcome
from batchcancel.venues.parsing import excerpt
from batchcancel.venues.values import Reply, Verdict

__all__ = [
    "NOT_FOUND_WORDS",
    "disputes",
    "envelope_verdict",
    "error_envelope",
    "message_verdict",
    "stated_outcome",
]


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
