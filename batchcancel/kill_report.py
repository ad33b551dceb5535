"""The kill report (`report RUN --format kill`): the mass-cancel report a reviewer asks for, in
the spirit of FIX's OrderMassCancelReport (SPEC "The venues' own books", "The kill report").

Who started the run and where, why, when, with which command line and scope, and its digest;
then per venue what the books showed at the start (listed, and from the input), what became
of it (cancelled, already closed, failed, still working at the end), the verdict and its
times; then the orders that need a human. One dict is built from the audit database (read
only) and printed either as one JSON object or as text, so the two always agree.

A run without `--from-venues` is reported from its input alone: each venue's verdict is
`not listed`, since nothing proved its book flat. A venue in the books' scope without a books
row (never listed: a dry run, a crash before the verdict) is `not_flat`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.readback import run_header
from batchcancel.audit.readback_types import RunHeader
from batchcancel.audit.records import BookRecord
from batchcancel.audit.store import AuditStore
from batchcancel.audit.tables import Order
from batchcancel.errors import AuditError
from batchcancel.outcomes import GOOD, Outcome
from batchcancel.report import iso
from batchcancel.summary import summarise

__all__ = ["NOT_LISTED", "STILL_WORKING", "kill_report"]

_orders: Final = cast(sa.Table, Order.__table__)

NOT_LISTED: Final = "not listed"  # the verdict of a venue whose book the run never listed
# How engine/books.py names, in a book's detail, orders still listed after their cancel.
_STUCK_PREFIX: Final = "still listed as working after their cancel: "
STILL_WORKING: Final = "still working at the venue at the end"
_GOOD_VALUES: Final = tuple(sorted(o.value for o in GOOD))
TEXT_ORDERS: Final = 200  # orders that need a human the text lists; JSON lists them all


def kill_report(store: AuditStore, run_id: str, *, as_json: bool) -> str:
    """The kill report of `run_id` (a run id, as find_run returns it): one JSON object when
    `as_json`, else text. Texts come from the audit, which stores them redacted; they pass
    the store's redactor once more on the way out."""
    report = store.redactor.value(_build(store, run_id))
    if as_json:
        return json.dumps(report)
    return _text(report)


# -- building the report --------------------------------------------------------------------


def _build(store: AuditStore, run_id: str) -> dict[str, Any]:
    run = store.find_run(run_id)
    header = run_header(store, run.id)
    summary = summarise(store, run)
    options = run.options
    scope_venues = options.get("from_venues")
    books = store.book_records(run.id) if scope_venues is not None else {}
    counts = store.counts(run.id)
    figures = _venue_figures(store, run.id)
    start = header.sessions[0].started_at if header.sessions else header.created_at
    venues: dict[str, dict[str, Any]] = {}
    for venue in sorted({*(scope_venues or ()), *counts}):
        in_scope = scope_venues is not None and venue in scope_venues
        venues[venue] = _venue(
            counts.get(venue, {}),
            figures.get(venue, {}),
            books.get(venue),
            in_scope=in_scope,
            base=_session_start(header, books.get(venue), start),
        )
    flat = scope_venues is not None and all(
        venues[venue]["verdict"] == "flat" for venue in scope_venues
    )
    return {
        "report": "kill",
        "run_id": run.id,
        "run_key": run.run_key,
        "command": run.command,
        "status": summary.status.value,
        "flat": flat,
        "who": {
            "os_user": header.os_user,
            "host": header.host,
            "pid": header.pid,
            "version": header.version,
        },
        "why": header.reason,
        "when": {
            "started_at": iso(start),
            "finished_at": iso(header.finished_at),
            "working_s": round(header.working_seconds, 6),
        },
        "command_line": header.command_line,
        "scope": {
            "from_venues": list(scope_venues) if scope_venues is not None else None,
            "account": list(options.get("account") or []),
            "symbol": list(options.get("symbol") or []),
            "side": options.get("side") or None,
            "source": header.source or None,  # as the run recorded it: a path, -, a query
        },
        "digest": summary.digest,
        "orders": summary.orders,
        "venues": venues,
        "needs_human": _needs_human(store, run.id, books),
        "sessions": [
            {
                "command": s.command,
                "os_user": s.os_user,
                "host": s.host,
                "pid": s.pid,
                "started_at": iso(s.started_at),
                "finished_at": iso(s.finished_at),
                "status": s.status,
            }
            for s in header.sessions
        ],
    }


