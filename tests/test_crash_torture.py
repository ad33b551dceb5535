"""Crash torture: a five-venue run killed with SIGKILL again and again, resumed until done.

The run (2,000 orders, each venue at a moderate limit its simulator enforces) is started as a
real CLI process and killed at seeded pseudo-random points, counted in requests the simulators
received; each time it is resumed and killed again at the next point, then resumed to the end.
After every kill and at the end the audit database and the simulators must agree:

- every order has exactly one final outcome, or is resumable (pending, sending, failed, skipped);
- no order that was final before a kill is sent again;
- every request a simulator received has an attempt row stamped before it arrived;
- at the end `status --json`, `report --format csv` and the simulators' counts agree.

Three kills run in the default suite; all twenty with `-m slow`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from batchcancel.simulators.base import OrderState
from tests.conftest import ServeSimulators, cli_env, run_cli, write_orders_csv, write_venues_toml
from tests.torture_support import (
    FINAL_VALUES,
    IN_FLIGHT_LOST_PREFIX,
    RESUMABLE_VALUES,
    Venues,
    assert_arrivals_follow_attempt_rows,
    assert_no_secrets,
    build_venues,
    db_rows,
    repeat_outcomes,
    start_cli,
    stderr_is_clean,
    wait_for_requests,
)

# orders per venue, and the limit per 1 s both the simulator and batchcancel use
PLAN = {
    "sfox": (560, 200),
    "etna": (400, 150),
    "crux": (280, 100),
    "tanx": (380, 130),
    "zebpay": (380, 130),
}
TOTAL = sum(n for n, _ in PLAN.values())
STATES = [OrderState.OPEN] * 5 + [
    OrderState.OPEN_ASYNC,
    OrderState.FILLED,
    OrderState.CANCELED,
    None,
]
SEED = 5_2024
RUN_KEY = "torture"


def check_invariants(db: str, venues: Venues, final_seen: dict[tuple[str, str], int]) -> None:
    """The audit database against itself and the simulators, after a kill or at the end.

    `final_seen` maps each order found final so far to the requests its venue had received
    for it then; it must not grow afterwards. New final orders are added to it.
    """
    orders = db_rows(db, "select pk, venue, order_id, state, outcome, attempts from orders")
    assert len(orders) == TOTAL, f"{len(orders)} order rows for {TOTAL} orders"
    assert len({(v, o) for _, v, o, *_ in orders}) == TOTAL, "an order is recorded twice"
    attempts: dict[object, list[tuple[object, ...]]] = {}
    for pk, *row in db_rows(
        db, "select order_pk, attempt, verdict, detail from attempts order by order_pk, attempt"
    ):
        attempts.setdefault(pk, []).append(tuple(row))
    for pk, venue, order_id, state, outcome, count in orders:
        key = (str(venue), str(order_id))
        rows = attempts.get(pk, [])
        assert [a for a, _, _ in rows] == list(range(1, len(rows) + 1)), key
        assert count == len(rows), f"{key}: orders.attempts {count}, {len(rows)} attempt rows"
        finals = [v for _, v, _ in rows if v in FINAL_VALUES]
        unanswered = [a for a, v, _ in rows if v is None]
        if state == "done":
            assert outcome in FINAL_VALUES, key
            # Exactly one final answer, the last one, and it is the order's outcome.
            assert finals == [outcome] and rows[-1][1] == outcome, (key, rows)
        else:
            assert state in ("pending", "sending"), (key, state)
            assert outcome is None or outcome in RESUMABLE_VALUES, (key, outcome)
            assert not finals, (key, rows)
        # An attempt without its answer is the last one, and only while the order is sending.
        assert unanswered == ([len(rows)] if state == "sending" else []), (key, state, rows)
        simulator = venues.simulators[key[0]]
        if key in final_seen:
            assert simulator.requests[key[1]] == final_seen[key], f"{key} sent again after final"
        elif state == "done":
            final_seen[key] = simulator.requests[key[1]]
    assert_arrivals_follow_attempt_rows(db, venues.simulators)


async def cli_json(*args: str, db: str) -> object:
    """A CLI command's JSON output (exit 0 expected)."""
    result = await run_cli(*args, env=cli_env(db))
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


