"""Scripted venue faults through the real CLI: transient answers are retried, never final.

Each simulator's FaultPlan misbehaves on chosen orders (5xx, dropped connections, answers
slower than the client timeout, junk and truncated bodies, 429s with and without
Retry-After). The orders must still end with the outcome their book implies, every faulty
answer must be recorded as `transient`, a 429 must pause the whole venue, and an order that
runs out of --max-attempts is `failed` until a later resume completes it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from tests.conftest import ServeSimulators, cli_env, run_cli, write_orders_csv, write_venues_toml
from tests.torture_support import (
    VENUE_NAMES,
    assert_arrivals_follow_attempt_rows,
    assert_no_secrets,
    attempts_by_order,
    build_venues,
    db_rows,
    outcomes_by_order,
    repeat_outcomes,
    stderr_is_clean,
)

BACKOFF = 0.05  # first retry delay in the venues TOML: keeps retries fast
TIMEOUT = 5.0  # client timeout in the venues TOML: no honest answer comes near it
SLOW_TIMEOUT = 1.0  # the client timeout when SLOW answers are scripted
SLOW_SECONDS = 2.5  # how late a SLOW answer comes: well past SLOW_TIMEOUT
# Faults the simulator applies after the cancel reached the book: the retry is a repeat.
APPLIED = {Fault.DROP_AFTER, Fault.SLOW}
# The HTTP status an attempt row records for each fault (None: no answer at all).
FAULT_STATUS: dict[Fault, int | None] = {
    Fault.SERVER_ERROR: 500,
    Fault.UNAVAILABLE: 503,
    Fault.DROP: None,
    Fault.DROP_AFTER: None,
    Fault.SLOW: None,
    Fault.JUNK: 200,
    Fault.TRUNCATED: 200,
    Fault.RATE_LIMIT: 429,
    Fault.RATE_LIMIT_BARE: 429,
}
ORDERS_PER_VENUE = 8
# order index -> how many times in a row the fault hits it
FAULTED = {1: 1, 4: 2, 6: 3}


def venue_keys(**extra: object) -> dict[str, dict[str, object]]:
    """Venues TOML keys for all five venues: unthrottled, short timeout, small backoff."""
    keys: dict[str, object] = {
        "rate_limit": 0,
        "timeout": TIMEOUT,
        "backoff": BACKOFF,
        "cooldown": 0.2,
        "max_in_flight": 4,
    }
    keys.update(extra)
    return {name: dict(keys) for name in VENUE_NAMES}


class TestEachFaultKind:
    @pytest.mark.parametrize("fault", list(Fault), ids=[f.value for f in Fault])
    async def test_faulty_answers_are_retried_to_the_right_outcome(
        self, tmp_path: Path, serve_simulators: ServeSimulators, fault: Fault, audit_url: str
    ) -> None:
        """Five venues, the fault scripted once, twice and three times on three orders of each:
        every order ends with the outcome its book implies (a repeat cancel's outcome where the
        fault hit after the cancel applied), each faulty answer is an attempt row with verdict
        `transient` and the fault's HTTP status, never `canceled` or `rejected`; exit 0."""
        plans = {
            name: FaultPlan(slow_seconds=SLOW_SECONDS, retry_after=0.2) for name in VENUE_NAMES
        }
        venues = build_venues(dict.fromkeys(VENUE_NAMES, ORDERS_PER_VENUE), faults=plans)
        for name in VENUE_NAMES:
            ids = venues.ids(name)
            for index, times in FAULTED.items():
                plans[name].script(ids[index], *[fault] * times)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            timeout = SLOW_TIMEOUT if fault is Fault.SLOW else TIMEOUT
            config = write_venues_toml(tmp_path / "v.toml", server, **venue_keys(timeout=timeout))
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        stderr_is_clean(result.stderr)
        assert result.code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "succeeded"
        outcomes = outcomes_by_order(db)
        attempts = attempts_by_order(db)
        for name, simulator in venues.simulators.items():
            ids = venues.ids(name)
            assert all(not q for q in plans[name].by_order.values()), f"{name}: faults unused"
            for index, order_id in enumerate(ids):
                times = FAULTED.get(index, 0)
                rows = attempts[name, order_id]
                assert simulator.requests[order_id] == times + 1 == len(rows), (name, order_id)
                want = (
                    repeat_outcomes(simulator, OrderState.OPEN).pop()
                    if times and fault in APPLIED
                    else simulator.expected_outcomes[OrderState.OPEN].value
                )
                assert outcomes[name, order_id] == want, (name, order_id, rows)
                verdicts = [row[2] for row in rows]
                assert verdicts == ["transient"] * times + [want], (name, order_id, rows)
                for row in rows[:times]:
                    assert row[1] == FAULT_STATUS[fault], (name, order_id, row)
                    assert row[5] is not None, "a faulty answer has no answered_at"
        assert_arrivals_follow_attempt_rows(db, venues.simulators)
        assert_no_secrets(db, [result.stdout, result.stderr])


