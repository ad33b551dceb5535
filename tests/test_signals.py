"""Stopping a run early through the real CLI: SIGINT, SIGTERM, --deadline, a failing audit.

A stop must end new sends, let the requests in flight finish and record their answers, leave
every unsent order `skipped` and exit 3; a resume then completes the run, sending each order
exactly once overall. A stop during a venue's 429 pause or while the orders are still loading
is just as prompt and clean. An audit database that stops accepting writes mid-run must stop
the run before any request leaves without its attempt row, with a one-line message, and a
resume once the database is back must complete the run with nothing lost; one that is only
locked for a moment holds the sends back until the lock is gone.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from batchcancel.simulators.base import Fault, FaultPlan
from tests.conftest import ServeSimulators, cli_env, run_cli, write_orders_csv, write_venues_toml
from tests.torture_support import (
    IN_FLIGHT_LOST_PREFIX,
    Venues,
    assert_arrivals_follow_attempt_rows,
    assert_no_secrets,
    autocommit_connection,
    build_venues,
    db_rows,
    is_sqlite,
    outcomes_by_order,
    start_cli,
    stderr_is_clean,
    unix,
    wait_for_requests,
)

PER_VENUE = 150
MAX_IN_FLIGHT = 6
SLOW_SECONDS = 0.4  # every answer takes this long: a stop always finds requests in flight
KEYS = {"rate_limit": 0, "max_in_flight": MAX_IN_FLIGHT, "timeout": 5.0, "backoff": 0.05}
# Statements that take the audit database's write lock from another connection, until a
# rollback: SQLite's exclusive lock; on PostgreSQL, a lock on attempts no writer can share.
WRITE_LOCK = {
    "sqlite": ["begin exclusive"],
    "postgresql": ["begin", "lock table attempts in access exclusive mode"],
}


def slow_venues() -> tuple[Venues, dict[str, FaultPlan]]:
    """sFOX and tanX, every answer slow until the test clears the plans' shares."""
    plans = {
        v: FaultPlan(shares={Fault.SLOW: 1.0}, slow_seconds=SLOW_SECONDS) for v in ("sfox", "tanx")
    }
    return build_venues({"sfox": PER_VENUE, "tanx": PER_VENUE}, faults=plans), plans


def assert_stopped_cleanly(db: str, venues: Venues) -> None:
    """After a stop: every attempt has its answer, every request has its attempt row, every
    order is either done (canceled) or `skipped`, and no order was sent twice."""
    assert db_rows(db, "select count(*) from attempts where verdict is null") == [(0,)]
    assert db_rows(
        db,
        "select count(*) from attempts where detail like :lost",
        {"lost": IN_FLIGHT_LOST_PREFIX + "%"},
    ) == [(0,)]
    assert db_rows(db, "select count(*) from attempts") == [(venues.total_requests(),)]
    states = dict(db_rows(db, "select coalesce(outcome, 'NULL'), count(*) from orders group by 1"))
    assert set(states) == {"canceled", "skipped"}, states
    assert states["canceled"] == venues.total_requests()
    assert db_rows(db, "select count(*) from orders where state = 'sending'") == [(0,)]
    for simulator in venues.simulators.values():
        assert max(simulator.requests.values(), default=0) <= 1
    assert_arrivals_follow_attempt_rows(db, venues.simulators)


async def resume_and_check(db: str, venues: Venues, plans: dict[str, FaultPlan], run: str) -> None:
    """Resume without faults: exit 0, every order canceled, each sent exactly once overall."""
    for plan in plans.values():
        plan.shares.clear()
    resumed = await run_cli("resume", run, "--json", env=cli_env(db))
    stderr_is_clean(resumed.stderr)
    assert resumed.code == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["status"] == "succeeded"
    assert summary["outcomes"]["canceled"] == 2 * PER_VENUE
    for name, simulator in venues.simulators.items():
        assert all(simulator.requests[i] == 1 for i in venues.ids(name)), name
        assert simulator.total_requests == PER_VENUE
    assert_arrivals_follow_attempt_rows(db, venues.simulators)


