"""Credentials through the real CLI: a refusal halts one venue at once, the others finish.

A venue that refuses our credentials must receive at most `max_in_flight` requests, its
orders become `skipped` (resumable), the other venues finish and the run exits 1; a resume
with good credentials completes it. A venue whose credential variable is unset is never
contacted. ZebPay's "Invalid or expired timestamp" is a clock blip once, a refusal if repeated.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
from aiohttp import web

from batchcancel.simulators.base import OrderState
from batchcancel.simulators.zebpay import ZebpaySimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.torture_support import (
    assert_arrivals_follow_attempt_rows,
    assert_no_secrets,
    attempts_by_order,
    build_venues,
    db_rows,
    order_fields,
    outcomes_by_order,
    stderr_is_clean,
)

MAX_IN_FLIGHT = 4
# The credential variables whose wrong value makes each venue refuse (all of a venue's).
WRONG = {
    "sfox": {"BATCHCANCEL_SFOX_API_KEY": "sfox-WRONG-key-0001"},
    "etna": {"BATCHCANCEL_ETNA_APP_KEY": "etna-WRONG-appkey-0002"},
    # A wrong HMAC secret: ZebPay answers 400 "Invalid signature".
    "zebpay": {"BATCHCANCEL_ZEBPAY_API_SECRET": "zebpay-WRONG-secret-0005"},
}
KEYS = {"rate_limit": 0, "max_in_flight": MAX_IN_FLIGHT, "backoff": 0.05, "timeout": 5.0}


class TestRefusedCredentials:
    # Three refusal styles: 401, 403 for a wrong app key, 400 "Invalid signature" (a wrong
    # HMAC secret). test_five_venues covers the first run for every venue.
    @pytest.mark.parametrize("bad", ["sfox", "etna", "zebpay"])
    async def test_refusing_venue_halts_others_finish_resume_completes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, bad: str, audit_url: str
    ) -> None:
        """One venue of three refuses the credentials the CLI has: it receives at most
        max_in_flight requests, all its orders end `skipped` with a reason, the other two
        venues cancel everything, exit 1; a resume with the right credentials sends only the
        skipped orders and completes the run (exit 0). No credential, right or wrong, leaks."""
        others = [v for v in ("sfox", "etna", "tanx") if v != bad][:2]
        counts = {bad: 300, others[0]: 40, others[1]: 40}
        venues = build_venues(counts)
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        wrong_env = cli_env(db, credentials={**CREDENTIALS, **WRONG[bad]})
        refusing = venues.simulators[bad]
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, **dict.fromkeys(counts, KEYS))
            first = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--run-key",
                "auth",
                "--json",
                env=wrong_env,
            )
            stderr_is_clean(first.stderr)
            assert first.code == 1, first.stderr
            summary = json.loads(first.stdout)
            assert summary["status"] == "attention"
            print(f"{bad}: {refusing.total_requests} requests before the halt")
            # A range, not a count: the requests already in flight when the first refusal
            # comes back reach the venue too, and there are at most MAX_IN_FLIGHT of them.
            assert 1 <= refusing.total_requests <= MAX_IN_FLIGHT
            assert refusing.auth_refused == refusing.total_requests
            assert summary["venues"][bad]["skipped"] == 300
            for other in others:
                assert venues.simulators[other].total_requests == 40
                assert summary["venues"][other]["skipped"] == 0
                assert (
                    summary["venues"][other]["canceled"]
                    + summary["venues"][other].get("cancel_pending", 0)
                    == 40
                )
            reasons = {
                str(r)
                for (r,) in db_rows(db, "select reason from orders where venue = :v", {"v": bad})
            }
            assert reasons and all("credentials" in r for r in reasons), reasons
            refused_rows = db_rows(
                db,
                "select a.verdict from attempts a join orders o on o.pk = a.order_pk "
                "where o.venue = :v",
                {"v": bad},
            )
            assert refused_rows == [("auth_refused",)] * refusing.total_requests
            sent_before = refusing.total_requests

            second = await run_cli("resume", "auth", "--json", env=cli_env(db))
        stderr_is_clean(second.stderr)
        assert second.code == 0, second.stderr
        done = json.loads(second.stdout)
        assert done["status"] == "succeeded"
        assert done["outcomes"]["skipped"] == 0
        assert refusing.total_requests == 300 + sent_before
        for other in others:
            assert venues.simulators[other].total_requests == 40  # nothing re-sent
        assert all(refusing.requests[order_id] in (1, 2) for order_id in venues.ids(bad))
        assert_arrivals_follow_attempt_rows(db, venues.simulators)
        assert_no_secrets(
            db,
            [first.stdout, first.stderr, second.stdout, second.stderr],
            extra=WRONG[bad].values(),
        )


class TestMissingCredentials:
    async def test_unset_variable_skips_venue_without_contacting_it(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """BATCHCANCEL_TANX_JWT unset and ETNA's token unset: tanX and ETNA receive nothing,
        their orders are `skipped` with a reason naming the missing variable, sFOX finishes,
        exit 1; a resume with the variables set completes the run."""
        venues = build_venues({"sfox": 30, "tanx": 20, "etna": 20})
        orders = write_orders_csv(tmp_path / "orders.csv", venues.rows)
        db = audit_url
        partial = {
            k: v
            for k, v in CREDENTIALS.items()
            if k not in ("BATCHCANCEL_TANX_JWT", "BATCHCANCEL_ETNA_TOKEN")
        }
        async with serve_simulators(venues.simulators) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS, tanx=KEYS, etna=KEYS)
            first = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--json",
                env=cli_env(db, credentials=partial),
            )
            stderr_is_clean(first.stderr)
            assert first.code == 1, first.stderr
            summary = json.loads(first.stdout)
            assert venues.simulators["tanx"].total_requests == 0
            assert venues.simulators["etna"].total_requests == 0
            assert summary["venues"]["sfox"]["canceled"] == 30
            assert summary["venues"]["tanx"]["skipped"] == 20
            assert summary["venues"]["etna"]["skipped"] == 20
            # Each venue's distinct reasons, comma-joined (SQLite's group_concat, for both).
            distinct: dict[str, set[str]] = defaultdict(set)
            for venue, reason in db_rows(db, "select distinct venue, reason from orders"):
                distinct[str(venue)].add(str(reason))
            reasons = {venue: ",".join(sorted(found)) for venue, found in distinct.items()}
            assert "BATCHCANCEL_TANX_JWT" in str(reasons["tanx"]), reasons
            assert "BATCHCANCEL_ETNA_TOKEN" in str(reasons["etna"]), reasons
            assert "BATCHCANCEL_ETNA_APP_KEY" not in str(reasons["etna"]), reasons
            assert db_rows(
                db,
                "select count(*) from attempts a join orders o on o.pk = "
                "a.order_pk where o.venue != 'sfox'",
            ) == [(0,)]
            run_id = summary["run_id"]

            second = await run_cli("resume", run_id, "--json", env=cli_env(db))
        stderr_is_clean(second.stderr)
        assert second.code == 0, second.stderr
        assert json.loads(second.stdout)["outcomes"]["canceled"] == 70
        assert venues.simulators["sfox"].total_requests == 30
        assert venues.simulators["tanx"].total_requests == 20
        assert venues.simulators["etna"].total_requests == 20
        assert_no_secrets(db, [first.stdout, first.stderr, second.stdout, second.stderr])


class SkewedZebpay(ZebpaySimulator):
    """ZebPay whose clock disagrees with ours for scripted orders: their signed timestamp is
    refused (the simulator's own check, with a window no timestamp can meet) `stale[key]`
    times; `always_stale` refuses every signed timestamp."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.stale: dict[str, int] = {}
        self.always_stale = False

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        """The normal check, with the timestamp window closed for stale orders."""
        key = json.loads(body).get("clientOrderId") if body else None
        skew = self.always_stale or self.stale.get(str(key), 0) > 0
        if not skew:
            return super().auth_problem(request, body)
        if not self.always_stale:
            self.stale[str(key)] -= 1
        saved = self.timestamp_window
        self.timestamp_window = -1.0
        try:
            return super().auth_problem(request, body)
        finally:
            self.timestamp_window = saved


class TestZebpayTimestamp:
    async def test_expired_timestamp_once_is_retried(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """One order's signed timestamp is refused once: its next attempt (freshly signed)
        cancels it; the refusal is an attempt row with verdict `transient`; exit 0."""
        simulator = SkewedZebpay(credentials=CREDENTIALS, rate_limit=None)
        ids = [order_fields("zebpay", n)["order_id"] for n in range(20)]
        simulator.seed(dict.fromkeys(ids, OrderState.OPEN))
        simulator.stale[ids[5]] = 1
        orders = write_orders_csv(
            tmp_path / "orders.csv",
            [{"venue": "zebpay", **order_fields("zebpay", n)} for n in range(20)],
        )
        db = audit_url
        async with serve_simulators({"zebpay": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, zebpay=KEYS)
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        stderr_is_clean(result.stderr)
        assert result.code == 0, result.stderr
        rows = attempts_by_order(db)["zebpay", ids[5]]
        assert [(r[1], r[2]) for r in rows] == [(400, "transient"), (200, "canceled")]
        assert "timestamp" in str(rows[0][3]).lower()
        assert simulator.total_requests == 21
        assert outcomes_by_order(db)["zebpay", ids[5]] == "canceled"

    async def test_repeated_expired_timestamp_is_a_refusal(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The same order's timestamp refused twice in a row is treated as refused
        credentials: ZebPay is halted, the order and every unsent one `skipped`, exit 1; a
        resume once the clock agrees completes the run."""
        simulator = SkewedZebpay(credentials=CREDENTIALS, rate_limit=None)
        ids = [order_fields("zebpay", n)["order_id"] for n in range(200)]
        simulator.seed(dict.fromkeys(ids, OrderState.OPEN))
        simulator.stale[ids[0]] = 2
        orders = write_orders_csv(
            tmp_path / "orders.csv",
            [{"venue": "zebpay", **order_fields("zebpay", n)} for n in range(200)],
        )
        db = audit_url
        env = cli_env(db)
        async with serve_simulators({"zebpay": simulator}) as server:
            # 20 per 1 s: the retry (due after ~0.05 s) waits for a rate slot behind 19 others.
            keys = {**KEYS, "rate_limit": 20, "period": 1.0, "max_in_flight": 2}
            config = write_venues_toml(tmp_path / "v.toml", server, zebpay=keys)
            first = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                "--json",
                "--run-key",
                "z",
                env=env,
            )
            stderr_is_clean(first.stderr)
            assert first.code == 1, first.stderr
            summary = json.loads(first.stdout)
            rows = attempts_by_order(db)["zebpay", ids[0]]
            # The second refusal's verdict label: see test_repeated_timestamp_is_recorded_...
            assert [r[1] for r in rows] == [400, 400] and rows[0][2] == "transient", rows
            assert "timestamp" in str(rows[1][3]).lower(), rows
            outcomes = outcomes_by_order(db)
            assert outcomes["zebpay", ids[0]] == "skipped"
            sent = simulator.total_requests
            print(f"zebpay: {sent} requests before the halt")
            assert sent < 40
            assert summary["outcomes"]["skipped"] == 200 - (sent - 2)
            assert summary["outcomes"]["canceled"] == sent - 2

            # Resume unthrottled (another venues config), so the rest goes in a moment.
            fast = write_venues_toml(tmp_path / "fast.toml", server, zebpay=KEYS)
            second = await run_cli("resume", "z", "--venues-config", str(fast), "--json", env=env)
        stderr_is_clean(second.stderr)
        assert second.code == 0, second.stderr
        assert json.loads(second.stdout)["outcomes"]["canceled"] == 200
        assert simulator.total_requests == 200 + 2
        assert_no_secrets(db, [first.stdout, first.stderr, second.stdout, second.stderr])

    async def test_repeated_timestamp_is_recorded_as_auth_refused(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The attempt whose repeated timestamp refusal halted ZebPay is audited with verdict
        `auth_refused` (SPEC: the verdict column says how the answer was treated)."""
        simulator = SkewedZebpay(credentials=CREDENTIALS, rate_limit=None)
        ids = [order_fields("zebpay", n)["order_id"] for n in range(5)]
        simulator.seed(dict.fromkeys(ids, OrderState.OPEN))
        simulator.stale[ids[0]] = 2
        orders = write_orders_csv(
            tmp_path / "orders.csv",
            [{"venue": "zebpay", **order_fields("zebpay", n)} for n in range(5)],
        )
        db = audit_url
        async with serve_simulators({"zebpay": simulator}) as server:
            keys = {**KEYS, "max_in_flight": 1}
            config = write_venues_toml(tmp_path / "v.toml", server, zebpay=keys)
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=cli_env(db)
            )
        assert result.code == 1, result.stderr
        assert outcomes_by_order(db)["zebpay", ids[0]] == "skipped"
        rows = attempts_by_order(db)["zebpay", ids[0]]
        assert [r[2] for r in rows] == ["transient", "auth_refused"]
