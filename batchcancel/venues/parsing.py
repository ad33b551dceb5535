"""What every adapter reads the same way: JSON bodies, messages, excerpts, Retry-After, and
the answers every venue gives alike (3xx, 429, 5xx, refused credentials, the unknown)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

from batchcancel.outcomes import Outcome
from batchcancel.venues.values import Reply, Verdict, VerdictKind

__all__ = [
    "EXCERPT_CHARS",
    "MAX_RETRY_AFTER",
    "early_verdict",
    "excerpt",
    "generic_transient",
    "is_integer_id",
    "json_object",
    "message_of",
    "message_text",
    "redirected",
    "refused_credentials",
    "reply_note",
    "retry_after_seconds",
    "unclassified",
]

EXCERPT_CHARS: Final = 200
MAX_RETRY_AFTER: Final = 3600.0  # a venue asking for more than an hour is capped at one
_INT_RE: Final = re.compile(r"[0-9]{1,19}")


def is_integer_id(value: str) -> bool:
    """True for a plain non-negative decimal integer of at most 19 digits."""
    return _INT_RE.fullmatch(value) is not None


def json_object(body: bytes) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is empty, not JSON (or nested too deep to
    read), or not an object."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: nested past the limit, malformed as far as we care
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
    return Verdict.final(Outcome.REJECTED, f"unrecognised answer {reply_note(reply)}")


def reply_note(reply: Reply) -> str:
    """`HTTP <status>: <excerpt of the body>`, the evidence most verdicts record."""
    return f"HTTP {reply.status}: {excerpt(reply.body, 120)}"


def refused_credentials(reply: Reply, auth: Sequence[int] = (401, 403)) -> Verdict | None:
    """An auth refusal when the status is one of the venue's `auth` statuses, else None."""
    return Verdict.auth_refused(reply_note(reply)) if reply.status in auth else None


def early_verdict(reply: Reply, auth: Sequence[int] = (401, 403)) -> Verdict | None:
    """What an answer means before its body is read, the same at every venue: a redirect, a
    429 or 5xx, refused credentials; None when the body decides."""
    return redirected(reply) or generic_transient(reply) or refused_credentials(reply, auth)