class TestSignals:
    @pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
    async def test_signal_stops_sends_records_in_flight_and_resumes(
        self,
        tmp_path: Path,
        serve_simulators: ServeSimulators,
        signum: signal.Signals,
        audit_url: str,
    ) -> None:
        """A signal mid-run: no request leaves after it, the requests in flight are answered
        and recorded (answers arriving after the signal, none left without a verdict), the
        rest is `skipped`, exit 3 and the summary on stdout says `stopped`; a resume sends
        each remaining order once and completes the run."""
        venues, plans = slow_venues()
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS, tanx=KEYS)
            process = await start_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "sig",
                env=cli_env(db),
            )
            assert await wait_for_requests(venues, 40, process)
            signalled = time.time()
            process.send_signal(signum)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            stdout, stderr = out.decode(), err.decode()
            stderr_is_clean(stderr)
            assert process.returncode == 3, stderr
            lines = stdout.splitlines()
            assert ": stopped in " in lines[0], stdout
            assert f"stopped early: stopped by {signum.name}" in stdout
            assert "resume with: batchcancel resume" in stdout
            late = [
                a.at - signalled
                for s in venues.simulators.values()
                for a in s.arrivals
                if a.at > signalled + 0.5
            ]
            assert not late, f"requests sent after the signal: {late}"
            answered_late = [
                unix(at)
                for (at,) in db_rows(db, "select answered_at from attempts")
                if unix(at) > signalled
            ]
            assert answered_late, "no request was in flight at the signal"
            assert_stopped_cleanly(db, venues)
            assert db_rows(db, "select status from runs") == [("stopped",)]
            await resume_and_check(db, venues, plans, "sig")
        assert_no_secrets(db, [stdout, stderr])

    async def test_deadline_stops_records_in_flight_and_resumes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """--deadline 1.5: the run stops sending after 1.5 s, records the answers of the
        requests in flight, leaves the rest `skipped`, exits 3 with status `stopped`; a resume
        completes it, each order sent exactly once overall."""
        venues, plans = slow_venues()
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS, tanx=KEYS)
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--deadline",
                "1.5",
                "--json",
                env=cli_env(db),
            )
            stderr_is_clean(result.stderr)
            assert result.code == 3, result.stderr
            summary = json.loads(result.stdout)
            assert summary["status"] == "stopped"
            sent = venues.total_requests()
            assert 0 < sent < 2 * PER_VENUE
            assert summary["outcomes"]["skipped"] == 2 * PER_VENUE - sent
            assert summary["outcomes"]["canceled"] == sent
            first = min(a.at for s in venues.simulators.values() for a in s.arrivals)
            last = max(a.at for s in venues.simulators.values() for a in s.arrivals)
            assert last - first < 1.5 + 0.5, "requests left after the deadline"
            assert_stopped_cleanly(db, venues)
            await resume_and_check(db, venues, plans, summary["run_id"])

    # A deadline during a long 429 pause, or while a 60 s rate window is full, stops at the
    # deadline: tested on virtual time in test_engine_sim.py (TestTimingOnVirtualTime).


