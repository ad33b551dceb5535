"""Read-only queries for the evidence a run leaves: the HTML report and the metrics.

Plain SQLAlchemy Core over `store.engine`; nothing here writes. Every database failure is an
AuditError (exit 1, one line), as it is for the store's own reads. Texts are returned as the
audit holds them; the caller passes each through its redactor before it leaves the process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final, cast

import sqlalchemy as sa

from batchcancel.audit.readback_types import (
    AttentionOrder,
    MetricCounts,
    RequestEvent,
    RunHeader,
    SessionInfo,
    VenueStats,
)
from batchcancel.audit.store import CONFIRMED_PREFIX, AuditStore
from batchcancel.audit.tables import Attempt, Order, Request, Run, Session
from batchcancel.errors import AuditError
from batchcancel.outcomes import Outcome
from batchcancel.redact import Redactor

__all__ = [
    "ATTENTION_OUTCOMES",
    "FILLED_BEFORE_CANCEL",
    "REQUEST_KINDS",
    "AttentionOrder",
    "MetricCounts",
    "RequestEvent",
    "RunHeader",
    "SessionInfo",
    "VenueStats",
    "attention_orders",
    "first_request_at",
    "metric_counts",
    "outcome_events",
    "request_events",
    "run_digest",
    "run_header",
    "venue_stats",
]

_runs: Final = cast(sa.Table, Run.__table__)
_sessions: Final = cast(sa.Table, Session.__table__)
_orders: Final = cast(sa.Table, Order.__table__)
_attempts: Final = cast(sa.Table, Attempt.__table__)
_requests: Final = cast(sa.Table, Request.__table__)
_PASSWORDS: Final = Redactor()

# SPEC (Evidence and monitoring): the kinds of request a venue is sent.
REQUEST_KINDS: Final = ("cancel", "bulk", "sweep", "confirm", "list")
# The outcomes whose orders need a human (issue 18); cancel_pending ones are unconfirmed.
ATTENTION_OUTCOMES: Final = (
    Outcome.NOT_FOUND.value,
    Outcome.REJECTED.value,
    Outcome.FAILED.value,
    Outcome.SKIPPED.value,
    Outcome.CANCEL_PENDING.value,
)
# How the attention table names an order that the confirm pass found filled, and one that
# has no outcome at all (it was in flight when its process died, never resumed).
FILLED_BEFORE_CANCEL: Final = "filled before cancel"
NO_OUTCOME: Final = "no outcome yet"
BULK: Final = "bulk"  # the attempt kind of a bulk request (one row per order it names)


@contextmanager
def _read(store: AuditStore) -> Iterator[sa.Connection]:
    try:
        with store.engine.connect() as conn:
            yield conn
    except sa.exc.SQLAlchemyError as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
        raise AuditError(f"audit database read failed: {_PASSWORDS.text(lines[0])}") from None


def _stream(store: AuditStore, query: sa.Select[Any]) -> Iterator[tuple[Any, ...]]:
    with _read(store) as conn:
        result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
        try:
            for row in result:
                yield tuple(row)
        except sa.exc.SQLAlchemyError as exc:
            lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
            raise AuditError(f"audit database read failed: {_PASSWORDS.text(lines[0])}") from None


def run_header(store: AuditStore, run_id: str) -> RunHeader:
    """The run row and its sessions, in the order they started."""
    with _read(store) as conn:
        row = conn.execute(sa.select(_runs).where(_runs.c.id == run_id)).mappings().first()
        session_rows = (
            conn.execute(
                sa.select(_sessions).where(_sessions.c.run_id == run_id).order_by(_sessions.c.id)
            )
            .mappings()
            .all()
        )
    if row is None:
        raise AuditError(f"run {run_id} is not in the audit database")
    sessions = [
        SessionInfo(
            command=s["command"],
            os_user=s["os_user"] or "",
            host=s["host"] or "",
            pid=int(s["pid"] or 0),
            command_line=s["command_line"] or "",
            version=s["version"] or "",
            started_at=s["started_at"],
            finished_at=s["finished_at"],
            status=s["status"] or "",
        )
        for s in session_rows
    ]
    return RunHeader(
        id=row["id"],
        run_key=row["run_key"],
        command=row["command"],
        status=row["status"],
        dry_run=bool(row["dry_run"]),
        source=row["source"] or "",
        options=row["options"] or "{}",
        reason=row["reason"] or "",
        os_user=row["os_user"] or "",
        host=row["host"] or "",
        pid=int(row["pid"] or 0),
        command_line=row["command_line"] or "",
        version=row["version"] or "",
        orders_total=int(row["orders_total"] or 0),
        duplicates=int(row["duplicates"] or 0),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        sessions=sessions,
    )


def run_digest(store: AuditStore, run_id: str) -> str | None:
    """The run's audit digest as its chains give it now (audit/chain.py); None for a run
    recorded before the chain existed (it has no facts)."""
    with _read(store) as conn:
        facts = conn.execute(
            sa.text("SELECT COUNT(*) FROM chain_links WHERE run_id = :id"), {"id": run_id}
        ).scalar()
    return store.digest(run_id) if facts else None


def _ensure(stats: dict[str, VenueStats], venue: str) -> VenueStats:
    if venue not in stats:
        stats[venue] = VenueStats(venue)
    return stats[venue]


def venue_stats(store: AuditStore, run_id: str) -> dict[str, VenueStats]:
    """Per venue (sorted by name): orders, outcomes, requests by kind, 429 answers, the first
    request sent and the last answer heard."""
    stats: dict[str, VenueStats] = {}
    # A bulk request is one request with an attempt row per order it names, all with the
    # same sent_at: it counts once (as do its 429 and its latency).
    limited = sa.case((_attempts.c.http_status == 429, _attempts.c.sent_at), else_=None)
    attempt_query = (
        sa.select(
            _orders.c.venue,
            _attempts.c.kind,
            sa.func.count(),
            sa.func.count(sa.distinct(_attempts.c.sent_at)),
            sa.func.count(limited),
            sa.func.count(sa.distinct(limited)),
            sa.func.min(_attempts.c.sent_at),
            sa.func.max(_attempts.c.answered_at),
        )
        .join(_orders, _orders.c.pk == _attempts.c.order_pk)
        .where(_attempts.c.run_id == run_id)
        .group_by(_orders.c.venue, _attempts.c.kind)
    )
    request_query = (
        sa.select(
            _requests.c.venue,
            _requests.c.kind,
            sa.func.count(),
            sa.func.count(),
            sa.func.count(sa.case((_requests.c.http_status == 429, 1), else_=None)),
            sa.func.count(sa.case((_requests.c.http_status == 429, 1), else_=None)),
            sa.func.min(_requests.c.sent_at),
            sa.func.max(_requests.c.answered_at),
        )
        .where(_requests.c.run_id == run_id)
        .group_by(_requests.c.venue, _requests.c.kind)
    )
    with _read(store) as conn:
        for venue, outcome, n in conn.execute(
            sa.select(_orders.c.venue, _orders.c.outcome, sa.func.count())
            .where(_orders.c.run_id == run_id)
            .group_by(_orders.c.outcome, _orders.c.venue)  # ix_orders_run_outcome's order
        ):
            entry = _ensure(stats, venue)
            entry.orders += int(n)
            if outcome:
                entry.outcomes[outcome] += int(n)
        for query in (attempt_query, request_query):
            for venue, kind, rows, sends, hit, hit_sends, first, last in conn.execute(query):
                entry = _ensure(stats, venue)
                bulk = kind == BULK
                entry.requests[kind or "cancel"] += int(sends if bulk else rows)
                entry.rate_limited += int((hit_sends if bulk else hit) or 0)
                if first is not None and (
                    entry.first_sent_at is None or first < entry.first_sent_at
                ):
                    entry.first_sent_at = first
                if last is not None and (
                    entry.last_answer_at is None or last > entry.last_answer_at
                ):
                    entry.last_answer_at = last
    return dict(sorted(stats.items()))


def metric_counts(store: AuditStore, run_id: str) -> MetricCounts:
    """The run's counts as the metrics carry them, every outcome and kind present (zero
    where none), so that an alert on a series never meets a missing one."""
    stats = venue_stats(store, run_id)
    orders = {
        venue: {o.value: s.outcomes.get(o.value, 0) for o in Outcome} for venue, s in stats.items()
    }
    requests = {
        venue: {kind: s.requests.get(kind, 0) for kind in REQUEST_KINDS}
        for venue, s in stats.items()
    }
    return MetricCounts(
        orders=orders,
        requests=requests,
        rate_limited={venue: s.rate_limited for venue, s in stats.items()},
    )


def first_request_at(store: AuditStore, run_id: str) -> datetime | None:
    """When the run's first request was sent (None: it sent none)."""
    with _read(store) as conn:
        first = conn.execute(
            sa.select(sa.func.min(_attempts.c.sent_at)).where(_attempts.c.run_id == run_id)
        ).scalar()
        other = conn.execute(
            sa.select(sa.func.min(_requests.c.sent_at)).where(_requests.c.run_id == run_id)
        ).scalar()
    known = [t for t in (first, other) if t is not None]
    return min(known) if known else None


