"""Every row of a run, read from the database, compared with what its facts say it must hold
now (audit/verify_replay.py); the first that differs is named.

The rows stream beside the expectation and each expected row is dropped once compared, so the
run is never held twice. The problem named is the one with the lowest key, as if both sides
sat in memory and were walked in key order: a row the facts expect and the database lacks is
named before a later row that differs. Loaded orders, known to the facts by source row
number, take their key from the database's row of that number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from batchcancel.audit.chain import stamp
from batchcancel.audit.verify_replay import (
    ATTEMPT_FIELDS,
    BOOK_FIELDS,
    MISSING,
    ORDER_FIELDS,
    REQUEST_FIELDS,
    RUN_FIELDS,
    SESSION_FIELDS,
    Expected,
)

__all__ = ["Fetch", "compare", "loaded_keys"]

# Rows of one statement whose only parameter is :run (the run's id).
Fetch = Callable[[str], Iterable[Sequence[Any]]]
Key = Any
_Triple = tuple[Key, list[Any], list[Any] | None]  # key, the row's values, what facts say

# No ORDER BY: sorting a million rows cost SQLite more than reading them; the first problem
# in key order is found over the whole table instead.
_KEYS: Final = "SELECT seq, pk FROM orders WHERE run_id = :run AND seq IS NOT NULL AND seq <> 0"
_ORDERS: Final = f"SELECT pk, {', '.join(ORDER_FIELDS)} FROM orders WHERE run_id = :run"
_ATTEMPTS: Final = (
    "SELECT a.order_pk, a.attempt, "
    + ", ".join(f"a.{k}" for k in ATTEMPT_FIELDS).replace("latency_us", "latency_ms")
    + " FROM attempts a JOIN orders o ON o.pk = a.order_pk WHERE o.run_id = :run"
)
_REQUESTS: Final = (
    f"SELECT pk, {', '.join(REQUEST_FIELDS)} FROM requests WHERE run_id = :run"
).replace("latency_us", "latency_ms")
_SESSIONS: Final = f"SELECT id, {', '.join(SESSION_FIELDS)} FROM sessions WHERE run_id = :run"
_BOOKS: Final = (f"SELECT venue, {', '.join(BOOK_FIELDS)} FROM books WHERE run_id = :run").replace(
    "seconds_to_flat_us", "seconds_to_flat"
)
_RUN: Final = f"SELECT {', '.join(RUN_FIELDS)} FROM runs WHERE id = :run"


def _at(fields: Sequence[str], *names: str) -> tuple[int, ...]:
    return tuple(fields.index(name) for name in names)


_ORDER_STAMPS: Final = _at(ORDER_FIELDS, "first_sent_at", "last_answer_at")
_ATTEMPT_STAMPS: Final = _at(ATTEMPT_FIELDS, "sent_at", "answered_at")
_ATTEMPT_US: Final = ATTEMPT_FIELDS.index("latency_us")
_REQUEST_STAMPS: Final = _at(REQUEST_FIELDS, "sent_at", "answered_at")
_REQUEST_US: Final = REQUEST_FIELDS.index("latency_us")
_SESSION_STAMPS: Final = _at(SESSION_FIELDS, "started_at", "finished_at")
_BOOK_STAMPS: Final = _at(
    BOOK_FIELDS, "started_at", "first_request_at", "last_answer_at", "flat_at"
)
_BOOK_US: Final = BOOK_FIELDS.index("seconds_to_flat_us")


def loaded_keys(fetch: Fetch) -> dict[int, int]:
    """Which key each source row number took, as the database says: what the facts of a
    loaded order are matched to (a number on two rows, which no writer makes, takes one)."""
    return dict(fetch(_KEYS))  # type: ignore[arg-type]


def compare(fetch: Fetch, run_id: str, expected: Expected) -> str:
    """The first row that is not what the facts say (runs, sessions, orders, attempts,
    requests, books, in that order), or ""."""
    sessions, attempts, requests = expected.sessions, expected.attempts, expected.requests
    return (
        _run(fetch, run_id, expected.run)
        or _first_problem(
            "sessions", _sessions(fetch, sessions), sessions, SESSION_FIELDS, _SESSION_STAMPS
        )
        or _orders(fetch, expected)
        or _first_problem(
            "attempts", _attempts(fetch, attempts), attempts, ATTEMPT_FIELDS, _ATTEMPT_STAMPS
        )
        or _first_problem(
            "requests", _requests(fetch, requests), requests, REQUEST_FIELDS, _REQUEST_STAMPS
        )
        or _first_problem(
            "books", _books(fetch, expected.books), expected.books, BOOK_FIELDS, _BOOK_STAMPS
        )
    )


def _run(fetch: Fetch, run_id: str, expected: Mapping[str, Any]) -> str:
    row = next(iter(fetch(_RUN)), None)
    if row is None:
        return f"runs {run_id}: the row is missing"
    for name, value in zip(RUN_FIELDS, row, strict=True):
        if _value(value) != expected.get(name):
            return _differs("runs", run_id, name, value, expected.get(name))
    return ""


def _first_problem(
    table: str,
    rows: Iterable[_Triple],
    expected: Mapping[Key, Any],
    fields: Sequence[str],
    stamps: Sequence[int],
) -> str:
    """The problem with the lowest key. `rows` come in any order, each with the expectation it
    took out of `expected`; what is left there at the end the database never had."""
    first: tuple[Key, str] | None = None
    for key, values, wanted in rows:
        if wanted is None:
            problem = f"{table} {_key(key)}: the row is in no recorded fact (inserted)"
        elif values == wanted:  # the common case (SQLite): one comparison per row
            continue
        else:
            _stamp(values, stamps)  # PostgreSQL's datetimes as the text facts hold
            if values == wanted:
                continue
            problem = _field_problem(table, key, values, wanted, fields)
            if not problem:
                continue
        if first is None or key < first[0]:
            first = (key, problem)
    if expected:
        gone = min(expected)
        if first is None or gone < first[0]:
            return _missing(table, gone)
    return "" if first is None else first[1]


def _field_problem(
    table: str, key: Key, values: Sequence[Any], wanted: Sequence[Any], fields: Sequence[str]
) -> str:
    for name, value, recorded in zip(fields, values, wanted, strict=True):
        if recorded is MISSING:
            recorded = None
        if value != recorded and _value(value) != recorded:
            return _differs(table, key, name, value, recorded)
    return ""


def _orders(fetch: Fetch, expected: Expected) -> str:
    orders = expected.orders
    rows = ((r[0], list(r[1:]), orders.pop(r[0], None)) for r in fetch(_ORDERS))
    problem = _first_problem("orders", rows, orders, ORDER_FIELDS, _ORDER_STAMPS)
    if not problem and expected.loaded:  # loaded, and no row of that number now
        return _missing("orders", ("seq", min(expected.loaded)))
    return problem


def _attempts(fetch: Fetch, expected: dict[Key, list[Any]]) -> Iterator[_Triple]:
    for row in fetch(_ATTEMPTS):
        key = (row[0], row[1])
        values = list(row[2:])
        values[_ATTEMPT_US] = _micros(values[_ATTEMPT_US], 1000)
        yield key, values, expected.pop(key, None)


def _requests(fetch: Fetch, expected: dict[Key, list[Any]]) -> Iterator[_Triple]:
    for row in fetch(_REQUESTS):
        values = list(row[1:])
        values[_REQUEST_US] = _micros(values[_REQUEST_US], 1000)
        yield row[0], values, expected.pop(row[0], None)


def _sessions(fetch: Fetch, expected: dict[Key, dict[str, Any]]) -> Iterator[_Triple]:
    for row in fetch(_SESSIONS):
        yield row[0], list(row[1:]), _listed(expected.pop(row[0], None), SESSION_FIELDS)


def _books(fetch: Fetch, expected: dict[Key, dict[str, Any]]) -> Iterator[_Triple]:
    for row in fetch(_BOOKS):
        values = list(row[1:])
        values[_BOOK_US] = _micros(values[_BOOK_US], 1_000_000)
        yield row[0], values, _listed(expected.pop(row[0], None), BOOK_FIELDS)


def _listed(wanted: Mapping[str, Any] | None, fields: Sequence[str]) -> list[Any] | None:
    return None if wanted is None else [wanted.get(name) for name in fields]


def _stamp(values: list[Any], stamps: Sequence[int]) -> None:
    """A row's timestamps as facts hold them (PostgreSQL gives datetimes; SQLite the text)."""
    for n in stamps:
        value = values[n]
        if value is not None and not isinstance(value, str):
            values[n] = _value(value)


def _micros(value: Any, per_unit: int) -> Any:
    """A stored float (ms or s) as the whole microseconds facts hold (facts carry no float)."""
    return None if value is None else round(value * per_unit)


def _value(value: Any) -> Any:
    """A database value as facts hold it."""
    if hasattr(value, "isoformat"):
        return stamp(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _missing(table: str, key: Key) -> str:
    return f"{table} {_key(key)}: the row is missing (deleted)"


def _differs(table: str, key: Key, name: str, actual: Any, expected: Any) -> str:
    return f"{table} {_key(key)}: {name} is {_value(actual)!r}, the chain recorded {expected!r}"


def _key(key: Key) -> str:
    return "/".join(str(k) for k in key) if isinstance(key, tuple) else str(key)