class TestAuditFailure:
    async def test_audit_table_gone_mid_run_stops_then_resume_completes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The attempts table is renamed away from another connection mid-run (the store waits
        out locks, 30 s on SQLite and without limit on PostgreSQL, which rules out a lock
        test): the run stops, exits 1 with one `batchcancel: error:` line naming the audit
        database and no traceback, and no request reached the venue without its attempt row.
        With the table back, a resume completes the run: every order final, none lost, none
        final before the failure sent again."""
        venues = build_venues({"sfox": 400})
        sfox = venues.simulators["sfox"]
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        keys = {"rate_limit": 100, "period": 1.0, "max_in_flight": 8, "backoff": 0.05}
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=keys)
            process = await start_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "audit",
                env=cli_env(db),
            )
            assert await wait_for_requests(venues, 120, process)
            with autocommit_connection(db) as conn:
                conn.exec_driver_sql("alter table attempts rename to attempts_away")
            broken = time.time()
            out, err = await asyncio.wait_for(process.communicate(), 60)
            stdout, stderr = out.decode(), err.decode()
            stderr_is_clean(stderr)
            assert process.returncode == 1, stderr
            errors = [
                line for line in stderr.splitlines() if line.startswith("batchcancel: error:")
            ]
            assert len(errors) == 1, stderr
            assert "audit database" in errors[0] and "attempts" in errors[0], errors
            assert stdout == ""
            sent = sfox.total_requests
            assert sent < 400
            late = [a.at - broken for a in sfox.arrivals if a.at > broken + 0.5]
            assert not late, f"requests sent after the audit failed: {late}"

            with autocommit_connection(db) as conn:
                conn.exec_driver_sql("alter table attempts_away rename to attempts")
            assert_arrivals_follow_attempt_rows(db, venues.simulators)
            final_before = {
                str(o) for (o,) in db_rows(db, "select order_id from orders where state = 'done'")
            }
            counts_before = {o: sfox.requests[o] for o in final_before}

            resumed = await run_cli("resume", "audit", "--json", env=cli_env(db))
        stderr_is_clean(resumed.stderr)
        assert resumed.code == 0, resumed.stderr
        outcomes = outcomes_by_order(db)
        assert len(outcomes) == 400
        assert set(outcomes.values()) <= {"canceled", "already_closed"}
        assert all(sfox.requests[o] == n for o, n in counts_before.items())
        lost = {
            str(o)
            for (o,) in db_rows(
                db,
                "select o.order_id from attempts a join orders o on o.pk = a.order_pk "
                "where a.detail like :lost",
                {"lost": IN_FLIGHT_LOST_PREFIX + "%"},
            )
        }
        for order_id in venues.ids("sfox"):
            if sfox.requests[order_id] == 2:
                # Answered while the audit was down: re-sent, answered as a repeat cancel.
                assert order_id in lost and outcomes["sfox", order_id] == "already_closed"
            else:
                assert sfox.requests[order_id] == 1 and outcomes["sfox", order_id] == "canceled"
        print(f"audit failure after {sent} requests; {len(lost)} answers lost and re-sent")
        assert_arrivals_follow_attempt_rows(db, venues.simulators)
        assert_no_secrets(db, [stdout, stderr, resumed.stdout, resumed.stderr])

    async def test_briefly_locked_audit_holds_sends_then_run_completes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """Another connection holds the audit database's write lock for 2 s mid-run (shorter
        than the store's 30 s busy_timeout; on PostgreSQL an ACCESS EXCLUSIVE lock on
        attempts, which the store waits for without limit): no attempt row can be committed,
        so no request leaves meanwhile (besides those already under way); then the run carries
        on and finishes: exit 0, every order canceled once, every request with its row."""
        venues = build_venues({"sfox": 300})
        sfox = venues.simulators["sfox"]
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        keys = {"rate_limit": 100, "period": 1.0, "max_in_flight": 8, "backoff": 0.05}
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=keys)
            process = await start_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
            assert await wait_for_requests(venues, 80, process)
            with autocommit_connection(db) as conn:
                for statement in WRITE_LOCK["sqlite" if is_sqlite(db) else "postgresql"]:
                    conn.exec_driver_sql(statement)
                locked = time.time()
                await asyncio.sleep(2.0)
                during = [a.at - locked for a in sfox.arrivals if locked + 0.3 < a.at]
                conn.exec_driver_sql("rollback")
            out, err = await asyncio.wait_for(process.communicate(), 60)
        stderr_is_clean(err.decode())
        assert process.returncode == 0, err.decode()
        assert not during, f"requests sent while the audit was locked: {during[:5]}"
        assert json.loads(out)["outcomes"]["canceled"] == 300
        assert sfox.total_requests == 300
        assert max(sfox.arrivals, key=lambda a: a.at).at > locked + 2.0
        assert_arrivals_follow_attempt_rows(db, venues.simulators)


LOADING_ROWS = 80_000  # invalid rows (unknown venue): slow to load, never sent
CHUNK_ROWS = 20_000  # rows the CLI records per chunk (sources.CHUNK_ROWS)


def reached(db: str, moment: str) -> bool:
    """Whether the run got to `moment`: `reading` (the audit schema is ready, the order list
    is being read, nothing recorded and nothing sent yet) or `loading` (sending has begun
    and the rest of the rows are still being recorded in the background)."""
    try:
        if moment == "reading":
            return db_rows(db, "select count(*) from alembic_version") == [(1,)]
        status = db_rows(db, "select status from runs")
        rows = db_rows(db, "select count(*) from orders")[0][0]
        return status == [("loading",)] and CHUNK_ROWS < int(str(rows)) < LOADING_ROWS
    except sa.exc.DBAPIError:  # the schema is still being created
        return False


class TestSignalWhileLoading:
    @pytest.mark.parametrize(
        ("signum", "moment"),
        [
            pytest.param(signal.SIGINT, "reading", id="SIGINT-reading"),
            pytest.param(
                signal.SIGTERM,
                "reading",
                id="SIGTERM-reading",
            ),
            pytest.param(
                signal.SIGTERM,
                "loading",
                id="SIGTERM-loading",
            ),
        ],
    )
    async def test_signal_before_all_rows_are_recorded_exits_3_then_same_key_finishes(
        self,
        tmp_path: Path,
        serve_simulators: ServeSimulators,
        audit_url: str,
        signum: signal.Signals,
        moment: str,
    ) -> None:
        """A signal while the order list is read, or while its rows are still being recorded
        as sending goes on: exit 3, no traceback, nothing sent (the sendable rows come last);
        the same command with the same --run-key records every row once and cancels the
        orders once each."""
        venues = build_venues({"sfox": 20})
        orders = tmp_path / "orders.csv"
        with orders.open("w", encoding="utf-8") as handle:
            handle.write("venue,order_id\n")
            handle.writelines(f"nosuch,{n}\n" for n in range(LOADING_ROWS))
            handle.writelines(f"sfox,{row['order_id']}\n" for row in venues.rows)
        db = audit_url
        env = cli_env(db)
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS)
            args = ("run", str(orders), "--venues-config", str(config), "--run-key", "load")
            process = await start_cli(*args, env=env)
            loop = asyncio.get_running_loop()
            give_up = loop.time() + 60
            while loop.time() < give_up and process.returncode is None:
                if reached(db, moment):
                    break
                await asyncio.sleep(0.003)
            assert reached(db, moment), f"never saw the run {moment}"
            process.send_signal(signum)
            out, err = await asyncio.wait_for(process.communicate(), 60)
            stdout, stderr = out.decode(), err.decode()
            loaded = db_rows(db, "select count(*) from orders")[0][0]
            print(f"{signum.name} with {loaded} of {LOADING_ROWS + 20} rows recorded")
            assert venues.total_requests() == 0
            assert process.returncode == 3, (process.returncode, stdout, stderr)
            stderr_is_clean(stderr)
            if moment == "reading":
                errors = [
                    line for line in stderr.splitlines() if line.startswith("batchcancel: error:")
                ]
                assert len(errors) == 1, stderr
            else:
                assert f"stopped by {signum.name}" in stdout, stdout
                assert db_rows(db, "select status from runs") == [("loading",)]

            again = await run_cli(*args, "--json", env=env)
        stderr_is_clean(again.stderr)
        assert again.code == 1, again.stderr  # the unknown-venue rows are `invalid`
        summary = json.loads(again.stdout)
        assert summary["orders"] == LOADING_ROWS + 20
        assert summary["outcomes"]["invalid"] == LOADING_ROWS
        assert summary["outcomes"]["canceled"] == 20, (summary, again.stderr)
        assert db_rows(db, "select count(distinct seq), count(*) from orders") == [
            (LOADING_ROWS + 20, LOADING_ROWS + 20)
        ]
        sfox = venues.simulators["sfox"]
        assert sfox.total_requests == 20 and all(sfox.requests[i] == 1 for i in venues.ids("sfox"))
