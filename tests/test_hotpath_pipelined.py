"""write_batch on PostgreSQL in one pipeline (hotpath.py): the array statements write exactly
what one statement per row writes, the fence still locks each lane it checks until the
commit, a lane taken over rolls the pipeline back unseen, and a refused row is an AuditError
that keeps nothing. (The statements one row at a time: test_hotpath.py; a takeover between
batches: test_audit_leases.py.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from batchcancel.audit import hotpath
from batchcancel.audit.store import Answer, AuditStore, Begin, PlannedOrder
from batchcancel.errors import AuditError
from tests.conftest import assert_audit_intact, postgres_database
from tests.pg import PostgresServer
from tests.test_hotpath import AT, attempts, lanes, orders

VENUES = ("sfox", "etna")
# Texts that JSON and arrays must carry exactly: quotes, backslashes, braces, non-ASCII,
# what clean() escapes (a NUL, a control character), and an empty one.
DETAILS = ['{"a": "b\\\\c"}', "qu'o\"te {x,y} NULL", "é€😀", "\x00 and \x07", ""]


@pytest.fixture
def pg_url(postgres: PostgresServer | None) -> str:
    return postgres_database(postgres)


@pytest.fixture
def store(pg_url: str) -> Iterator[AuditStore]:
    audit = AuditStore(pg_url)
    yield audit
    audit.close()


def new_run(store: AuditStore, per_venue: int = 6) -> tuple[str, dict[str, list[int]]]:
    """A run with `per_venue` orders at each of VENUES, both lanes claimed; its id and the
    keys of its orders per venue."""
    run_id = store.create_run(
        command="run",
        run_key=None,
        source="t",
        options={},
        reason="",
        command_line="t",
        dry_run=False,
    )
    planned = [
        PlannedOrder(n + 1, venue, f"{venue}-{n}", "acct", "")
        for n, venue in enumerate(v for v in VENUES for _ in range(per_venue))
    ]
    store.add_orders(run_id, planned)
    assert store.claim_lanes(run_id, VENUES, limit=2, lease=60) == dict.fromkeys(VENUES, 0.0)
    pks = {
        venue: [o.pk for o in store.pending_page(run_id, venue, after_pk=0, limit=99)]
        for venue in VENUES
    }
    return run_id, pks


def batches(pks: Mapping[str, list[int]]) -> list[tuple[list[Begin], list[Answer]]]:
    """Begins and answers as a drain writes them: both lanes in each batch, answers of every
    kind (final, resumable with no status, a confirm poll), and one batch holding two answers
    for one order (which the pipeline leaves to the one-row statements)."""
    at = [AT + timedelta(microseconds=n * 1_000_001) for n in range(8)]

    def answer(pk: int, attempt: int, venue: str, n: int, outcome: str | None) -> Answer:
        status = None if outcome is None else 200
        verdict = "transient" if outcome is None else outcome
        return Answer(
            pk,
            attempt,
            at[n],
            status,
            verdict,
            0.1 + 0.2 * n,
            DETAILS[n % 5],
            outcome,
            DETAILS[(n + 1) % 5],
            venue,
        )

    s, e = pks["sfox"], pks["etna"]
    return [
        ([Begin(pk, 1, at[0], venue=v) for v, keys in pks.items() for pk in keys[:4]], []),
        (
            [Begin(s[4], 1, at[1], venue="sfox"), Begin(e[4], 1, at[1], venue="etna")],
            [
                answer(s[0], 1, "sfox", 2, "canceled"),
                answer(e[0], 1, "etna", 3, None),
                answer(s[1], 1, "sfox", 4, "already_closed"),
                answer(e[1], 1, "etna", 5, "failed"),
            ],
        ),
        (  # the resumable one again, and a confirm poll of a final order
            [
                Begin(e[0], 2, at[6], venue="etna"),
                Begin(s[0], 2, at[6], kind="confirm", venue="sfox"),
            ],
            [answer(s[2], 1, "sfox", 6, "cancel_pending"), answer(e[2], 1, "etna", 7, None)],
        ),
        (  # two answers for one order in one batch
            [],
            [
                answer(e[0], 2, "etna", 1, "canceled"),
                answer(s[0], 2, "sfox", 2, "canceled"),
                answer(s[0], 2, "sfox", 3, "canceled"),
                answer(e[4], 1, "etna", 4, "canceled"),
            ],
        ),
    ]


def written(url: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    """Every attempt and order row of the run, and the facts of its hot chain, in order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            got = {
                "attempts": [
                    dict(r._mapping)
                    for r in conn.execute(
                        sa.select(attempts)
                        .where(attempts.c.run_id == run_id)
                        .order_by(attempts.c.order_pk, attempts.c.attempt)
                    )
                ],
                "orders": [
                    dict(r._mapping)
                    for r in conn.execute(
                        sa.select(orders).where(orders.c.run_id == run_id).order_by(orders.c.pk)
                    )
                ],
                "facts": [
                    {"facts": r.facts.replace(run_id, "RUN")}
                    for r in conn.exec_driver_sql(
                        "SELECT facts FROM chain_links WHERE run_id = %(run)s "
                        "AND chain_id LIKE '%%/hot' ORDER BY seq",
                        {"run": run_id},
                    )
                ],
            }
    finally:
        engine.dispose()
    for row in got["attempts"] + got["orders"]:
        row.pop("run_id")
    return got


