"""ZebPay's wire details apart from its routes: the signature over exact bytes, and how its
envelope (`statusCode`, `statusDescription`, `customMessage`) reads before the data does."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Final

from batchcancel.outcomes import Outcome
from batchcancel.venues.base import (
    Reply,
    Verdict,
    VerdictKind,
    generic_transient,
    json_object,
    message_text,
    redirected,
    reply_note,
)

__all__ = [
    "compact",
    "early_answer",
    "envelope_message",
    "refused_signature",
    "sign",
    "succeeded",
]

# ZebPay error-handling docs: 401 bad JWT or key; 400 "Invalid signature"; 403 for a missing
# scope or a non-allowed IP. 403 "Forbidden request" is an ownership failure: rejected.
_FORBIDDEN_WORDS: Final = ("forbidden request",)
_TIMESTAMP_WORDS: Final = ("timestamp",)  # "Invalid or expired timestamp"
_SIGNATURE_WORDS: Final = ("signature",)  # "Invalid signature"


def compact(body: Mapping[str, object]) -> bytes:
    """The body as compact JSON (separators `,` and `:`), the form ZebPay signs."""
    return json.dumps(body, separators=(",", ":")).encode()


def sign(secret: str, body: bytes) -> str:
    """ZebPay's signature: lowercase hex HMAC-SHA256 of the exact body bytes, keyed by secret."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def succeeded(body: Mapping[str, object]) -> bool:
    """The envelope's statusCode says success: 200 (VENUES.md), a number or its digits."""
    code = body.get("statusCode")
    return not isinstance(code, bool) and str(code) == "200"


def envelope_message(body: Mapping[str, object]) -> str:
    """The envelope's words: statusDescription, and customMessage when it adds to it."""
    # Errors repeat their message in statusDescription and customMessage: match both.
    text = message_text(body, "statusDescription", "message")
    extra = message_text(body, "customMessage")
    return text if extra in text else f"{text} {extra}".strip()


def early_answer(reply: Reply) -> Verdict | None:
    """What any ZebPay answer may mean before its body is read: redirected, retry, refused,
    unparsable."""
    if (verdict := redirected(reply) or generic_transient(reply)) is not None:
        return verdict
    body = json_object(reply.body)
    if reply.status == 401:
        return Verdict.auth_refused(reply_note(reply))
    if reply.status == 403:
        if any(word in envelope_message(body or {}).lower() for word in _FORBIDDEN_WORDS):
            return Verdict.final(Outcome.REJECTED, "HTTP 403: forbidden request")
        return Verdict.auth_refused(reply_note(reply))
    if body is None:
        # An HTML page from a proxy says nothing about the order: retry.
        return Verdict.transient(f"HTTP {reply.status} with an unparsable body")
    return None


def refused_signature(reply: Reply, message: str) -> Verdict | None:
    """A 400 that refuses the signature or the timestamp (ZebPay error-handling docs)."""
    if reply.status != 400:
        return None
    words = message.lower()
    if any(word in words for word in _SIGNATURE_WORDS):
        return Verdict.auth_refused(f"HTTP 400: {message}")
    if any(word in words for word in _TIMESTAMP_WORDS):
        # ASSUMED (VENUES.md): a clock blip once; refused credentials if it repeats.
        return Verdict(
            VerdictKind.TRANSIENT,
            None,
            f"HTTP 400: {message}",
            escalate_on_repeat=True,
        )
    return None
