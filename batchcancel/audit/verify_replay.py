"""What a run's rows must hold now, by its facts: every fact replayed, in link order, into a
compact expectation per table (audit/verify.py feeds it one link at a time).

Rows are lists in the order of their table's fields (below), not dicts: a million orders and
their attempts are held once, in about a third of the memory dicts took. A row a fact only
partly describes (an order known by its key before the loaded row it updates is matched to
that key) holds MISSING in the fields no fact set yet; every reader takes MISSING for NULL.
Strings that repeat (venue, state, outcome, worker, verdict, ...) are kept once each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "ATTEMPT_FIELDS",
    "BOOK_FIELDS",
    "LOADED_TAIL",
    "MISSING",
    "ORDER_FIELDS",
    "REQUEST_FIELDS",
    "RUN_FIELDS",
    "SESSION_FIELDS",
    "Expected",
]

# The columns each fact kind sets; verify compares exactly these (operational columns such as
# the run lock, lane leases and the digest itself are not facts).
RUN_FIELDS: Final = (
    "run_key", "command", "dry_run", "source", "options", "reason", "os_user", "host", "pid",
    "command_line", "version", "created_at", "clock", "status", "orders_total", "duplicates",
    "started_at", "finished_at", "sessions",
)  # fmt: skip
SESSION_FIELDS: Final = (
    "command", "os_user", "host", "pid", "command_line", "version", "started_at",
    "finished_at", "status",
)  # fmt: skip
ORDER_FIELDS: Final = (
    "seq", "venue", "order_id", "account_id", "symbol", "state", "outcome", "reason",
    "attempts", "last_http_status", "first_sent_at", "last_answer_at", "listed_by",
)  # fmt: skip
ATTEMPT_FIELDS: Final = (
    "run_id", "worker", "kind", "sent_at", "answered_at", "http_status", "verdict",
    "latency_us", "detail",
)  # fmt: skip
BOOK_FIELDS: Final = (
    "verdict", "listed", "from_input", "cancelled", "working_at_end", "lists", "started_at",
    "first_request_at", "last_answer_at", "flat_at", "seconds_to_flat_us", "detail",
)  # fmt: skip
REQUEST_FIELDS: Final = (
    "venue", "kind", "target", "worker", "sent_at", "answered_at", "http_status", "verdict",
    "latency_us", "detail",
)  # fmt: skip
_LOADED: Final = 8  # an "orders" fact gives the first eight fields of each loaded order
LOADED_TAIL: Final = (0, None, None, None, None)  # and the rest start as this
_TAIL: Final = list(LOADED_TAIL)


class _Missing:
    """A field no fact has set (read as NULL)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def _itself(value: Any) -> Any:
    return value


class _Strings(dict[Any, Any]):
    """One object for each distinct value: `strings[v]` is the first v seen equal to v."""

    def __missing__(self, key: Any) -> Any:
        self[key] = key
        return key


_ORDER: Final = {name: n for n, name in enumerate(ORDER_FIELDS)}
_ATTEMPT: Final = {name: n for n, name in enumerate(ATTEMPT_FIELDS)}
_STATE, _OUTCOME, _REASON, _ATTEMPTS, _HTTP, _FIRST_SENT, _LAST_ANSWER = (
    _ORDER[k]
    for k in (
        "state", "outcome", "reason", "attempts", "last_http_status", "first_sent_at",
        "last_answer_at",
    )
)  # fmt: skip


