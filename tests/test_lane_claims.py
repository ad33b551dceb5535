"""How a worker claims a run's lanes: every free lane in one claim when it is alone, and a
fair share when other workers are at the run without a lane (Leases.claim_lanes). Several
worker processes draining one run: tests/test_workers.py."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from batchcancel.audit.store import AuditStore, PlannedOrder, utcnow
from batchcancel.audit.tables import metadata
from batchcancel.config import load_settings
from batchcancel.drain_types import DrainOptions
from batchcancel.engine import drain
from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import OrderState
from tests.conftest import CREDENTIALS, ServeSimulators, postgres_database
from tests.pg import PostgresServer
from tests.test_five_venues import order_fields

VENUES = ("crux", "etna", "sfox", "tanx", "zebpay")
sessions = metadata.tables["sessions"]
lanes = metadata.tables["lanes"]


class ClaimRecordingStore(AuditStore):
    """The real store, noting what each claim took."""

    claims: list[list[str]]

    def claim_lanes(
        self,
        run_id: str,
        venues: Iterable[str],
        *,
        limit: int,
        lease: float,
        request_timeout: Mapping[str, float] | None = None,
    ) -> dict[str, float]:
        taken = super().claim_lanes(
            run_id, venues, limit=limit, lease=lease, request_timeout=request_timeout
        )
        if taken:
            self.claims.append(sorted(taken))
        return taken


def new_run(store: AuditStore, rows: list[tuple[str, dict[str, str]]]) -> str:
    run_id = store.create_run(
        command="run",
        run_key=None,
        source="t",
        options={},
        reason="",
        command_line="t",
        dry_run=False,
    )
    store.add_orders(
        run_id,
        [
            PlannedOrder(n + 1, venue, f["order_id"], f.get("account_id", ""), f.get("symbol", ""))
            for n, (venue, f) in enumerate(rows)
        ],
    )
    return run_id


async def test_a_lone_worker_claims_every_lane_at_once(
    serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """A drain of five venues in one process takes all five lanes in its first claim (on
    PostgreSQL it used to take one every CLAIM_EVERY, leaving room for other workers)."""
    rng = random.Random(3)
    simulators = {}
    rows = []
    for venue in VENUES:
        simulator = SIMULATORS[venue](credentials=CREDENTIALS, rate_limit=None)
        for n in range(4):
            fields = order_fields(venue, n, rng)
            simulator.seed({fields["order_id"]: OrderState.OPEN})
            rows.append((venue, fields))
        simulators[venue] = simulator
    store = ClaimRecordingStore(audit_url)
    store.claims = []
    try:
        run_id = new_run(store, rows)
        async with serve_simulators(simulators) as server:
            settings = load_settings(
                CREDENTIALS,
                db_url=audit_url,
                overrides={v: {"base_url": server.url(v)} for v in VENUES},
            )
            result = await drain(store, run_id, settings, DrainOptions(handle_signals=False))
        assert not result.stopped
        assert store.claims[0] == list(VENUES)
        assert {v: s.total_requests for v, s in simulators.items()} == dict.fromkeys(VENUES, 4)
    finally:
        store.close()


@pytest.fixture
def pg_store(postgres: PostgresServer | None) -> Iterator[AuditStore]:
    store = AuditStore(postgres_database(postgres))
    yield store
    store.close()


@pytest.fixture
def live_pids() -> Iterator[list[int]]:
    """Three processes of this host that keep running while the test does (bounded: 120 s)."""
    children = [
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]) for _ in range(3)
    ]
    try:
        yield [child.pid for child in children]
    finally:
        for child in children:
            child.kill()
            child.wait()


def planned_run(store: AuditStore) -> str:
    rng = random.Random(4)
    return new_run(store, [(v, order_fields(v, 0, rng)) for v in VENUES])


def add_session(
    store: AuditStore,
    run_id: str,
    pid: int,
    *,
    host: str | None = None,
    started_at: datetime | None = None,
    status: str = "running",
) -> None:
    """A session row of another worker at the run (as start_session writes it)."""
    with store.engine.begin() as conn:
        conn.execute(
            sessions.insert().values(
                run_id=run_id,
                command="resume",
                host=host or socket.gethostname(),
                pid=pid,
                started_at=started_at or utcnow(),
                status=status,
                finished_at=None if status == "running" else utcnow(),
            )
        )


def claim(store: AuditStore, run_id: str, venues: Iterable[str] = VENUES) -> list[str]:
    """What one claim round takes of `venues` (as the session asks: those it is not running)."""
    wanted = list(venues)
    return sorted(store.claim_lanes(run_id, wanted, limit=len(wanted), lease=60))


class TestFairShare:
    def test_alone_takes_every_free_lane(self, pg_store: AuditStore) -> None:
        run_id = planned_run(pg_store)
        assert claim(pg_store, run_id) == list(VENUES)

    def test_three_idle_workers_present_leave_it_a_fifth_share(
        self, pg_store: AuditStore, live_pids: list[int]
    ) -> None:
        """Three other live workers at the run with no lane: it takes ceil(5 / 4) = 2, and
        in later rounds its share of what is still free (those workers did not claim)."""
        run_id = planned_run(pg_store)
        time.sleep(0.05)  # the sessions begin after their processes
        for pid in live_pids:
            add_session(pg_store, run_id, pid)
        assert claim(pg_store, run_id) == ["crux", "etna"]
        assert claim(pg_store, run_id, ["sfox", "tanx", "zebpay"]) == ["sfox"]  # ceil(3 / 4)
        assert claim(pg_store, run_id, ["tanx", "zebpay"]) == ["tanx"]
        assert claim(pg_store, run_id, ["zebpay"]) == ["zebpay"]

    def test_workers_that_hold_lanes_or_are_gone_leave_nothing(
        self, pg_store: AuditStore, live_pids: list[int]
    ) -> None:
        """Not counted: a worker holding a lane, a finished session, a pid that is gone or now
        names a newer process, another host's session older than a lease."""
        run_id = planned_run(pg_store)
        holder = live_pids[2]
        with pg_store.engine.begin() as conn:  # a live worker holds crux
            conn.execute(
                lanes.insert().values(
                    run_id=run_id,
                    venue="crux",
                    owner=f"{socket.gethostname()}:{holder}:elsewhere.ns.0:tok",
                    lease_until=datetime(2999, 1, 1),
                    epoch=1,
                )
            )
        add_session(pg_store, run_id, holder)
        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        add_session(pg_store, run_id, gone.pid)
        add_session(pg_store, run_id, live_pids[0], status="succeeded")
        add_session(  # the pid runs, but started after this session: reused
            pg_store, run_id, live_pids[1], started_at=utcnow() - timedelta(minutes=5)
        )
        add_session(
            pg_store, run_id, 4242, host="elsewhere", started_at=utcnow() - timedelta(minutes=5)
        )
        assert claim(pg_store, run_id) == ["etna", "sfox", "tanx", "zebpay"]

    def test_another_hosts_recent_session_counts(self, pg_store: AuditStore) -> None:
        """A session on another host that began within a lease is taken for a live worker."""
        run_id = planned_run(pg_store)
        add_session(pg_store, run_id, 4242, host="elsewhere")
        assert claim(pg_store, run_id) == ["crux", "etna", "sfox"]  # ceil(5 / 2)


def test_lanes_rows(pg_store: AuditStore) -> None:
    """Claims by share still raise each lane's epoch once and name this worker."""
    run_id = planned_run(pg_store)
    add_session(pg_store, run_id, 4242, host="elsewhere")
    claim(pg_store, run_id)
    with pg_store.engine.connect() as conn:
        got = conn.execute(
            sa.select(lanes.c.venue, lanes.c.epoch, lanes.c.owner.is_not(None))
            .where(lanes.c.run_id == run_id)
            .order_by(lanes.c.venue)
        ).all()
    assert [tuple(r) for r in got] == [
        ("crux", 1, True),
        ("etna", 1, True),
        ("sfox", 1, True),
        ("tanx", 0, False),
        ("zebpay", 0, False),
    ]
