"""The pipeline end to end: the real CLI in a subprocess, a real simulator, a real SQLite file."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import signal
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest

from batchcancel.outcomes import Outcome
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    SECRET_VALUES,
    ServeSimulators,
    assert_audit_intact,
    cli_env,
    db_bytes,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)

EXPECTED = SfoxSimulator.expected_outcomes
# What a second cancel of an order answers, by the state the order was seeded in.
REPEAT_OUTCOMES = {
    OrderState.OPEN: {"already_closed"},
    OrderState.OPEN_ASYNC: {"cancel_pending", "already_closed"},
    OrderState.FILLED: {"already_closed"},
    OrderState.CANCELED: {"already_closed"},
    None: {"not_found"},
}


def sfox_book(count: int) -> dict[str, OrderState | None]:
    """Order ids with a repeating mix of open, pending, finished and unknown (None)."""
    states: list[OrderState | None] = [
        OrderState.OPEN,
        OrderState.OPEN,
        OrderState.OPEN,
        OrderState.OPEN_ASYNC,
        OrderState.FILLED,
        OrderState.CANCELED,
        None,
    ]
    return {str(100000 + n): states[n % len(states)] for n in range(count)}


def seeded(book: dict[str, OrderState | None], **kwargs: object) -> SfoxSimulator:
    simulator = SfoxSimulator(credentials=CREDENTIALS, **kwargs)  # type: ignore[arg-type]
    simulator.seed({k: v for k, v in book.items() if v is not None})
    return simulator


def rows(book: dict[str, OrderState | None]) -> list[dict[str, str]]:
    return [{"venue": "sfox", "order_id": order_id} for order_id in book]


def expected_counts(book: dict[str, OrderState | None]) -> dict[str, int]:
    counts = {o.value: 0 for o in Outcome}
    for state in book.values():
        counts[EXPECTED[state].value] += 1
    return counts


class TestOneRun:
    async def test_thousand_orders_each_sent_exactly_once(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """1,000 sFOX orders end with the outcomes the book implies, one request each;
        invalid rows are recorded and never sent; the credential is nowhere in the output."""
        book = sfox_book(1000)
        simulator = seeded(book, rate_limit=None)
        bad = [{"venue": "sfox", "order_id": "has space"}, {"venue": "nosuch", "order_id": "1"}]
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book) + bad)
        db = audit_url
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        assert result.code == 1, result.stderr  # not_found and invalid need attention
        summary = json.loads(result.stdout)
        assert list(summary) == [
            "run_id",
            "run_key",
            "status",
            "orders",
            "outcomes",
            "venues",
            "elapsed_s",
            "digest",
        ]
        assert len(summary["digest"]) == 64  # the audit's hex SHA-256 digest (SPEC)
        want = expected_counts(book)
        want["invalid"] = 2
        assert summary["outcomes"] == want
        assert summary["orders"] == 1002
        assert summary["status"] == "attention"
        assert simulator.total_requests == 1000
        assert all(simulator.requests[order_id] == 1 for order_id in book)
        assert simulator.requests["has space"] == 0
        per_order = dict(db_rows(db, "select order_id, outcome from orders"))
        assert all(per_order[k] == EXPECTED[v].value for k, v in book.items())
        assert per_order["has space"] == "invalid"

        report = await run_cli(
            "report", summary["run_id"], "--format", "csv", "--attempts", env=cli_env(db)
        )
        assert report.code == 0
        attempts = list(csv.DictReader(io.StringIO(report.stdout)))
        assert len(attempts) == 1000
        texts = [result.stdout, result.stderr, report.stdout, report.stderr]
        assert_no_secrets(db, texts)

    async def test_rate_limit_is_kept_and_nearly_reached(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """At 50 per 1 s the venue answers no 429 and sees at least 90 % of the limit."""
        book = {str(n): OrderState.OPEN for n in range(1, 301)}
        simulator = seeded(book, rate_limit=50, period=1.0, penalty=5.0)
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book))  # type: ignore[arg-type]
        db = audit_url
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 50, "period": 1.0}
            )
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), env=cli_env(db)
            )
        assert result.code == 0, result.stderr
        assert simulator.rate_limited == 0
        assert simulator.total_requests == 300
        times = sorted(a.at for a in simulator.arrivals)
        # Count whole windows: 300 requests at 50 per window need six windows at best.
        achieved = len(times) / (times[-1] - times[0] + 1.0)
        print(f"achieved {achieved:.1f} requests/s at a limit of 50/s")
        assert achieved >= 45

    async def test_dry_run_sends_nothing(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """--dry-run records the plan, reports `planned`, exits 0 and sends nothing."""
        book = {str(n): OrderState.OPEN for n in range(1, 21)}
        simulator = seeded(book, rate_limit=None)  # type: ignore[arg-type]
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book))  # type: ignore[arg-type]
        db = audit_url
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={})
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--dry-run",
                "--json",
                env=cli_env(db),
            )
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "planned"
        assert simulator.total_requests == 0
        assert "sfox: 20 orders" in result.stderr


class TestBadSources:
    @pytest.mark.parametrize(
        ("name", "content"),
        [
            pytest.param("missing.csv", None, id="missing"),
            pytest.param("empty.csv", b"", id="empty"),
            pytest.param("noheader.csv", b"100001\n100002\n", id="no-header"),
            pytest.param("noorder.csv", b"venue,id\nsfox,100001\n", id="no-order_id"),
            pytest.param(
                "latin1.csv", "venue,order_id\nsfox,caf\xe9\n".encode("latin-1"), id="undecodable"
            ),
        ],
    )
    async def test_unreadable_source_exits_2_and_sends_nothing(
        self, tmp_path: Path, serve_simulators: ServeSimulators, name: str, content: bytes | None
    ) -> None:
        """An unreadable source: exit 2, one line on stderr, no traceback, nothing sent."""
        simulator = seeded({"100001": OrderState.OPEN}, rate_limit=None)
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={})
            result = await run_cli(
                "run", str(path), "--venues-config", str(config), env=cli_env(tmp_path / "a.db")
            )
        assert result.code == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error: "), result.stderr
        assert simulator.total_requests == 0


class TestStopAndResume:
    async def test_deadline_then_same_run_key_resumes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A deadline leaves the rest `skipped` (exit 3); the same --run-key resumes it and
        never re-sends a final order; a third time sends nothing at all."""
        book = sfox_book(140)
        simulator = seeded(book, rate_limit=None)
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book))
        db = audit_url
        env = cli_env(db)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 40, "period": 1.0}
            )
            args = ("run", str(orders), "--venues-config", str(config), "--run-key", "eod-1")
            first = await run_cli(*args, "--deadline", "1.5", "--json", env=env)
            assert first.code == 3, first.stderr
            summary = json.loads(first.stdout)
            assert summary["status"] == "stopped"
            assert summary["run_key"] == "eod-1"
            assert 0 < summary["outcomes"]["skipped"] < 140
            final_before = {
                order_id
                for (order_id,) in db_rows(db, "select order_id from orders where state='done'")
            }
            sent_before = simulator.total_requests

            second = await run_cli(*args, "--json", env=env)
            assert second.code == 1, second.stderr
            assert json.loads(second.stdout)["run_id"] == summary["run_id"]
            assert "resuming it" in second.stderr
            assert all(simulator.requests[order_id] == 1 for order_id in final_before)
            assert all(simulator.requests[order_id] == 1 for order_id in book)
            assert simulator.total_requests == 140 > sent_before
            assert json.loads(second.stdout)["outcomes"] == expected_counts(book)

            third = await run_cli(*args, "--json", env=env)
            assert third.code == 1
            assert simulator.total_requests == 140

    @pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
    async def test_killed_run_resumes_without_resending_final_orders(
        self, tmp_path: Path, serve_simulators: ServeSimulators, signum: int, audit_url: str
    ) -> None:
        """A run killed part-way resumes: every order ends final, no order final before the
        kill is sent again, and every request the venue received has an earlier attempt row."""
        book = sfox_book(400)
        simulator = seeded(book, rate_limit=None)
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book))
        db = audit_url
        env = cli_env(db)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 200, "period": 1.0}
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "k1",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2000):  # bounded: at most 20 s
                if simulator.total_requests >= 150:
                    break
                await asyncio.sleep(0.01)
            os.kill(process.pid, signum)
            _, err = await asyncio.wait_for(process.communicate(), 60)
            if signum == signal.SIGTERM:
                assert process.returncode == 3, err.decode()
            else:
                assert process.returncode == -signal.SIGKILL
            assert simulator.total_requests < 400
            final_before = {
                order_id
                for (order_id,) in db_rows(db, "select order_id from orders where state='done'")
            }
            assert final_before

            resumed = await run_cli("resume", "k1", "--json", env=env)
        assert resumed.code == 1, resumed.stderr
        assert all(simulator.requests[order_id] == 1 for order_id in final_before)
        assert db_rows(db, "select count(*) from orders where state != 'done'") == [(0,)]
        assert_arrivals_follow_attempt_rows(db, simulator)
        assert_audit_intact(db, "k1")  # a crashed-and-resumed run's chains hold
        # Orders sent twice were in flight at the kill; their re-send is answered as a repeat.
        lost = {
            order_id
            for (order_id,) in db_rows(
                db,
                "select o.order_id from attempts a join orders o on o.pk = a.order_pk "
                "where a.detail like 'no answer recorded%'",
            )
        }
        outcomes = dict(db_rows(db, "select order_id, outcome from orders"))
        for order_id, state in book.items():
            if simulator.requests[order_id] == 1:
                assert outcomes[order_id] == EXPECTED[state].value, order_id
            else:
                assert simulator.requests[order_id] == 2 and order_id in lost, order_id
                assert outcomes[order_id] in REPEAT_OUTCOMES[state], order_id

    async def test_second_process_on_the_same_run_is_refused(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """While one process works a SQLite run, `resume` from another is refused with one
        line. (PostgreSQL workers share a run instead: tests/test_workers.py.)"""
        if not audit_url.startswith("sqlite"):
            # Not a gap: on PostgreSQL a second worker joins the run (tests/test_workers.py).
            pytest.skip("PostgreSQL workers share a run by design")
        book = {str(n): OrderState.OPEN for n in range(1, 201)}
        simulator = seeded(book, rate_limit=None)  # type: ignore[arg-type]
        orders = write_orders_csv(tmp_path / "orders.csv", rows(book))  # type: ignore[arg-type]
        db = audit_url
        env = cli_env(db)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 20, "period": 1.0}
            )
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "busy",
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            for _ in range(2000):
                if simulator.total_requests >= 5:
                    break
                await asyncio.sleep(0.01)
            second = await run_cli("resume", "busy", "--venues-config", str(config), env=env)
            sent = simulator.total_requests
            process.terminate()
            await asyncio.wait_for(process.wait(), 60)
        assert second.code == 1
        assert "is being worked by process" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert sent < 200


