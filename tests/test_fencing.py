"""Fenced lane leases on PostgreSQL: a stalled worker, a taken-over lane, a wrong clock.

SPEC ("Audit and resume"): once a worker's lease has been taken over it sends nothing more
on the lane and changes none of its orders; the check is in the same transaction as each
write-ahead record, and lease expiry is judged by the database's clock. The new holder waits
out the old holder's request timeout before re-sending what it left in flight.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import signal
import socket
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcancel.simulators import SIMULATORS
from batchcancel.simulators.base import Fault, FaultPlan, OrderState, Simulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    postgres_database,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.pg import PostgresServer

VENUE = "sfox"
ORDERS = 160
SLOW = 1.5  # seconds every cancel takes to be answered: requests are in flight at the stop
TIMEOUT = 4.0  # the workers' request timeout: what a new holder must wait out
LEASE = "3"
# Debian's faketime package (.ci/run installs it): a process whose clock is off.
FAKETIME_LIB = next(iter(glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")), "")


def simulator(*, slow: bool) -> Simulator:
    faults = FaultPlan(shares={Fault.SLOW: 1.0}, slow_seconds=SLOW) if slow else FaultPlan()
    sim = SIMULATORS[VENUE](credentials=CREDENTIALS, rate_limit=None, faults=faults)
    sim.seed({str(9000 + n): OrderState.OPEN for n in range(ORDERS)})
    return sim


async def plan(tmp_path: Path, server: object, env: dict[str, str], *, rate: int) -> Path:
    """Record run F as a dry run, so that the workers only resume it."""
    config = write_venues_toml(
        tmp_path / "v.toml",
        server,  # type: ignore[arg-type]
        **{VENUE: {"rate_limit": rate, "period": 1.0, "timeout": TIMEOUT, "max_in_flight": 8}},
    )
    rows = [{"venue": VENUE, "order_id": str(9000 + n)} for n in range(ORDERS)]
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    planned = await run_cli(
        "run", str(orders), "--venues-config", str(config), "--run-key", "F", "--dry-run", env=env
    )
    assert planned.code == 0, planned.stderr
    return config


async def worker(env: dict[str, str], config: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchcancel",
        "resume",
        "F",
        "--venues-config",
        str(config),
        "--lease",
        LEASE,
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_for(condition: object, *, seconds: float) -> None:
    """Poll `condition()` every 10 ms, at most `seconds` (bounded)."""
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {seconds} s")
        await asyncio.sleep(0.01)


class TestStalledWorker:
    async def test_stalled_worker_sends_nothing_after_takeover(
        self, tmp_path: Path, serve_simulators: ServeSimulators, postgres: PostgresServer | None
    ) -> None:
        """Worker A is SIGSTOPped with requests in flight; B takes the lane; A is continued.
        A sends nothing more and settles nothing; only A's in-flight orders are sent twice,
        and B re-sends those only after A's request timeout; the run ends with every order
        cancelled, none skipped."""
        url = postgres_database(postgres)
        env = cli_env(url)
        sim = simulator(slow=True)
        async with serve_simulators({VENUE: sim}) as server:
            config = await plan(tmp_path, server, env, rate=20)
            a = await worker(env, config)
            await wait_for(lambda: sim.total_requests >= 30, seconds=30)
            os.kill(a.pid, signal.SIGSTOP)
            stopped_at = time.time()
            sent_before_stop = {arrival.key for arrival in sim.arrivals}
            b = await worker(env, config)
            try:
                # B holds the lane once it sends orders A never sent.
                await wait_for(
                    lambda: len({x.key for x in sim.arrivals}) >= len(sent_before_stop) + 20,
                    seconds=60,
                )
            finally:
                os.kill(a.pid, signal.SIGCONT)
            a_out, a_err = await asyncio.wait_for(a.communicate(), 120)
            b_out, b_err = await asyncio.wait_for(b.communicate(), 120)
        assert b.returncode == 0, b_err.decode()
        assert "lost the lane lease" in a_err.decode(), a_err.decode()
        twice = {key for key, count in sim.requests.items() if count > 1}
        assert max(sim.requests.values()) <= 2
        # Only what A had in flight when it stalled went out twice, never its later orders.
        assert twice <= sent_before_stop, sorted(twice - sent_before_stop)
        # A recorded nothing after it was stopped: no attempt of its own, no settling.
        a_name = f"{socket.gethostname()}:{a.pid}"
        a_sent = [
            at for (at,) in db_rows(url, f"select sent_at from attempts where worker = '{a_name}'")
        ]
        assert a_sent and max(a_sent) <= datetime.fromtimestamp(stopped_at, UTC).replace(
            tzinfo=None
        )
        # B waited out A's request timeout before re-sending what A left in flight.
        gaps = db_rows(
            url,
            "select o.order_id, extract(epoch from b.sent_at - a.sent_at) from attempts a "
            "join attempts b on b.order_pk = a.order_pk and b.attempt = a.attempt + 1 "
            "join orders o on o.pk = a.order_pk",
        )
        assert {order_id for order_id, _ in gaps} == twice
        assert all(gap >= TIMEOUT for _, gap in gaps), gaps
        # A changed none of the orders it lost: none skipped, every one cancelled, run done.
        # (An in-flight order is cancelled by A's request: B's re-send finds it closed, unless
        # A recorded its answer before B's wait was over, which B then adopts.)
        outcome_of = dict(db_rows(url, "select order_id, outcome from orders"))
        assert len(outcome_of) == ORDERS
        assert {k for k, v in outcome_of.items() if v != "canceled"} <= twice, outcome_of
        assert {outcome_of[k] for k in twice} <= {"canceled", "already_closed"}
        assert db_rows(url, "select status from runs") == [("succeeded",)]
        assert json.loads(b_out)["status"] == "succeeded"
        assert a_out  # A still says how it ended


class TestWrongClock:
    async def test_clock_ahead_cannot_take_a_live_lane(
        self, tmp_path: Path, serve_simulators: ServeSimulators, postgres: PostgresServer | None
    ) -> None:
        """A worker whose clock runs 31 s ahead starts beside a live worker: the lease is
        judged by the database's clock, so it takes nothing and no order is sent twice."""
        if not FAKETIME_LIB:
            if os.environ.get("BATCHCANCEL_TEST_REQUIRE_PG"):
                pytest.fail("libfaketime is not installed (Debian package faketime)")
            pytest.skip("libfaketime is not installed (Debian package faketime)")
        url = postgres_database(postgres)
        env = cli_env(url)
        sim = simulator(slow=False)
        async with serve_simulators({VENUE: sim}) as server:
            config = await plan(tmp_path, server, env, rate=40)
            a = await worker(env, config)
            await wait_for(lambda: sim.total_requests >= 10, seconds=30)
            ahead = {
                **env,
                "LD_PRELOAD": FAKETIME_LIB,
                "FAKETIME": "+31s",
                "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            }
            b = await worker(ahead, config)
            _, a_err = await asyncio.wait_for(a.communicate(), 120)
            _, b_err = await asyncio.wait_for(b.communicate(), 120)
        assert a.returncode == 0, a_err.decode()
        assert b.returncode == 0, b_err.decode()
        assert sim.total_requests == ORDERS
        assert max(sim.requests.values()) == 1
        assert db_rows(url, "select count(distinct worker) from attempts") == [(1,)]


class TestConfirmTakesLanes:
    async def test_confirm_leaves_a_live_workers_lane_alone(
        self, tmp_path: Path, serve_simulators: ServeSimulators, postgres: PostgresServer | None
    ) -> None:
        """`confirm` while worker A (stalled, lease still valid) has cancels in flight on the
        lane: confirm does not poll that lane and relabels none of A's in-flight attempts;
        A, continued, finishes its run with every answer its own."""
        url = postgres_database(postgres)
        env = cli_env(url)
        sim = SIMULATORS["crux"](
            credentials=CREDENTIALS,
            rate_limit=None,
            faults=FaultPlan(shares={Fault.SLOW: 1.0}, slow_seconds=SLOW),
        )
        ids = [str(uuid.UUID(int=n + 1, version=4)) for n in range(60)]
        sim.seed({order_id: OrderState.OPEN for order_id in ids})
        async with serve_simulators({"crux": sim}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml",
                server,
                crux={"rate_limit": 20, "period": 1.0, "timeout": TIMEOUT, "max_in_flight": 8},
            )
            rows = [{"venue": "crux", "order_id": order_id} for order_id in ids]
            orders = write_orders_csv(tmp_path / "orders.csv", rows)
            planned = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "F",
                "--dry-run",
                env=env,
            )
            assert planned.code == 0, planned.stderr
            a = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "batchcancel", "resume", "F",
                "--venues-config", str(config), "--json",
                env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip

            def pending_and_in_flight() -> bool:
                states = dict(db_rows(url, "select state, count(*) from orders group by state"))
                return states.get("done", 0) >= 5 and states.get("sending", 0) >= 3

            await wait_for(pending_and_in_flight, seconds=30)
            os.kill(a.pid, signal.SIGSTOP)
            try:
                in_flight = db_rows(url, "select count(*) from attempts where verdict is null")
                run_id = db_rows(url, "select id from runs")[0][0]
                confirmed = await run_cli(
                    "confirm", run_id, "--venues-config", str(config), "--timeout", "5",
                    env=env,
                )  # fmt: skip
                relabelled = db_rows(
                    url, "select count(*) from attempts where detail like 'no answer recorded%'"
                )
                still_open = db_rows(url, "select count(*) from attempts where verdict is null")
                polls = sum(sim.status_requests.values())
            finally:
                os.kill(a.pid, signal.SIGCONT)
            _, a_err = await asyncio.wait_for(a.communicate(), 120)
        assert relabelled == [(0,)], confirmed.stderr
        assert still_open == in_flight
        assert polls == 0
        assert "another worker holds the crux lane" in confirmed.stderr, confirmed.stderr
        assert a.returncode == 0, a_err.decode()
        assert db_rows(url, "select count(*) from orders where state != 'done'") == [(0,)]