class Expected:
    """The rows the facts say the run holds now, table by table.

    Facts know a loaded order by its source row number and every later fact by its key: the
    database's rows say which key each row number took (`keys`, given before the replay), so
    each order is one row here from the start. A loaded order with no row of its number in
    the database waits in `loaded`, to be named missing; an order facts know only by key is a
    full row if a list or a sweep found it, otherwise the fields facts set (MISSING elsewhere).
    """

    def __init__(self, keys: Mapping[int, int] | None = None) -> None:
        self.run: dict[str, Any] = {}
        self.sessions: dict[int, dict[str, Any]] = {}
        self.loaded: dict[int, list[Any]] = {}
        self.orders: dict[int, list[Any]] = {}
        self.attempts: dict[tuple[int, int], list[Any]] = {}
        self.requests: dict[int, list[Any]] = {}
        self.books: dict[str, dict[str, Any]] = {}
        self.keys: Mapping[int, int] = keys or {}  # row number -> key, as the database says
        self._strings = _Strings()

    def apply(
        self,
        facts: Iterable[Mapping[str, Any]],
        chain_id: str,
        seq: int,
        share: Callable[[Any], Any] | None = None,
    ) -> None:
        """Replay one link's facts; ValueError for a kind of fact verify does not know."""
        # A million begins and as many answers: their replay is inlined, with locals.
        if share is None:
            share = self._strings.__getitem__
        attempts, orders, order = self.attempts, self.orders, self._order
        for fact in facts:
            try:
                kind = fact["t"]
                if kind == "begin":
                    pk, number, sent_at, sent_kind = (
                        fact["pk"], fact["attempt"], fact["sent_at"], fact["kind"],
                    )  # fmt: skip
                    attempts[pk, number] = [
                        share(fact["run_id"]), share(fact["worker"]), share(sent_kind), sent_at,
                        None, None, None, None, "",
                    ]  # fmt: skip
                    row = orders.get(pk) or order(pk)
                    if sent_kind != "confirm":
                        row[_STATE] = "sending"
                    row[_ATTEMPTS] = number
                    first = row[_FIRST_SENT]
                    if first is MISSING or not first:
                        row[_FIRST_SENT] = sent_at
                elif kind == "answer" or kind == "late":
                    pk, number = fact["pk"], fact["attempt"]
                    attempt = attempts.get((pk, number))
                    if attempt is None:
                        attempt = attempts[pk, number] = [None] * len(ATTEMPT_FIELDS)
                    answered_at, status = fact["answered_at"], fact["http_status"]
                    attempt[4:] = (
                        answered_at, status, share(fact["verdict"]), share(fact["latency_us"]),
                        share(fact["detail"]),
                    )  # fmt: skip
                    if kind == "answer":
                        row = orders.get(pk) or order(pk)
                        row[_STATE] = share(fact["state"])
                        row[_OUTCOME] = share(fact["outcome"])
                        row[_REASON] = share(fact["reason"])
                        row[_HTTP] = status
                        row[_LAST_ANSWER] = answered_at
                else:
                    self._other(kind, fact, chain_id, seq, share)
            except TypeError:  # a value that cannot be shared (no writer makes one): as it is
                if share is _itself:
                    raise
                self.apply([fact], chain_id, seq, _itself)

    def _order(self, pk: int) -> list[Any]:
        """An order by its key (facts name a loaded order's key only after loading it)."""
        row = self.orders.get(pk)
        if row is None:
            row = self.orders[pk] = [MISSING] * len(ORDER_FIELDS)
        return row

    def _other(
        self,
        kind: str,
        fact: Mapping[str, Any],
        chain_id: str,
        seq: int,
        share: Callable[[Any], Any],
    ) -> None:
        if kind == "orders":
            for values in fact["rows"]:
                if len(values) != _LOADED:
                    raise ValueError(f"an orders fact of chain {chain_id} link {seq} has a row "
                                     f"of {len(values)} values, not {_LOADED}")  # fmt: skip
                for n in (1, 3, 4, 5, 6, 7):  # all but the row number and the order id
                    values[n] = share(values[n])
                values = values + _TAIL  # a new list of exactly 13 (extending over-allocates)
                number = values[0]
                pk = self.keys.get(number) if number else None
                if pk is None:
                    self.loaded[number] = values
                    continue
                row = self.orders.get(pk)
                if row is None:
                    self.orders[pk] = values
                else:  # facts by key came first (no writer does that): they stay over it
                    row[:] = [v if r is MISSING else r for r, v in zip(row, values, strict=True)]
        elif kind == "orders_set":  # recover, reset, settle, release: rows and values changed
            changes = [(_ORDER[k], v) for k, v in fact["values"].items() if k in _ORDER]
            for pk in fact["pks"]:
                row = self._order(pk)
                for n, value in changes:
                    row[n] = value
            changes = [
                (_ATTEMPT[k], v) for k, v in fact.get("attempt_values", {}).items() if k in _ATTEMPT
            ]
            for pk, number in fact.get("attempts", []):
                attempt = self.attempts.get((pk, number))
                if attempt is None:
                    attempt = self.attempts[pk, number] = [None] * len(ATTEMPT_FIELDS)
                for n, value in changes:
                    attempt[n] = value
        elif kind == "run":
            self.run = {k: fact.get(k) for k in RUN_FIELDS}
        elif kind in ("status", "totals", "session", "session_end"):
            self.run.update(fact.get("run", {}))
            if kind in ("session", "session_end"):
                session = self.sessions.setdefault(fact["id"], {})
                session.update({k: fact[k] for k in SESSION_FIELDS if k in fact})
        elif kind == "listed":  # orders a venue's list showed that the run did not hold
            for values in fact["orders"]:
                self.orders[values["pk"]] = [values.get(k) for k in ORDER_FIELDS]
        elif kind == "book":
            self.books[fact["venue"]] = {k: fact.get(k) for k in BOOK_FIELDS}
        elif kind == "swept":
            self.orders[fact["pk"]] = [fact.get(k) for k in ORDER_FIELDS]
            swept = dict(fact["attempt"])
            self.attempts[fact["pk"], 1] = [swept.get(k) for k in ATTEMPT_FIELDS]
        elif kind == "request":
            self.requests[fact["pk"]] = [fact.get(k) for k in REQUEST_FIELDS]
        elif kind == "request_answer":
            request = self.requests.get(fact["pk"])
            if request is None:
                request = self.requests[fact["pk"]] = [None] * len(REQUEST_FIELDS)
            request[5:] = [fact[k] for k in REQUEST_FIELDS[5:]]
        else:
            raise ValueError(f"unknown fact {kind!r} in chain {chain_id} link {seq}")