def _venue(
    outcomes: Mapping[str, int],
    figures: Mapping[str, Any],
    book: BookRecord | None,
    *,
    in_scope: bool,
    base: datetime,
) -> dict[str, Any]:
    """One venue's line: the database's counts, and the book's verdict and times."""
    canceled = outcomes.get(Outcome.CANCELED.value, 0)
    pending = outcomes.get(Outcome.CANCEL_PENDING.value, 0)
    needs = sum(n for outcome, n in outcomes.items() if outcome not in _GOOD_VALUES)
    line: dict[str, Any] = {
        "verdict": NOT_LISTED,
        "orders": sum(outcomes.values()),
        "listed": int(figures.get("listed", 0)),
        "from_input": int(figures.get("from_input", 0)),
        "listed_and_in_input": int(figures.get("both", 0)),
        "cancelled": canceled + pending,
        "cancel_pending": pending,
        "already_closed": outcomes.get(Outcome.ALREADY_CLOSED.value, 0),
        "failed": outcomes.get(Outcome.FAILED.value, 0),
        "needs_human": needs,
        "working_at_end": None,
        "lists": 0,
        "seconds_to_first_request": _since(base, figures.get("first_sent_at")),
        "seconds_to_last_answer": _since(base, figures.get("last_answer_at")),
        "seconds_to_flat": None,
        "detail": "",
    }
    if not in_scope:
        return line
    if book is None:
        line.update(verdict="not_flat", detail="never listed to the end: no verdict recorded")
        return line
    flat = _since(base, book.flat_at)
    if flat is None and book.seconds_to_flat is not None:
        flat = round(book.seconds_to_flat, 6)
    line.update(
        verdict=book.verdict,
        working_at_end=book.working_at_end,
        lists=book.lists,
        seconds_to_first_request=_earliest(
            _since(base, book.first_request_at), line["seconds_to_first_request"]
        ),
        seconds_to_last_answer=_latest(
            _since(base, book.last_answer_at), line["seconds_to_last_answer"]
        ),
        seconds_to_flat=flat,
        detail=book.detail,
    )
    return line


def _venue_figures(store: AuditStore, run_id: str) -> dict[str, dict[str, Any]]:
    """Per venue: orders the lists found, orders the input named, both; and the first send
    and last answer of its orders."""
    listed = _orders.c.listed_by.is_not(None)
    from_input = _orders.c.seq > 0
    query = (
        sa.select(
            _orders.c.venue,
            sa.func.sum(sa.case((listed, 1), else_=0)),
            sa.func.sum(sa.case((from_input, 1), else_=0)),
            sa.func.sum(sa.case((sa.and_(listed, from_input), 1), else_=0)),
            sa.func.min(_orders.c.first_sent_at),
            sa.func.max(_orders.c.last_answer_at),
        )
        .where(_orders.c.run_id == run_id)
        .group_by(_orders.c.venue)
    )
    rows = _read(store, query)
    return {
        venue: {
            "listed": int(n_listed or 0),
            "from_input": int(n_input or 0),
            "both": int(n_both or 0),
            "first_sent_at": first,
            "last_answer_at": last,
        }
        for venue, n_listed, n_input, n_both, first, last in rows
    }


def _needs_human(
    store: AuditStore, run_id: str, books: Mapping[str, BookRecord]
) -> list[dict[str, Any]]:
    """Orders whose outcome is not canceled, cancel_pending or already_closed (or that have
    none), in input order; then the orders a book still listed as working at the end."""
    columns = (
        _orders.c.venue,
        _orders.c.order_id,
        _orders.c.account_id,
        _orders.c.symbol,
        _orders.c.outcome,
        _orders.c.reason,
    )
    bad = sa.or_(_orders.c.outcome.is_(None), _orders.c.outcome.not_in(_GOOD_VALUES))
    rows = _read(
        store,
        sa.select(*columns).where(_orders.c.run_id == run_id, bad).order_by(_orders.c.pk),
    )
    found = [_order(row) for row in rows]
    seen = {(o["venue"], o["order_id"]) for o in found}
    for venue, book in sorted(books.items()):
        stuck = [i for i in _stuck_ids(book.detail) if (venue, i) not in seen]
        if not stuck:
            continue
        where = (_orders.c.run_id == run_id, _orders.c.venue == venue)
        known = {
            row[1]: row
            for row in _read(
                store, sa.select(*columns).where(*where, _orders.c.order_id.in_(stuck))
            )
        }
        for order_id in stuck:
            row = known.get(order_id)
            order = _order(row) if row is not None else _order((venue, order_id, "", "", None, ""))
            order["reason"] = f"{STILL_WORKING}: {book.detail}"
            order["working_at_end"] = True
            found.append(order)
    return found


def _order(row: Sequence[Any]) -> dict[str, Any]:
    venue, order_id, account_id, symbol, outcome, reason = row
    return {
        "venue": venue,
        "order_id": order_id,
        "account_id": account_id or "",
        "symbol": symbol or "",
        "outcome": outcome,
        "reason": reason or "",
        "working_at_end": False,
    }


