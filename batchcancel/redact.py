"""The one redactor: what it hides from every text that leaves the process or enters the audit.

SPEC (Audit and resume): credentials never appear in the audit database, logs, reports,
stdout or stderr, not even when a venue echoes one back, and neither do database passwords
in any URL form; stored text is text both SQLite and PostgreSQL accept. A Redactor knows the
secret values (the venues' credentials, passwords of the database URLs it is given) and the
password patterns (`user:pw@host`, `password=` query and libpq parameters), and offers:

- `text(s)`: for anything printed or written out: secrets and passwords replaced, and NUL,
  control characters and lone surrogates escaped (a terminal must not get escape sequences,
  and a lone surrogate makes writing to a UTF-8 stream raise);
- `stored(s)`: for anything written to the audit database: the same, so that any string,
  whatever an answer or an input held, can be written (`\\x00`, `\\x1b`, `\\ud800`);
- `value(obj)`: the strings of a JSON-like structure, one by one, so its shape survives.

Escaping leaves tab, newline and backslashes as they are, so it is idempotent: a stored text
printed later comes out unchanged. The CLI keeps the command's redactor in click's context
(`install`, `current`), where its logging and the progress display find it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import click

__all__ = ["MASK", "PASSWORD_MASK", "Redactor", "current", "escape", "install"]

MASK: Final = "[redacted]"  # a credential value
PASSWORD_MASK: Final = "***"  # a password in a URL or parameter string
CUT_MIN: Final = 4  # the shortest start of a secret hidden in front of an excerpt's "…"
_KEY: Final = "batchcancel.redactor"

# user:password@ in URLs (SQLAlchemy reads a password up to the first "@").
_USERINFO: Final = re.compile(r"(://[^/\s:@]*:)[^\s@]*@")
# password=... as a URL query parameter (to the next & or ;) or a libpq/ODBC keyword, whose
# value may be quoted; and "password": "..." in JSON. Any case, with or without a prefix
# (sslpassword, PGPASSWORD).
_PARAM: Final = re.compile(
    r"""((?:password|passwd|pwd)\s*=\s*)('(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|[^\s&;]*)"""
    r"""|("(?:password|passwd|pwd)"\s*:\s*)"(?:[^"\\]|\\.)*"?""",
    re.IGNORECASE,
)
# A whole database URL's password, as SQLAlchemy parses it (it may hold spaces).
_URL_PASSWORD: Final = re.compile(r"^[\w+.-]+://[^:/@]*:([^@]*)@")
# What a database may refuse or a terminal act on: C0 controls but tab and newline, DEL, C1
# controls, and lone surrogates (from JSON's \ud800 or a surrogateescape decode).
_UNSAFE: Final = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_SAFE_ASCII: Final = bytes(range(0x20, 0x7F)) + b"\t\n"


def escape(text: str) -> str:
    """`text` with NUL, control characters and lone surrogates written as \\xNN or \\uNNNN."""
    # Nearly every text is ASCII with nothing to escape: that is found at C speed (a third
    # of isprintable()'s time on a large text), without the regex.
    if text.isascii() and not text.encode("ascii").translate(None, _SAFE_ASCII):
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # surrogateescape's stand-in for a raw byte
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


class Redactor:
    """Hides `secrets` (exact values, in any case and in the forms an answer may quote them),
    the passwords of `urls`, and every password pattern."""

    def __init__(self, secrets: Iterable[str] = (), *, urls: Iterable[str | None] = ()) -> None:
        values = {s for s in secrets if s}
        for url in urls:
            values.update(_url_passwords(url or ""))
        forms = {form.lower() for value in values for form in _forms(value)}
        forms.discard("")
        # Longest first: a secret that holds another is replaced whole.
        self._forms = tuple(sorted(forms, key=len, reverse=True))
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in self._forms), re.IGNORECASE)
            if self._forms
            else None
        )

    def text(self, text: str) -> str:
        """`text` as it may leave the process: secrets and passwords hidden, escaped."""
        if not text:
            return text
        return escape(self._hide(text))

    def stored(self, text: str) -> str:
        """`text` as it may be written to the audit database (the same as `text`: what is
        stored is printed later, by status and the reports)."""
        return self.text(text)

    def value(self, obj: Any) -> Any:
        """A JSON-like structure with each string in it redacted (keys are ours: kept)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {key: self.value(item) for key, item in obj.items()}
        if isinstance(obj, list | tuple):
            return [self.value(item) for item in obj]
        return obj

    def _hide(self, text: str) -> str:
        # `in` scans at C speed: each pattern runs only on a text that may hold its match.
        lowered = text.lower()
        if self._pattern is not None and any(form in lowered for form in self._forms):
            text = self._pattern.sub(MASK, text)
        if self._forms and "…" in text:
            text = self._hide_cut(text)
        if "@" in text:
            text = _USERINFO.sub(rf"\1{PASSWORD_MASK}@", text)
        if "pass" in lowered or "pwd" in lowered:
            text = _PARAM.sub(_masked_param, text)
        return text

    def _hide_cut(self, text: str) -> str:
        """An excerpt cut at a fixed length ends in "…": a secret the cut went through
        leaves its first characters just before it. Those are hidden too."""
        lowered = text.lower()
        if len(lowered) != len(text):
            lowered = text  # lower() changed the length: compare as given
        spans = []
        end = lowered.find("…")
        while end != -1:
            for form in self._forms:
                head = form[:CUT_MIN]
                if len(head) < CUT_MIN:
                    continue
                start = lowered.find(head, max(0, end - len(form)), end)
                while start != -1:
                    if form.startswith(lowered[start:end]):
                        spans.append((start, end))
                        break
                    start = lowered.find(head, start + 1, end)
            end = lowered.find("…", end + 1)
        for start, end in sorted(spans, reverse=True):
            text = text[:start] + MASK + text[end:]
        return text


def _masked_param(match: re.Match[str]) -> str:
    if match.group(3) is not None:
        return f'{match.group(3)}"{PASSWORD_MASK}"'
    return match.group(1) + PASSWORD_MASK


def _forms(secret: str) -> set[str]:
    """The forms an answer may quote a secret in: as is, whitespace collapsed (excerpts),
    JSON- and repr-escaped, percent-encoded."""
    return {
        secret,
        " ".join(secret.split()),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        repr(secret)[1:-1],
        quote(secret, safe=""),
        quote_plus(secret, safe=""),
    }


def _url_passwords(url: str) -> set[str]:
    """The passwords a database URL carries (user:pw@, password= parameters), as written and
    percent-decoded: either may turn up in a message later."""
    found = set()
    if match := _URL_PASSWORD.match(url):
        found.add(match.group(1))
    for match in _PARAM.finditer(url):
        if match.group(2) is not None:
            found.add(match.group(2).strip("'\""))
    return {form for value in found for form in (value, unquote(value), unquote_plus(value))}


def install(redactor: Redactor) -> Redactor:
    """Make `redactor` the current command's (kept in click's context, for its duration)."""
    context = click.get_current_context(silent=True)
    if context is not None:
        context.meta[_KEY] = redactor
    return redactor


def current() -> Redactor:
    """The current command's redactor; outside a command, one that knows only the patterns."""
    context = click.get_current_context(silent=True)
    found = context.meta.get(_KEY) if context is not None else None
    return found if isinstance(found, Redactor) else _PATTERNS_ONLY


_PATTERNS_ONLY: Final = Redactor()
