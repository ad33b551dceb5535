"""Helpers for the reliability tests (faults, auth, signals, crash torture).

Orders for all five venues, audit reads over a connection of their own (SQLite or PostgreSQL,
whichever URL the test has), the check that every request a simulator received had its attempt
row first, and a leak search for credentials. Nothing here stands in for batchcancel code: the
tests drive the real CLI against the real simulators and read the real audit database.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from batchcancel.outcomes import FINAL, RESUMABLE
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import FaultPlan, OrderState, Simulator
from tests.conftest import CREDENTIALS, SECRET_VALUES, db_bytes

VENUE_NAMES: tuple[str, ...] = ("sfox", "etna", "crux", "tanx", "zebpay")
FINAL_VALUES = frozenset(o.value for o in FINAL)
RESUMABLE_VALUES = frozenset(o.value for o in RESUMABLE)
IN_FLIGHT_LOST_PREFIX = "no answer recorded"


def order_fields(venue: str, n: int) -> dict[str, str]:
    """The input columns of the n-th order of a venue; `order_id` is the simulator's book key."""
    if venue == "crux":
        return {"order_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"crux-order-{n}"))}
    if venue == "etna":
        return {"order_id": str(500000 + n), "account_id": "77"}
    if venue == "zebpay":
        return {"order_id": f"cli-{n}", "symbol": "BTCUSDT"}
    if venue == "tanx":
        return {"order_id": str(700000 + n)}
    return {"order_id": str(300000 + n)}


@dataclass
class Venues:
    """Simulators, their seeded books and the order list that goes with them."""

    simulators: dict[str, Simulator] = field(default_factory=dict)
    books: dict[str, dict[str, OrderState | None]] = field(default_factory=dict)
    rows: list[dict[str, str]] = field(default_factory=list)

    def ids(self, venue: str) -> list[str]:
        """The venue's order ids in input order."""
        return list(self.books[venue])

    def total_requests(self) -> int:
        """Requests every simulator received, together."""
        return sum(s.total_requests for s in self.simulators.values())


def build_venues(
    counts: Mapping[str, int],
    *,
    states: Iterable[OrderState | None] = (OrderState.OPEN,),
    credentials: Mapping[str, str] = CREDENTIALS,
    faults: Mapping[str, FaultPlan] | None = None,
    rate_limit: Mapping[str, int | None] | None = None,
    penalty: float = 0.5,
    **kwargs: object,
) -> Venues:
    """One simulator per venue in `counts`, seeded by cycling through `states` (None: unknown).

    Simulators are unthrottled unless `rate_limit` gives a venue a limit per 1 s.
    """
    cycle = list(states)
    result = Venues()
    for venue, count in counts.items():
        simulator = SIMULATORS[venue](
            credentials=credentials,
            rate_limit=(rate_limit or {}).get(venue),
            period=1.0,
            penalty=penalty,
            faults=(faults or {}).get(venue),
            **kwargs,  # type: ignore[arg-type]
        )
        book: dict[str, OrderState | None] = {}
        for n in range(count):
            fields = order_fields(venue, n)
            state = cycle[n % len(cycle)]
            if venue == "crux" and state is OrderState.FILLED:
                state = OrderState.OPEN  # a filled Crux order is `rejected`: kept out
            book[fields["order_id"]] = state
            if state is not None:
                simulator.seed({fields["order_id"]: state})
            result.rows.append({"venue": venue, **fields})
        result.simulators[venue] = simulator
        result.books[venue] = book
    return result


def repeat_outcomes(simulator: Simulator, state: OrderState | None) -> set[str]:
    """What a second cancel of an order seeded in `state` may answer (the first one applied;
    an asynchronous cancel may have settled since, or completed at once at some venues)."""
    after: tuple[OrderState | None, ...] = {
        OrderState.OPEN: (OrderState.CANCELED,),
        OrderState.OPEN_ASYNC: (OrderState.PENDING, OrderState.CANCELED),
    }.get(state, (state,))  # type: ignore[arg-type]
    return {simulator.expected_outcomes[s].value for s in after}


def is_sqlite(url: str) -> bool:
    """Whether the audit database URL is a SQLite file (else PostgreSQL)."""
    return url.startswith("sqlite")


def _engine(url: str, *, lock_wait: int = 30, **kwargs: object) -> sa.Engine:
    """An engine holding no connection between uses, whose statements wait at most
    `lock_wait` seconds for a lock (SQLite's timeout, PostgreSQL's lock_timeout): a test
    fails rather than hangs on one."""
    connect_args: dict[str, object] = (
        {"timeout": lock_wait}
        if is_sqlite(url)
        else {"options": f"-c lock_timeout={lock_wait * 1000}"}
    )
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args, **kwargs)