def request_events(store: AuditStore, run_id: str) -> Iterator[RequestEvent]:
    """Every request sent for the run (attempts of orders, then order-less requests),
    streamed: a million attempts never sit in memory as rows at once."""
    attempts_query = (
        sa.select(
            _orders.c.venue,
            _attempts.c.kind,
            _attempts.c.sent_at,
            _attempts.c.answered_at,
            _attempts.c.http_status,
            _attempts.c.latency_ms,
        )
        .join(_orders, _orders.c.pk == _attempts.c.order_pk)
        .where(_attempts.c.run_id == run_id)
    )
    requests_query = sa.select(
        _requests.c.venue,
        _requests.c.kind,
        _requests.c.sent_at,
        _requests.c.answered_at,
        _requests.c.http_status,
        _requests.c.latency_ms,
    ).where(_requests.c.run_id == run_id)
    bulk_sent: set[tuple[str, datetime]] = set()  # a bulk request's rows: one request
    for query in (attempts_query, requests_query):
        for venue, kind, sent_at, answered_at, status, latency in _stream(store, query):
            if kind == BULK:
                if (venue, sent_at) in bulk_sent:
                    continue
                bulk_sent.add((venue, sent_at))
            yield RequestEvent(venue, kind or "cancel", sent_at, answered_at, status, latency)