def statements(store: AuditStore) -> list[str]:
    """The statements the store sends through SQLAlchemy from now on (the pipeline's own
    statements bypass it: only the chain's link and the one-row way show up here)."""
    seen: list[str] = []
    sa.event.listen(
        store.engine, "before_cursor_execute", lambda *args: seen.append(args[2].split()[0])
    )
    return seen


def test_pipelined_batches_write_what_one_row_at_a_time_writes(pg_url: str) -> None:
    """The same batches through the pipeline and through one statement per row leave the
    same rows and the same chain facts, and `verify` finds both runs intact."""
    results = []
    for pipelined in (True, False):
        store = AuditStore(pg_url)
        try:
            assert store._db.pipelines  # psycopg 3 on libpq 14+
            store._db.pipelines = pipelined
            run_id, pks = new_run(store)
            seen = statements(store)
            for begins, answers in batches(pks):
                assert store.write_batch(run_id, begins, answers) == set()
            if pipelined:  # three batches in one pipeline each: only their links go by SQLAlchemy
                assert seen[:3] == ["INSERT"] * 3 and len(seen) > 3  # the fourth row by row
            offset = min(min(v) for v in pks.values())
            results.append((run_id, offset))
        finally:
            store.close()
    (fast_run, fast_first), (slow_run, slow_first) = results
    fast, slow = written(pg_url, fast_run), written(pg_url, slow_run)
    shift = slow_first - fast_first  # both runs' orders are numbered alike from their first
    for row in fast["attempts"]:
        row["order_pk"] += shift
    for row in fast["orders"]:
        row["pk"] += shift
    assert fast["attempts"] == slow["attempts"]
    assert fast["orders"] == slow["orders"]
    assert len(fast["facts"]) == len(slow["facts"]) == 4
    for fast_link, slow_link in zip(fast["facts"], slow["facts"], strict=True):
        fast_facts = json.loads(fast_link["facts"])
        for fact in fast_facts:
            fact["pk"] += shift
        assert fast_facts == json.loads(slow_link["facts"])
    assert_audit_intact(pg_url, fast_run)
    assert_audit_intact(pg_url, slow_run)
    sent = {r["sent_at"] for r in fast["attempts"]} | {r["answered_at"] for r in fast["attempts"]}
    assert AT + timedelta(microseconds=1_000_001) in sent  # microseconds kept exactly


def test_fence_lanes_matches_only_held_lanes_and_changes_nothing(store: AuditStore) -> None:
    """FENCE_LANES returns the venues still held by the owner at their epochs."""
    run_id, _ = new_run(store)
    db = store._db
    with db.read() as conn:
        epochs = dict(
            conn.execute(
                sa.select(lanes.c.venue, lanes.c.epoch).where(lanes.c.run_id == run_id)
            ).all()
        )
    owner = store.leases.fenced.token

    def fence(owner: str, venues: list[str], given: list[int]) -> set[str]:
        with db.write() as conn:
            result = conn.exec_driver_sql(
                db.sql(hotpath.FENCE_LANES),
                {"run_id": run_id, "owner": owner, "venues": venues, "epochs": given},
            )
            return {venue for (venue,) in result}

    assert fence(owner, ["etna", "sfox"], [epochs["etna"], epochs["sfox"]]) == {"etna", "sfox"}
    assert fence(owner, ["etna", "sfox"], [epochs["etna"] - 1, epochs["sfox"]]) == {"sfox"}
    assert fence(owner, ["zebpay"], [epochs["sfox"]]) == set()
    assert fence("someone-else", ["etna", "sfox"], [epochs["etna"], epochs["sfox"]]) == set()
    with db.read() as conn:
        after = dict(
            conn.execute(
                sa.select(lanes.c.venue, lanes.c.epoch).where(lanes.c.run_id == run_id)
            ).all()
        )
    assert after == epochs


