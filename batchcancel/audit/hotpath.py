"""The hot write path: every raw SQL statement the store runs per order (loading, attempts,
answers, the lane fence), and `write_batch`, which commits a batch of them at once.

These are plain driver statements (executemany) with :name parameters (Database.sql gives
them the driver's style): for every batch they cost a quarter of the CPU of the same
statements built by SQLAlchemy. tests/test_hotpath.py runs each on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from batchcancel.audit.chain import Chains, micros, stamp
from batchcancel.audit.db import Database
from batchcancel.audit.records import DONE, PENDING, Answer, Begin
from batchcancel.outcomes import FINAL

__all__ = [
    "ADD_ORDER",
    "ANSWER_ATTEMPT",
    "ANSWER_LATE",
    "ANSWER_ORDER",
    "BEGIN_ATTEMPT",
    "BEGIN_ORDER",
    "FENCE",
    "write_batch",
]

ADD_ORDER: Final = (
    "INSERT INTO orders (run_id, seq, venue, order_id, account_id, symbol, state, outcome, "
    "reason, attempts) VALUES (:run_id, :seq, :venue, :order_id, :account_id, :symbol, :state, "
    ":outcome, :reason, 0)"
)
BEGIN_ATTEMPT: Final = (
    "INSERT INTO attempts (order_pk, attempt, run_id, worker, kind, sent_at, detail) "
    "VALUES (:pk, :attempt, :run_id, :worker, :kind, :sent_at, '')"
)
# A confirm (status) poll leaves the final order's state alone; cancels mark it in flight.
BEGIN_ORDER: Final = (
    "UPDATE orders SET state = CASE WHEN :kind = 'confirm' THEN state ELSE 'sending' END, "
    "attempts = :attempt, first_sent_at = COALESCE(first_sent_at, :sent_at) WHERE pk = :pk"
)
ANSWER_ATTEMPT: Final = (
    "UPDATE attempts SET answered_at = :answered_at, http_status = :http_status, "
    "verdict = :verdict, latency_ms = :latency_ms, detail = :detail "
    "WHERE order_pk = :pk AND attempt = :attempt"
)
ANSWER_ORDER: Final = (
    "UPDATE orders SET state = :state, outcome = :outcome, reason = :reason, "
    "last_http_status = :http_status, last_answer_at = :answered_at WHERE pk = :pk"
)
# An answer that came back to a worker after its lane was taken over: the attempt row learns
# it unless the new holder has closed the attempt already; the order is the new holder's.
ANSWER_LATE: Final = (
    "UPDATE attempts SET answered_at = :answered_at, http_status = :http_status, "
    "verdict = :verdict, latency_ms = :latency_ms, detail = :detail "
    "WHERE order_pk = :pk AND attempt = :attempt AND verdict IS NULL"
)
# The fence: matches only while this worker still holds the lane at the epoch it claimed, and
# locks the lane row, so a takeover cannot commit between this check and the commit it guards.
FENCE: Final = (
    "UPDATE lanes SET epoch = epoch WHERE run_id = :run_id AND venue = :venue "
    "AND owner = :owner AND epoch = :epoch"
)

# Inside a write: whether this worker still holds (run_id, venue)'s lane (Leases.fenced).
Fenced = Callable[[sa.Connection, str, str], bool]


def write_batch(
    db: Database,
    run_id: str,
    begins: Sequence[Begin],
    answers: Sequence[Answer],
    *,
    worker: str,
    clean: Callable[[str], str],
    fenced: Fenced,
    chains: Chains,
) -> set[str]:
    """Commit attempt rows about to be sent and answers received, in one transaction;
    the venues whose lane this worker has lost (their begins are not written: those
    requests must not leave; their answers reach only still-open attempt rows)."""
    db_stamp = db.stamp
    with chains.recorded(run_id, "hot") as (conn, facts):
        lanes_written = {b.venue for b in begins} | {a.venue for a in answers}
        lost = {v for v in sorted(lanes_written) if not fenced(conn, run_id, v)}
        late: Sequence[Answer] = ()
        if lost:
            begins = [b for b in begins if b.venue not in lost]
            late = [a for a in answers if a.venue in lost]
            answers = [a for a in answers if a.venue not in lost]
        for params in _attempt_answers(late, db_stamp, clean):  # rare: one at a time, to
            if conn.exec_driver_sql(db.sql(ANSWER_LATE), params).rowcount == 1:  # record those
                facts.append(_answer_fact("late", params))  # that applied
        if answers:
            attempt_params = _attempt_answers(answers, db_stamp, clean)
            order_params = [
                {
                    "pk": a.order_pk,
                    "state": DONE if a.outcome in FINAL else PENDING,
                    "outcome": a.outcome,
                    "reason": clean(a.reason),
                    "http_status": a.http_status,
                    "answered_at": db_stamp(a.answered_at),
                }
                for a in answers
            ]
            conn.exec_driver_sql(db.sql(ANSWER_ATTEMPT), attempt_params)
            conn.exec_driver_sql(db.sql(ANSWER_ORDER), order_params)
            for params, order in zip(attempt_params, order_params, strict=True):
                fact = _answer_fact("answer", params)
                fact.update(state=order["state"], outcome=order["outcome"], reason=order["reason"])
                facts.append(fact)
        if begins:
            begin_params = [
                {
                    "pk": b.order_pk,
                    "attempt": b.attempt,
                    "run_id": run_id,
                    "worker": worker,
                    "kind": b.kind,
                    "sent_at": db_stamp(b.sent_at),
                }
                for b in begins
            ]
            conn.exec_driver_sql(db.sql(BEGIN_ATTEMPT), begin_params)
            conn.exec_driver_sql(
                db.sql(BEGIN_ORDER),
                [
                    {
                        "pk": p["pk"],
                        "attempt": p["attempt"],
                        "sent_at": p["sent_at"],
                        "kind": p["kind"],
                    }
                    for p in begin_params
                ],
            )
            facts.extend(
                {"t": "begin", **p, "sent_at": stamp(b.sent_at)}
                for p, b in zip(begin_params, begins, strict=True)
            )
    return lost


def _attempt_answers(
    answers: Sequence[Answer],
    stamp: Callable[[datetime], datetime | str],
    clean: Callable[[str], str],
) -> list[dict[str, Any]]:
    """The parameters of ANSWER_ATTEMPT / ANSWER_LATE, one dict per answer."""
    return [
        {
            "pk": a.order_pk,
            "attempt": a.attempt,
            "answered_at": stamp(a.answered_at),
            "http_status": a.http_status,
            "verdict": a.verdict,
            "latency_ms": round(a.latency_ms, 3),
            "detail": clean(a.detail),
        }
        for a in answers
    ]


def _answer_fact(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The chain's fact of one answer, from the parameters written (no float: microseconds)."""
    answered_at = params["answered_at"]
    return {
        "t": kind,
        "pk": params["pk"],
        "attempt": params["attempt"],
        "answered_at": answered_at if isinstance(answered_at, str) else stamp(answered_at),
        "http_status": params["http_status"],
        "verdict": params["verdict"],
        "latency_us": micros(params["latency_ms"]),
        "detail": params["detail"],
    }