def db_rows(
    url: str, sql: str, params: Mapping[str, object] | None = None
) -> list[tuple[object, ...]]:
    """Rows of a query (`:name` parameters) on the audit database, over a connection of its
    own. Timestamps come back as text from SQLite, as datetimes from PostgreSQL: see `unix`."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), dict(params or {}))]
    finally:
        engine.dispose()


@contextmanager
def autocommit_connection(url: str) -> Iterator[sa.Connection]:
    """A connection of its own that sends each statement as it is, outside any transaction
    the driver would open (so a test can run DDL or BEGIN ... ROLLBACK by hand)."""
    engine = _engine(url, lock_wait=10, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def outcomes_by_order(db: str) -> dict[tuple[str, str], str | None]:
    """(venue, order_id) -> outcome for every order in the audit database."""
    return {
        (str(v), str(o)): (None if out is None else str(out))
        for v, o, out in db_rows(db, "select venue, order_id, outcome from orders")
    }


def attempts_by_order(db: str) -> dict[tuple[str, str], list[tuple[object, ...]]]:
    """(venue, order_id) -> its attempts (attempt, http_status, verdict, detail, sent_at,
    answered_at), in attempt order."""
    result: dict[tuple[str, str], list[tuple[object, ...]]] = defaultdict(list)
    for venue, order_id, *rest in db_rows(
        db,
        "select o.venue, o.order_id, a.attempt, a.http_status, a.verdict, a.detail, a.sent_at, "
        "a.answered_at from attempts a join orders o on o.pk = a.order_pk "
        "order by a.order_pk, a.attempt",
    ):
        result[str(venue), str(order_id)].append(tuple(rest))
    return result


def unix(stamp: object) -> float:
    """An audit timestamp (naive UTC: text from SQLite, a datetime from PostgreSQL) as Unix
    seconds."""
    moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(str(stamp))
    return moment.replace(tzinfo=UTC).timestamp()


def assert_arrivals_follow_attempt_rows(db: str, simulators: Mapping[str, Simulator]) -> None:
    """Every request a simulator received had its attempt row committed before it: the k-th
    request about an order arrived after that order's k-th attempt row was stamped sent."""
    sent_at: dict[tuple[str, str], list[float]] = defaultdict(list)
    for venue, order_id, stamp in db_rows(
        db,
        "select o.venue, o.order_id, a.sent_at from attempts a join orders o "
        "on o.pk = a.order_pk order by a.order_pk, a.attempt",
    ):
        sent_at[str(venue), str(order_id)].append(unix(stamp))
    for venue, simulator in simulators.items():
        arrived: dict[str, list[float]] = defaultdict(list)
        for arrival in simulator.arrivals:
            assert arrival.key is not None, f"{venue}: a request about no order: {arrival.path}"
            arrived[arrival.key].append(arrival.at)
        for key, times in arrived.items():
            rows = sent_at[venue, key]
            assert len(times) <= len(rows), (
                f"{venue} {key}: {len(times)} requests arrived, only {len(rows)} attempt rows"
            )
            for arrival_at, row_at in zip(sorted(times), rows, strict=False):
                assert arrival_at >= row_at - 0.001, f"{venue} {key}: arrived before its row"


def assert_no_secrets(db: str, texts: Iterable[str], extra: Iterable[str] = ()) -> None:
    """No credential value in the audit database (its files, or a dump) or in any output."""
    blobs = [db_bytes(db)]
    texts = list(texts)
    for secret in (*SECRET_VALUES, *extra):
        for blob in blobs:
            assert secret.encode() not in blob, "a credential is in the audit database"
        for text in texts:
            assert secret not in text, "a credential is in the output"


async def start_cli(*args: str, env: Mapping[str, str]) -> asyncio.subprocess.Process:
    """Start `python -m batchcancel ARGS` with its output piped; the caller waits for it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchcancel",
        *args,
        env=dict(env),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_for_requests(
    venues: Venues, count: int, process: asyncio.subprocess.Process, *, timeout: float = 60
) -> bool:
    """Poll until the simulators together received `count` requests (True) or the process
    exited first (False); fails after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    while loop.time() < give_up:
        if venues.total_requests() >= count:
            return True
        if process.returncode is not None:
            return False
        await asyncio.sleep(0.002)
    raise AssertionError(f"the simulators did not see {count} requests within {timeout} s")


def stderr_is_clean(stderr: str) -> None:
    """No traceback on stderr."""
    assert "Traceback" not in stderr, stderr