def assert_arrivals_follow_attempt_rows(db: str, simulator: SfoxSimulator) -> None:
    """The k-th request the venue saw for an order came after that order's k-th attempt row."""
    sent_at: dict[str, list[float]] = defaultdict(list)
    for order_id, stamp in db_rows(
        db,
        "select o.order_id, a.sent_at from attempts a join orders o on o.pk = a.order_pk "
        "order by a.order_pk, a.attempt",
    ):
        stamp = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp)
        when = stamp.replace(tzinfo=UTC).timestamp()
        sent_at[str(order_id)].append(when)
    arrived: dict[str, list[float]] = defaultdict(list)
    for arrival in simulator.arrivals:
        if arrival.key is not None:
            arrived[arrival.key].append(arrival.at)
    for order_id, times in arrived.items():
        rows_ = sent_at[order_id]
        assert len(times) <= len(rows_), f"{order_id}: {len(times)} requests, {len(rows_)} rows"
        for arrival_at, row_at in zip(sorted(times), rows_, strict=False):
            assert arrival_at >= row_at - 0.001, order_id


def assert_no_secrets(db: str, texts: list[str]) -> None:
    """No credential value in the audit database or in any output."""
    stored = db_bytes(db)
    for secret in SECRET_VALUES:
        assert secret.encode() not in stored
        for text in texts:
            assert secret not in text