def test_pipelined_fence_holds_the_lane_until_the_batch_commits(
    store: AuditStore, pg_url: str
) -> None:
    """Between the pipeline and the commit (while the chain's link is written) a takeover
    of the lane cannot commit: the fence in the pipeline locked the lane row."""
    run_id, pks = new_run(store)
    rival = sa.create_engine(pg_url)
    tried: list[str] = []

    def take_over(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO chain_links") and not tried:
            tried.append("takeover")
            with (
                pytest.raises(sa.exc.OperationalError, match="lock timeout"),
                rival.begin() as other,
            ):
                other.exec_driver_sql("SET LOCAL lock_timeout = '50ms'")
                other.execute(
                    lanes.update()
                    .where(lanes.c.run_id == run_id, lanes.c.venue == "sfox")
                    .values(owner="new", epoch=lanes.c.epoch + 1)
                )

    sa.event.listen(store.engine, "before_cursor_execute", take_over)
    try:
        assert store.write_batch(run_id, [Begin(pks["sfox"][0], 1, AT, venue="sfox")], []) == set()
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", take_over)
        rival.dispose()
    assert tried == ["takeover"]
    assert store.holds_lane(run_id, "sfox")


def test_lane_taken_over_before_the_pipeline_rolls_it_back(store: AuditStore, pg_url: str) -> None:
    """A lane taken over while this worker still believes it holds it: the pipelined write
    keeps nothing (not even the other lane's rows), and the careful way then writes the other
    lane's begin alone and reports the lane lost."""
    run_id, pks = new_run(store)
    rival = sa.create_engine(pg_url)
    try:
        with rival.begin() as conn:
            conn.execute(
                lanes.update()
                .where(lanes.c.run_id == run_id, lanes.c.venue == "sfox")
                .values(owner="new", epoch=lanes.c.epoch + 1)
            )
    finally:
        rival.dispose()
    seen = statements(store)
    e1, s1 = pks["etna"][0], pks["sfox"][0]
    lost = store.write_batch(
        run_id, [Begin(e1, 1, AT, venue="etna"), Begin(s1, 1, AT, venue="sfox")], []
    )
    assert lost == {"sfox"}
    assert seen[0] == "UPDATE"  # the careful way's first fence: the pipeline left no link
    got = written(pg_url, run_id)
    assert [(r["order_pk"], r["attempt"]) for r in got["attempts"]] == [(e1, 1)]
    assert len(got["facts"]) == 1
    assert not store.holds_lane(run_id, "sfox")


def test_a_refused_row_in_the_pipeline_is_an_audit_error(store: AuditStore, pg_url: str) -> None:
    """A begin for no order (the foreign key refuses it) is an AuditError; nothing of the
    batch is kept, the chain does not move, and the next batch commits on a sound connection."""
    run_id, pks = new_run(store)
    good = Begin(pks["sfox"][0], 1, AT, venue="sfox")
    with pytest.raises(AuditError, match="audit database write failed"):
        store.write_batch(run_id, [good, Begin(999_999, 1, AT, venue="sfox")], [])
    assert written(pg_url, run_id)["attempts"] == []
    assert store.write_batch(run_id, [good], []) == set()
    got = written(pg_url, run_id)
    assert [(r["order_pk"], r["attempt"]) for r in got["attempts"]] == [(good.order_pk, 1)]
    assert_audit_intact(pg_url, run_id)


def test_sent_at_round_trips_through_json(store: AuditStore, pg_url: str) -> None:
    """A timestamp at the edge of a second and of a day is stored as given."""
    run_id, pks = new_run(store)
    edge = datetime(2026, 12, 31, 23, 59, 59, 999999)
    store.write_batch(run_id, [Begin(pks["sfox"][0], 1, edge, venue="sfox")], [])
    assert written(pg_url, run_id)["attempts"][0]["sent_at"] == edge


def test_fence_lanes_locks_lanes_in_venue_order(store: AuditStore, pg_url: str) -> None:
    """FENCE_LANES takes the lane rows in venue order, as renew_lanes does, whatever order
    they lie in: a renewal that holds crux and then takes etna never waits on the fence
    (which waits for crux before it touches etna), so the two never deadlock."""
    run_id, _ = new_run(store)
    owner = store.leases.fenced.token
    db = store._db
    with db.write() as conn:  # etna's row before crux's on disk
        conn.execute(lanes.delete().where(lanes.c.run_id == run_id))
        for venue in ("etna", "crux"):
            conn.execute(lanes.insert().values(run_id=run_id, venue=venue, owner=owner, epoch=1))
    renew = sa.create_engine(pg_url)
    fenced: list[set[str]] = []

    def fence() -> None:
        with db.write() as conn:
            # A plan that visits the rows as they lie on disk, as the server may choose for
            # a large lanes table (an index scan on the key would visit them sorted anyway).
            for scan in ("indexscan", "indexonlyscan", "bitmapscan"):
                conn.exec_driver_sql(f"SET LOCAL enable_{scan} = off")
            result = conn.exec_driver_sql(
                db.sql(hotpath.FENCE_LANES),
                {"run_id": run_id, "owner": owner, "venues": ["crux", "etna"], "epochs": [1, 1]},
            )
            fenced.append({venue for (venue,) in result})

    try:
        with renew.begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '2s'")
            touch = lanes.update().where(lanes.c.run_id == run_id).values(epoch=lanes.c.epoch)
            conn.execute(touch.where(lanes.c.venue == "crux"))
            waiting = threading.Thread(target=fence)
            waiting.start()
            time.sleep(0.3)  # the fence is waiting on crux by now
            conn.execute(touch.where(lanes.c.venue == "etna"))  # not held by the fence
        waiting.join(30)
    finally:
        renew.dispose()
    assert fenced == [{"crux", "etna"}]