class TestCrashTorture:
    @pytest.mark.parametrize("kills", [3, pytest.param(20, marks=pytest.mark.slow)])
    async def test_sigkill_at_seeded_points_then_resume_until_done(
        self, tmp_path: Path, serve_simulators: ServeSimulators, kills: int, audit_url: str
    ) -> None:
        """2,000 orders over five venues, SIGKILLed at `kills` seeded request counts and
        resumed each time, then resumed to the end: after every kill each order is final or
        resumable, no final order is sent again, every request had its attempt row first; at
        the end every order is final and status, report and simulators agree."""
        rng = random.Random(SEED + kills)
        venues = build_venues(
            {v: n for v, (n, _) in PLAN.items()},
            states=STATES,
            rate_limit={v: limit for v, (_, limit) in PLAN.items()},
            penalty=0.5,
        )
        rng.shuffle(venues.rows)
        points = sorted(rng.sample(range(30, int(TOTAL * 0.9)), kills))
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        env = cli_env(db)
        final_seen: dict[tuple[str, str], int] = {}
        outputs: list[str] = []
        started = time.monotonic()
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml",
                server,
                **{
                    v: {
                        "rate_limit": limit,
                        "period": 1.0,
                        "max_in_flight": 16,
                        "timeout": 5.0,
                        "cooldown": 0.5,
                        "backoff": 0.05,
                    }
                    for v, (_, limit) in PLAN.items()
                },
            )
            for trial, point in enumerate(points, 1):
                args = (
                    ("run", str(orders), "--venues-config", str(config), "--run-key", RUN_KEY)
                    if trial == 1
                    else ("resume", RUN_KEY)
                )
                process = await start_cli(*args, env=env)
                target = max(point, venues.total_requests() + 1)
                reached = await wait_for_requests(venues, target, process, timeout=90)
                process.send_signal(signal.SIGKILL)
                out, err = await asyncio.wait_for(process.communicate(), 30)
                outputs += [out.decode(), err.decode()]
                assert reached, f"trial {trial}: the run ended before request {target}"
                assert process.returncode == -signal.SIGKILL, err.decode()
                check_invariants(db, venues, final_seen)
                print(
                    f"kill {trial}/{kills} at request {venues.total_requests()} "
                    f"(aimed at {target}): {len(final_seen)} orders final"
                )

            last = await run_cli("resume", RUN_KEY, "--json", env=env, timeout=180)
            stderr_is_clean(last.stderr)
            outputs += [last.stdout, last.stderr]
            # not_found and rejected orders need attention: exit 1.
            assert last.code == 1, last.stderr
            summary = json.loads(last.stdout)
            assert summary["status"] == "attention"
            elapsed = time.monotonic() - started

            check_invariants(db, venues, final_seen)
            assert db_rows(db, "select state, count(*) from orders group by state") == [
                ("done", TOTAL)
            ]
            status = await cli_json("status", RUN_KEY, "--json", db=db)
            report = await run_cli("report", RUN_KEY, "--format", "csv", env=env)
            assert report.code == 0, report.stderr
            attempts_report = await run_cli(
                "report", RUN_KEY, "--format", "csv", "--attempts", env=env
            )
            assert attempts_report.code == 0, attempts_report.stderr
            outputs += [report.stdout, attempts_report.stdout, json.dumps(status)]
        assert isinstance(status, dict)
        records = list(csv.DictReader(io.StringIO(report.stdout)))
        attempt_records = list(csv.DictReader(io.StringIO(attempts_report.stdout)))

        # status, report, the run's own summary and the audit database agree.
        db_counts = dict(db_rows(db, "select outcome, count(*) from orders group by outcome"))
        report_counts = Counter(r["outcome"] for r in records)
        nonzero = {k: v for k, v in status["outcomes"].items() if v}
        assert nonzero == dict(report_counts) == db_counts
        assert {k: v for k, v in summary["outcomes"].items() if v} == nonzero
        assert status["states"] == {"done": TOTAL}
        assert len(records) == status["orders"] == TOTAL
        for venue, (count, _) in PLAN.items():
            assert sum(status["venues"][venue].values()) == count
            assert status["venues"][venue] == summary["venues"][venue]
        total_attempts = len(attempt_records)
        assert sum(int(r["attempts"]) for r in records) == total_attempts

        # ... and the simulators: every request is an attempt row; every answered row a request.
        requests = venues.total_requests()
        lost_orders = Counter(
            (r["venue"], r["order_id"])
            for r in attempt_records
            if r["detail"].startswith(IN_FLIGHT_LOST_PREFIX)
        )
        assert total_attempts - lost_orders.total() <= requests <= total_attempts
        for record in records:
            venue, order_id, outcome = record["venue"], record["order_id"], record["outcome"]
            simulator = venues.simulators[venue]
            seeded = venues.books[venue][order_id]
            first = simulator.expected_outcomes[seeded].value
            # Each answered attempt reached the venue; an unanswered one may or may not have.
            made = int(record["attempts"])
            assert made - lost_orders[venue, order_id] <= simulator.requests[order_id] <= made
            if lost_orders[venue, order_id]:
                # Re-sent after a kill caught it in flight: a repeat cancel may answer.
                assert outcome in {first, *repeat_outcomes(simulator, seeded)}, (venue, order_id)
            else:
                assert outcome == first, (venue, order_id, outcome)
            if outcome in ("canceled", "cancel_pending", "already_closed"):
                assert simulator.state_of(order_id) in (
                    OrderState.CANCELED,
                    OrderState.PENDING,
                    OrderState.FILLED,
                ), (venue, order_id)
            elif outcome == "not_found":
                assert order_id not in simulator.book
        assert_no_secrets(db, outputs)
        limited = sum(s.rate_limited for s in venues.simulators.values())
        print(
            f"crash torture: {kills}/{kills} SIGKILLs survived, {TOTAL} orders, {requests} "
            f"requests, {len(lost_orders)} orders in flight at a kill and re-sent, {limited} "
            f"429s after restarts, {elapsed:.1f} s"
        )