STORM = {
    Fault.SERVER_ERROR: 0.04,
    Fault.UNAVAILABLE: 0.04,
    Fault.DROP: 0.04,
    Fault.DROP_AFTER: 0.04,
    Fault.JUNK: 0.04,
    Fault.TRUNCATED: 0.04,
    Fault.RATE_LIMIT: 0.03,
    Fault.RATE_LIMIT_BARE: 0.03,
}


class TestFaultStorm:
    async def test_mixed_fault_storm_over_five_venues(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """About 30 % of all requests to five venues fail in one of eight ways (5xx, dropped
        connections before and after the cancel applied, junk, truncated bodies, 429s with and
        without Retry-After): every order still ends final with the outcome its book implies
        (or a repeat cancel's, where a dropped answer had applied it), every request has its
        attempt row, every answer but the last of an order is `transient`; exit 1 only for
        the unknown orders."""
        plans = {name: FaultPlan(shares=dict(STORM), seed=n) for n, name in enumerate(VENUE_NAMES)}
        states = [OrderState.OPEN] * 3 + [OrderState.OPEN_ASYNC, OrderState.FILLED, None]
        venues = build_venues(dict.fromkeys(VENUE_NAMES, 80), states=states, faults=plans)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, **venue_keys(cooldown=0.05, max_in_flight=8)
            )
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--max-attempts",
                "12",
                "--json",
                env=cli_env(db),
            )
        stderr_is_clean(result.stderr)
        assert result.code == 1, result.stderr
        summary = json.loads(result.stdout)
        assert summary["outcomes"]["failed"] == summary["outcomes"]["skipped"] == 0
        outcomes = outcomes_by_order(db)
        attempts = attempts_by_order(db)
        transient = 0
        for name, simulator in venues.simulators.items():
            for order_id, state in venues.books[name].items():
                rows = attempts[name, order_id]
                first = simulator.expected_outcomes[state].value
                assert simulator.requests[order_id] == len(rows), (name, order_id)
                assert [r[2] for r in rows[:-1]] == ["transient"] * (len(rows) - 1), rows
                assert rows[-1][2] == outcomes[name, order_id], rows
                dropped_after = any(r[1] is None for r in rows[:-1])
                allowed = {first, *repeat_outcomes(simulator, state)} if dropped_after else {first}
                assert outcomes[name, order_id] in allowed, (name, order_id, rows)
                transient += len(rows) - 1
        print(f"fault storm: {transient} transient answers over {len(outcomes)} orders")
        assert transient >= 60, "the storm did not happen"
        assert_arrivals_follow_attempt_rows(db, venues.simulators)


class TestRateLimitPausesTheVenue:
    @pytest.mark.parametrize(
        "fault", [Fault.RATE_LIMIT, Fault.RATE_LIMIT_BARE], ids=["retry-after", "bare"]
    )
    async def test_429_pauses_every_request_to_the_venue(
        self, tmp_path: Path, serve_simulators: ServeSimulators, fault: Fault, audit_url: str
    ) -> None:
        """A 429 on one sFOX order (Retry-After 1 s, or no header and a 1 s cooldown) pauses
        the whole venue: besides requests already in flight, nothing reaches sFOX until the
        pause is over, while tanX carries on; the order is retried and canceled; exit 0."""
        pause = 1.0
        plan = FaultPlan(retry_after=pause)
        venues = build_venues({"sfox": 60, "tanx": 200}, faults={"sfox": plan})
        victim = venues.ids("sfox")[12]
        plan.script(victim, fault)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml",
                server,
                # sFOX unthrottled: without the pause all 60 would leave within a few ms.
                sfox={"rate_limit": 0, "max_in_flight": 4, "backoff": BACKOFF, "cooldown": pause},
                # tanX at 100/s in small windows: it sends all through sFOX's pause.
                tanx={"rate_limit": 10, "period": 0.1, "max_in_flight": 4, "cooldown": 30.0},
            )
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        stderr_is_clean(result.stderr)
        assert result.code == 0, result.stderr
        sfox, tanx = venues.simulators["sfox"], venues.simulators["tanx"]
        hit = next(a.at for a in sfox.arrivals if a.key == victim)
        after = sorted(a.at - hit for a in sfox.arrivals if a.at > hit)
        print("sfox arrivals after the 429 (s):", [round(t, 3) for t in after[:8]])
        # At most max_in_flight - 1 requests were already under way; they arrive at once.
        early = [t for t in after if t < pause - 0.05]
        assert len(early) <= 3 and all(t < 0.3 for t in early), early
        assert after and after[-1] >= pause, "nothing was sent after the pause"
        # tanX is not paused: it kept sending through sFOX's pause.
        assert any(0.1 < a.at - hit < pause - 0.1 for a in tanx.arrivals)
        rows = attempts_by_order(db)["sfox", victim]
        assert [(r[1], r[2]) for r in rows] == [(429, "transient"), (200, "canceled")]
        assert sfox.requests[victim] == 2
        assert sfox.total_requests == 61
        assert json.loads(result.stdout)["venues"]["sfox"]["canceled"] == 60
        assert json.loads(result.stdout)["venues"]["tanx"]["canceled"] == 200