def _stuck_ids(detail: str) -> list[str]:
    """The order ids a book's detail names as still working after their cancel."""
    if not detail.startswith(_STUCK_PREFIX):
        return []
    return [part.strip() for part in detail[len(_STUCK_PREFIX) :].split(", ") if part.strip()]


def _read(store: AuditStore, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    try:
        with store.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(query)]
    except sa.exc.SQLAlchemyError as exc:
        line = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""])[0]
        raise AuditError(f"audit database read failed: {store.redactor.text(line)}") from None


def _session_start(header: RunHeader, book: BookRecord | None, start: datetime) -> datetime:
    """What a venue's times count from: the start of the session that reached its verdict
    (a resume lists again), else the run's start."""
    if book is None or book.started_at is None:
        return start
    begun = [s.started_at for s in header.sessions if s.started_at <= book.started_at]
    return max(begun, default=start)


def _since(base: datetime, when: datetime | None) -> float | None:
    return None if when is None else round((when - base).total_seconds(), 6)


def _earliest(*values: float | None) -> float | None:
    return min((v for v in values if v is not None), default=None)


def _latest(*values: float | None) -> float | None:
    return max((v for v in values if v is not None), default=None)


# -- the text -------------------------------------------------------------------------------

_COLUMNS: Final = (
    ("venue", "venue"),
    ("verdict", "verdict"),
    ("listed", "listed"),
    ("from_input", "in input"),
    ("cancelled", "cancelled"),
    ("already_closed", "closed"),
    ("failed", "failed"),
    ("working_at_end", "working at end"),
    ("seconds_to_first_request", "first request"),
    ("seconds_to_last_answer", "last answer"),
    ("seconds_to_flat", "flat"),
)


def _text(report: Mapping[str, Any]) -> str:
    who, when, scope = report["who"], report["when"], report["scope"]
    key = f" (key {report['run_key']})" if report["run_key"] else ""
    if scope["from_venues"] is None:
        verdict = "not from the venues' books: nothing proved them flat"
    elif report["flat"]:
        verdict = "every venue in scope is flat"
    else:
        verdict = "NOT every venue in scope is flat"
    books = ", ".join(scope["from_venues"]) if scope["from_venues"] is not None else "none"
    lines = [
        f"kill report: run {report['run_id']}{key}, {report['command']}, {report['status']}",
        f"verdict:  {verdict}",
        f"who:      {who['os_user'] or '?'} on {who['host'] or '?'} "
        f"(pid {who['pid']}, batchcancel {who['version'] or '?'})",
        f"why:      {report['why'] or '(no --reason given)'}",
        f"when:     {when['started_at']} to {when['finished_at'] or '(not finished)'} "
        f"({when['working_s']:.3f} s working)",
        f"command:  {report['command_line']}",
        f"scope:    books of {books}; account {', '.join(scope['account']) or 'any'}; "
        f"symbol {', '.join(scope['symbol']) or 'any'}; side {scope['side'] or 'any'}; "
        f"source {scope['source'] or 'none'}",
        f"digest:   {report['digest']}",
    ]
    if len(report["sessions"]) > 1:
        lines.append(f"sessions: {len(report['sessions'])}")
        lines.extend(
            f"  {s['command']} by {s['os_user']} on {s['host']} at {s['started_at']}: {s['status']}"
            for s in report["sessions"]
        )
    lines += ["", f"orders {report['orders']}, per venue (times in seconds from the start):"]
    table = [[title for _, title in _COLUMNS]]
    for venue, line in report["venues"].items():
        table.append([venue, *(_cell(line[name]) for name, _ in _COLUMNS[1:])])
    widths = [max(len(row[i]) for row in table) for i in range(len(_COLUMNS))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in table]  # fmt: skip
    notes = [(v, line["detail"]) for v, line in report["venues"].items() if line["detail"]]
    lines += [f"  {venue}: {detail}" for venue, detail in notes]
    orders = report["needs_human"]
    lines += ["", f"orders that need a human: {len(orders)}"]
    for order in orders[:TEXT_ORDERS]:
        lines.append(
            f"  {order['venue']}  {order['order_id']}  {order['outcome'] or 'no outcome yet'}"
            + (f"  {order['reason']}" if order["reason"] else "")
        )
    if len(orders) > TEXT_ORDERS:
        lines.append(
            f"  ... and {len(orders) - TEXT_ORDERS} more: `batchcancel report "
            f"{report['run_id']} --format kill --json` lists them all"
        )
    return "\n".join(lines)  # no newline at the end: click.echo adds one, as for JSON


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
