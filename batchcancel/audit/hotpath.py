"""The hot write path: every raw SQL statement the store runs per order (loading, attempts,
answers, the lane fence), and `write_batch`, which commits a batch of them at once.

These are plain driver statements (executemany) with :name parameters (Database.sql gives
them the driver's style): for every batch they cost a quarter of the CPU of the same
statements built by SQLAlchemy. tests/test_hotpath.py runs each on SQLite and PostgreSQL.

On PostgreSQL a batch is one statement per kind over arrays (unnest), sent in one pipeline
with the fence of every lane it writes: one round trip instead of one per statement, and
the server plans four statements instead of one per row. The fence still runs first in the
same transaction; if any lane no longer matches, the transaction is rolled back unseen and
the batch is written the careful way below, which finds the lost lane and writes only what
it may.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from contextlib import closing
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from batchcancel.audit.chain import Chains, micros, stamp
from batchcancel.audit.db import Database, audit_error
from batchcancel.audit.records import DONE, PENDING, Answer, Begin
from batchcancel.outcomes import FINAL

if TYPE_CHECKING:  # leases.py imports FENCE from here
    from batchcancel.audit.leases import LaneFence

__all__ = [
    "ADD_ORDER",
    "ANSWER_ATTEMPT",
    "ANSWER_LATE",
    "ANSWER_ORDER",
    "BEGIN_ATTEMPT",
    "BEGIN_ORDER",
    "FENCE",
    "FENCE_LANES",
    "PG_ANSWER_ATTEMPTS",
    "PG_ANSWER_ORDERS",
    "PG_BEGIN_ATTEMPTS",
    "PG_BEGIN_ORDERS",
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

# PostgreSQL, one statement per batch: FENCE for every lane at once (the venues it matched
# come back), then the four statements above over the batch's rows as one JSON text (one
# json.dumps in C; the server reads it with json_to_recordset into typed columns; timestamps
# go as chain.stamp's ISO text, floats as their repr, so every value lands exactly). A batch
# holds at most one answer and one begin per order (_distinct), so each row is matched by one
# record, as one statement per row would match it; ANSWER_* run before BEGIN_*, as below.
# FENCE_LANES locks the rows it matches as FENCE's UPDATE does (FOR NO KEY UPDATE), one after
# another in venue order (the lock is taken after the sort): the order in which renew_lanes
# and the one-lane fences take them, so that two writes of one worker never deadlock.
FENCE_LANES: Final = (
    "SELECT venue FROM lanes WHERE run_id = :run_id AND owner = :owner "
    "AND (venue, epoch) IN (SELECT * FROM unnest(CAST(:venues AS text[]), "
    "CAST(:epochs AS bigint[]))) ORDER BY venue FOR NO KEY UPDATE"
)
PG_ANSWER_ATTEMPTS: Final = (
    "UPDATE attempts AS a SET answered_at = v.answered_at, http_status = v.http_status, "
    "verdict = v.verdict, latency_ms = v.latency_ms, detail = v.detail "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(pk bigint, attempt integer, "
    "answered_at timestamp, http_status integer, verdict text, latency_ms float8, detail text) "
    "WHERE a.order_pk = v.pk AND a.attempt = v.attempt"
)
PG_ANSWER_ORDERS: Final = (
    "UPDATE orders AS o SET state = v.state, outcome = v.outcome, reason = v.reason, "
    "last_http_status = v.http_status, last_answer_at = v.answered_at "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(pk bigint, state text, outcome text, "
    "reason text, http_status integer, answered_at timestamp) WHERE o.pk = v.pk"
)
PG_BEGIN_ATTEMPTS: Final = (
    "INSERT INTO attempts (order_pk, attempt, run_id, worker, kind, sent_at, detail) "
    "SELECT v.pk, v.attempt, v.run_id, v.worker, v.kind, v.sent_at, '' "
    "FROM json_to_recordset(CAST(:rows AS json)) AS v(pk bigint, attempt integer, "
    "run_id text, worker text, kind text, sent_at timestamp)"
)
PG_BEGIN_ORDERS: Final = (
    "UPDATE orders AS o SET state = CASE WHEN v.kind = 'confirm' THEN o.state "
    "ELSE 'sending' END, attempts = v.attempt, "
    "first_sent_at = COALESCE(o.first_sent_at, v.sent_at) "
    "FROM json_to_recordset(CAST(:rows AS json)) "
    "AS v(pk bigint, attempt integer, kind text, sent_at timestamp) WHERE o.pk = v.pk"
)


class _LaneMoved(Exception):
    """A pipelined batch found a lane no longer this worker's: roll it back, write it again
    the careful way."""


def write_batch(
    db: Database,
    run_id: str,
    begins: Sequence[Begin],
    answers: Sequence[Answer],
    *,
    worker: str,
    clean: Callable[[str], str],
    fenced: LaneFence,
    chains: Chains,
) -> set[str]:
    """Commit attempt rows about to be sent and answers received, in one transaction;
    the venues whose lane this worker has lost (their begins are not written: those
    requests must not leave; their answers reach only still-open attempt rows)."""
    if db.pipelines and _distinct(begins, answers):
        epochs, lost = fenced.claims(run_id, {b.venue for b in begins} | {a.venue for a in answers})
        if not lost:
            try:
                _write_pipelined(
                    db,
                    run_id,
                    begins,
                    answers,
                    worker=worker,
                    clean=clean,
                    chains=chains,
                    owner=fenced.token,
                    epochs=epochs,
                )
                return set()
            except _LaneMoved:
                pass  # rolled back: the careful way finds the lost lane
    return _write_fenced_each(
        db, run_id, begins, answers, worker=worker, clean=clean, fenced=fenced, chains=chains
    )


def _distinct(begins: Sequence[Begin], answers: Sequence[Answer]) -> bool:
    """Whether no order has two begins, nor two answers, in the batch (what the array
    statements assume; a batch that breaks it is written one row at a time)."""
    begun = {b.order_pk for b in begins}
    answered = {a.order_pk for a in answers}
    return len(begun) == len(begins) and len(answered) == len(answers)


def _write_pipelined(
    db: Database,
    run_id: str,
    begins: Sequence[Begin],
    answers: Sequence[Answer],
    *,
    worker: str,
    clean: Callable[[str], str],
    chains: Chains,
    owner: str,
    epochs: dict[str, int],
) -> None:
    """PostgreSQL: the fence and every row of the batch in one pipeline, then the chain's
    link and the commit; _LaneMoved (after a rollback) if a fenced lane did not match."""
    import psycopg  # db.pipelines: the driver is psycopg

    # Timestamps as the facts hold them (ISO text): the JSON carries them exactly so.
    attempt_params = _attempt_answers(answers, _iso, clean)
    order_params = _order_answers(answers, _iso, clean)
    begin_params = _begins(begins, run_id, worker, _iso)
    with chains.recorded(run_id, "hot") as (conn, facts):
        raw = conn.connection.dbapi_connection
        assert isinstance(raw, psycopg.Connection)
        try:
            with closing(raw.cursor()) as fence, closing(raw.cursor()) as rows:
                with raw.pipeline():
                    if epochs:
                        venues = sorted(epochs)
                        fence.execute(
                            db.sql(FENCE_LANES),
                            {
                                "run_id": run_id,
                                "owner": owner,
                                "venues": venues,
                                "epochs": [epochs[v] for v in venues],
                            },
                        )
                    if answers:
                        rows.execute(db.sql(PG_ANSWER_ATTEMPTS), _json(attempt_params))
                        rows.execute(db.sql(PG_ANSWER_ORDERS), _json(order_params))
                    if begins:
                        rows.execute(db.sql(PG_BEGIN_ATTEMPTS), _json(begin_params))
                        rows.execute(db.sql(PG_BEGIN_ORDERS), _json(begin_params))
                held = {venue for (venue,) in fence.fetchall()} if epochs else set()
        except psycopg.Error as exc:
            raise audit_error(exc) from None  # rolled back as the write block ends
        if held != set(epochs):
            raise _LaneMoved  # nothing of it is committed
        facts.extend(_answer_facts(attempt_params, order_params))
        facts.extend(_begin_facts(begin_params, begins))


def _write_fenced_each(
    db: Database,
    run_id: str,
    begins: Sequence[Begin],
    answers: Sequence[Answer],
    *,
    worker: str,
    clean: Callable[[str], str],
    fenced: LaneFence,
    chains: Chains,
) -> set[str]:
    """write_batch with a fence statement per lane and a statement per row (executemany):
    SQLite, and any batch the pipelined way does not take."""
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
            order_params = _order_answers(answers, db_stamp, clean)
            conn.exec_driver_sql(db.sql(ANSWER_ATTEMPT), attempt_params)
            conn.exec_driver_sql(db.sql(ANSWER_ORDER), order_params)
            facts.extend(_answer_facts(attempt_params, order_params))
        if begins:
            begin_params = _begins(begins, run_id, worker, db_stamp)
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
            facts.extend(_begin_facts(begin_params, begins))
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
            "latency_ms": float(round(a.latency_ms, 3)),
            "detail": clean(a.detail),
        }
        for a in answers
    ]


def _order_answers(
    answers: Sequence[Answer],
    stamp: Callable[[datetime], datetime | str],
    clean: Callable[[str], str],
) -> list[dict[str, Any]]:
    """The parameters of ANSWER_ORDER, one dict per answer."""
    return [
        {
            "pk": a.order_pk,
            "state": DONE if a.outcome in FINAL else PENDING,
            "outcome": a.outcome,
            "reason": clean(a.reason),
            "http_status": a.http_status,
            "answered_at": stamp(a.answered_at),
        }
        for a in answers
    ]


def _begins(
    begins: Sequence[Begin],
    run_id: str,
    worker: str,
    stamp: Callable[[datetime], datetime | str],
) -> list[dict[str, Any]]:
    """The parameters of BEGIN_ATTEMPT, one dict per begin."""
    return [
        {
            "pk": b.order_pk,
            "attempt": b.attempt,
            "run_id": run_id,
            "worker": worker,
            "kind": b.kind,
            "sent_at": stamp(b.sent_at),
        }
        for b in begins
    ]


def _iso(value: datetime) -> str:
    """A timestamp as the facts hold it (chain.stamp), for a value that is never None."""
    return str(stamp(value))


def _json(params: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The rows of a PG_* statement as its one parameter: a JSON array of objects."""
    return {"rows": json.dumps(params, ensure_ascii=False, allow_nan=False)}


def _answer_facts(
    attempt_params: Sequence[dict[str, Any]], order_params: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The chain's facts of answers written to their attempts and orders."""
    facts = []
    for params, order in zip(attempt_params, order_params, strict=True):
        fact = _answer_fact("answer", params)
        fact.update(state=order["state"], outcome=order["outcome"], reason=order["reason"])
        facts.append(fact)
    return facts


def _begin_facts(
    begin_params: Sequence[dict[str, Any]], begins: Sequence[Begin]
) -> list[dict[str, Any]]:
    """The chain's facts of attempts begun."""
    return [
        {"t": "begin", **p, "sent_at": stamp(b.sent_at)}
        for p, b in zip(begin_params, begins, strict=True)
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