class TestRetryAfterValues:
    @pytest.mark.parametrize(
        ("retry_after", "cooldown"),
        [
            pytest.param(
                0.0,
                30.0,
                id="zero",
            ),
            pytest.param(
                float("inf"),
                0.2,
                id="inf",
            ),
        ],
    )
    async def test_unusual_retry_after_does_not_stall_the_venue(
        self,
        tmp_path: Path,
        serve_simulators: ServeSimulators,
        audit_url: str,
        retry_after: float,
        cooldown: float,
    ) -> None:
        """A 429 whose Retry-After is 0 (retry at once) or not a number of seconds (`inf`,
        to be ignored in favour of the cooldown) does not stall sFOX: the run finishes well
        within its 2 s deadline, the order canceled on its second attempt; exit 0."""
        plan = FaultPlan(retry_after=retry_after)
        venues = build_venues({"sfox": 10}, faults={"sfox": plan})
        victim = venues.ids("sfox")[2]
        plan.script(victim, Fault.RATE_LIMIT)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 0, "cooldown": cooldown}
            )
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--deadline",
                "2",
                "--json",
                env=cli_env(db),
            )
        stderr_is_clean(result.stderr)
        rows = attempts_by_order(db)["sfox", victim]
        assert rows[0][1:3] == (429, "transient"), rows
        assert result.code == 0, (result.code, json.loads(result.stdout)["outcomes"])
        assert [r[2] for r in rows] == ["transient", "canceled"]


class TestMaxAttempts:
    async def test_exhausted_orders_fail_then_resume_completes_them(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """Five transient answers scripted on three orders (500, a connection dropped before
        and one dropped after the cancel applied) with --max-attempts 3: each makes 3 attempts
        and ends `failed` (exit 1), the others are canceled; a resume retries only those
        three, meets the last two faults, then completes them (the one whose cancel had
        applied as a repeat cancel): exit 0, nothing else sent again."""
        plan = FaultPlan()
        venues = build_venues({"sfox": 30}, faults={"sfox": plan})
        ids = venues.ids("sfox")
        scripted = {ids[3]: Fault.SERVER_ERROR, ids[10]: Fault.DROP, ids[20]: Fault.DROP_AFTER}
        for order_id, fault in scripted.items():
            plan.script(order_id, *[fault] * 5)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        env = cli_env(db)
        sfox = venues.simulators["sfox"]
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=venue_keys()["sfox"])
            first = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "retries",
                "--max-attempts",
                "3",
                "--json",
                env=env,
            )
            stderr_is_clean(first.stderr)
            assert first.code == 1, first.stderr
            summary = json.loads(first.stdout)
            assert summary["status"] == "attention"
            assert summary["outcomes"]["failed"] == 3
            assert summary["outcomes"]["canceled"] == 27
            outcomes = outcomes_by_order(db)
            attempts = attempts_by_order(db)
            for order_id in scripted:
                assert outcomes["sfox", order_id] == "failed"
                assert [r[2] for r in attempts["sfox", order_id]] == ["transient"] * 3
                assert sfox.requests[order_id] == 3
                arrivals = sorted(a.at for a in sfox.arrivals if a.key == order_id)
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                # Backoff doubles from 0.05 s, with jitter of 0.5x to 1.5x.
                assert gaps[0] >= 0.02 and gaps[1] >= 0.045, gaps
            reasons = db_rows(db, "select reason from orders where outcome = 'failed'")
            assert len(reasons) == 3
            assert all(str(r).startswith("gave up after 3 attempts") for (r,) in reasons), reasons

            resumed = await run_cli("resume", "retries", "--json", env=env)
        stderr_is_clean(resumed.stderr)
        assert resumed.code == 0, resumed.stderr
        assert json.loads(resumed.stdout)["status"] == "succeeded"
        outcomes = outcomes_by_order(db)
        attempts = attempts_by_order(db)
        for order_id, fault in scripted.items():
            rows = attempts["sfox", order_id]
            assert [r[0] for r in rows] == [1, 2, 3, 4, 5, 6]
            want = "already_closed" if fault is Fault.DROP_AFTER else "canceled"
            assert [r[2] for r in rows] == ["transient"] * 5 + [want]
            assert outcomes["sfox", order_id] == want
            assert sfox.requests[order_id] == 6
        assert all(sfox.requests[i] == 1 for i in ids if i not in scripted)
        assert sfox.total_requests == 27 + 3 * 6
        assert_arrivals_follow_attempt_rows(db, venues.simulators)