def outcome_events(store: AuditStore, run_id: str) -> Iterator[tuple[str, str, datetime | None]]:
    """(venue, outcome, when it was decided) of every order with an outcome, streamed. An
    invalid order was never sent: its time is None (decided when the run loaded)."""
    query = sa.select(_orders.c.venue, _orders.c.outcome, _orders.c.last_answer_at).where(
        _orders.c.run_id == run_id, _orders.c.outcome.is_not(None)
    )
    for row in _stream(store, query):
        yield str(row[0]), str(row[1]), row[2]


def attention_orders(
    store: AuditStore, run_id: str, *, limit: int
) -> tuple[list[AttentionOrder], int]:
    """The orders that need a human, in input order: not_found, rejected, failed, skipped,
    cancel_pending (unconfirmed), filled before their cancel (found by the confirm pass), and
    any without an outcome. At most `limit` of them, with how many there are in all."""
    need = sa.or_(
        _orders.c.outcome.in_(ATTENTION_OUTCOMES),
        _orders.c.outcome.is_(None),
        sa.and_(
            _orders.c.outcome == Outcome.ALREADY_CLOSED.value,
            _orders.c.reason.like(f"{CONFIRMED_PREFIX}%"),  # as store.filled_while_pending
        ),
    )
    where = sa.and_(_orders.c.run_id == run_id, need)
    with _read(store) as conn:
        total = int(conn.execute(sa.select(sa.func.count()).where(where)).scalar() or 0)
        rows = conn.execute(
            sa.select(
                _orders.c.venue,
                _orders.c.order_id,
                _orders.c.account_id,
                _orders.c.symbol,
                _orders.c.outcome,
                _orders.c.reason,
                _orders.c.attempts,
                _orders.c.last_http_status,
                _orders.c.last_answer_at,
            )
            .where(where)
            .order_by(_orders.c.pk)
            .limit(limit)
        ).all()
    result = []
    for venue, order_id, account, symbol, outcome, reason, tries, status, last in rows:
        label = outcome or NO_OUTCOME
        if outcome == Outcome.ALREADY_CLOSED.value:
            label = FILLED_BEFORE_CANCEL
        result.append(
            AttentionOrder(
                venue,
                order_id,
                account or "",
                symbol or "",
                label,
                reason or "",
                int(tries or 0),
                status,
                last,
            )
        )
    return result, total
