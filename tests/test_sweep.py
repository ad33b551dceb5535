"""`--all-open`: ZebPay's cancel-all and tanX's bulk cancel by market and side, end to end.

They cancel every open order of the account (or of a market and side), listed or not, so
they are used only when the operator asks; each order still gets one attempt row written
before the request leaves, and orders the input did not list are recorded too.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.tanx import TanxSimulator
from batchcancel.simulators.zebpay import ZebpaySimulator
from batchcancel.venues.zebpay import API_KEY_VAR, API_SECRET_VAR
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)

JWT_ONLY = {k: v for k, v in CREDENTIALS.items() if k not in (API_KEY_VAR, API_SECRET_VAR)}


def zebpay_book() -> tuple[dict[str, OrderState | None], dict[str, OrderState]]:
    """The input (1,500 open, 20 filled, 10 unknown) and 15 open orders it does not list.
    The cancel-all answer is then about 100 kB: it arrives in several segments."""
    listed: dict[str, OrderState | None] = {f"z-{n}": OrderState.OPEN for n in range(1500)}
    listed.update({f"zf-{n}": OrderState.FILLED for n in range(20)})
    listed.update({f"zu-{n}": None for n in range(10)})
    unlisted = {f"manual-{n}": OrderState.OPEN for n in range(15)}
    return listed, unlisted


async def kill(
    tmp_path: Path,
    server: object,
    rows: list[dict[str, str]],
    audit_url: str,
    *extra: str,
    credentials: dict[str, str] | None = None,
    **venues: dict[str, object],
) -> tuple[int, dict[str, object], str]:
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    config = write_venues_toml(tmp_path / "v.toml", server, **venues)  # type: ignore[arg-type]
    result = await run_cli(
        "kill",
        str(orders),
        "--venues-config",
        str(config),
        "--json",
        *extra,
        env=cli_env(audit_url, credentials=credentials or CREDENTIALS),
    )
    summary = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.code, summary, result.stderr


class TestZebpayCancelAll:
    async def test_one_request_cancels_the_book_and_records_every_order(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """One signed DELETE …/order/all; each listed order takes its outcome from it; the
        filled and unknown ones are then cancelled on their own; the 15 orders the input did
        not list are recorded as orders of the run, with their own attempt row."""
        listed, unlisted = zebpay_book()
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({k: v for k, v in listed.items() if v is not None})
        simulator.seed(unlisted)
        rows = [{"venue": "zebpay", "order_id": k, "symbol": "BTCUSDT"} for k in listed]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path, server, rows, audit_url, "--all-open", zebpay={"rate_limit": 0}
            )
        assert code == 1, stderr  # the unknown ids are not_found
        assert "--all-open: cancel-all at zebpay" in stderr
        assert "zebpay: cancel-all (--all-open) also cancelled 15 orders" in stderr
        outcomes = summary["outcomes"]
        assert isinstance(outcomes, dict)
        assert (outcomes["canceled"], outcomes["already_closed"], outcomes["not_found"]) == (
            1515,
            20,
            10,
        )
        assert summary["orders"] == 1545
        assert simulator.bulk_requests == 1
        assert all(simulator.book[k] is OrderState.CANCELED for k in unlisted)
        singles = [k for k, v in listed.items() if v is not OrderState.OPEN]
        assert dict(simulator.requests) == {k: 1 for k in singles}
        assert simulator.total_requests == 1 + len(singles)
        kinds = dict(db_rows(audit_url, "select kind, count(*) from attempts group by kind"))
        assert kinds == {"bulk": 1545, "cancel": 30}
        extras = db_rows(
            audit_url,
            "select o.order_id, o.seq, o.outcome, o.reason, a.kind, a.verdict, a.http_status "
            "from orders o join attempts a on a.order_pk = o.pk where o.seq = 0 "
            "order by o.order_id",
        )
        assert [e[0] for e in extras] == sorted(unlisted)
        assert {e[2:3] + e[4:] for e in extras} == {("canceled", "bulk", "canceled", 200)}
        assert all(e[3].startswith("not in the input") for e in extras)
        options = json.loads(db_rows(audit_url, "select options from runs")[0][0])
        assert options["all_open"] is True
        status = await run_cli("status", str(summary["run_id"]), env=cli_env(audit_url))
        assert "all-open: cancel-all endpoints allowed" in status.stdout
        # Every input order's bulk attempt was written before the request left.
        sent = db_rows(
            audit_url,
            "select count(distinct a.sent_at) from attempts a join orders o on o.pk = a.order_pk "
            "where a.kind = 'bulk' and o.seq > 0",
        )
        assert sent == [(1,)]

    async def test_a_book_larger_than_one_write_ahead_slice(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """6,000 orders: their attempt rows are committed in slices of 5,000, all before the
        one cancel-all leaves."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({f"s-{n}": OrderState.OPEN for n in range(6000)})
        rows = [{"venue": "zebpay", "order_id": f"s-{n}"} for n in range(6000)]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path, server, rows, audit_url, "--all-open", zebpay={"rate_limit": 0}
            )
        assert code == 0, stderr
        assert summary["outcomes"]["canceled"] == 6000  # type: ignore[index]
        assert (simulator.bulk_requests, simulator.total_requests) == (1, 1)
        assert db_rows(
            audit_url, "select kind, count(*), count(distinct sent_at) from attempts group by kind"
        ) == [("bulk", 6000, 1)]

    async def test_with_a_jwt(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The Bearer form of the same request is accepted and cancels the book."""
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({f"j-{n}": OrderState.OPEN for n in range(40)})
        rows = [{"venue": "zebpay", "order_id": f"j-{n}"} for n in range(40)]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path,
                server,
                rows,
                audit_url,
                "--all-open",
                credentials=JWT_ONLY,
                zebpay={"rate_limit": 0},
            )
        assert code == 0, stderr
        assert summary["outcomes"]["canceled"] == 40  # type: ignore[index]
        assert (simulator.bulk_requests, simulator.total_requests) == (1, 1)

    async def test_not_used_without_all_open(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`kill` alone never cancels what the input does not list."""
        listed, unlisted = zebpay_book()
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({k: v for k, v in listed.items() if v is not None})
        simulator.seed(unlisted)
        rows = [{"venue": "zebpay", "order_id": k} for k in listed]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path, server, rows, audit_url, zebpay={"rate_limit": 0}
            )
        assert code == 1, stderr
        assert simulator.bulk_requests == 0
        assert all(simulator.book[k] is OrderState.OPEN for k in unlisted)
        assert summary["orders"] == len(listed)

    @pytest.mark.parametrize(
        ("faults", "sweeps", "singles"),
        [
            pytest.param([Fault.SERVER_ERROR], 2, 0, id="500-then-ok"),
            pytest.param([Fault.RATE_LIMIT], 2, 0, id="429-then-ok"),
            pytest.param([Fault.SERVER_ERROR] * 3, 3, 50, id="500-three-times"),
        ],
    )
    async def test_a_failed_cancel_all_is_retried_then_falls_back_to_single_cancels(
        self,
        tmp_path: Path,
        serve_simulators: ServeSimulators,
        audit_url: str,
        faults: list[Fault],
        sweeps: int,
        singles: int,
    ) -> None:
        """A transient answer to the cancel-all: it is sent again (kill allows 3 attempts);
        when every attempt fails, each order is cancelled on its own instead."""
        plan = FaultPlan(by_request=dict(enumerate(faults, 1)), retry_after=0.1)
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"f-{n}": OrderState.OPEN for n in range(50)})
        rows = [{"venue": "zebpay", "order_id": f"f-{n}"} for n in range(50)]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path,
                server,
                rows,
                audit_url,
                "--all-open",
                zebpay={"rate_limit": 0, "backoff": 0.05},
            )
        assert code == 0, stderr
        assert summary["outcomes"]["canceled"] == 50  # type: ignore[index]
        assert simulator.total_requests == sweeps + singles
        assert sum(simulator.requests.values()) == singles
        bulk = db_rows(
            audit_url, "select verdict, count(*) from attempts where kind = 'bulk' group by verdict"
        )
        assert bulk == [("canceled" if not singles else "transient", 50)]

    async def test_refused_credentials_stop_the_venue_after_one_request(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A 401 to the cancel-all halts ZebPay: nothing else is sent, every order skipped."""
        simulator = ZebpaySimulator(
            credentials={**CREDENTIALS, "BATCHCANCEL_ZEBPAY_JWT": "another-jwt"}, rate_limit=None
        )
        simulator.seed({f"r-{n}": OrderState.OPEN for n in range(30)})
        rows = [{"venue": "zebpay", "order_id": f"r-{n}"} for n in range(30)]
        async with serve_simulators({"zebpay": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path,
                server,
                rows,
                audit_url,
                "--all-open",
                credentials=JWT_ONLY,
                zebpay={"rate_limit": 0},
            )
        assert code == 1, stderr
        assert summary["outcomes"]["skipped"] == 30  # type: ignore[index]
        assert simulator.total_requests == 1
        assert db_rows(audit_url, "select verdict, count(*) from attempts group by verdict") == [
            ("auth_refused", 30)
        ]


class TestTanxBulkCancel:
    async def test_market_and_side_pages_cancel_only_that_market(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """250 btcusdt orders (both sides) go in pages of 100 per side; an ethusdt order the
        input does not name is left alone; a row without a symbol is cancelled on its own."""
        simulator = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
        book = {str(1000 + n): OrderState.OPEN for n in range(200)}
        book.update({str(2000 + n): OrderState.OPEN_ASYNC for n in range(50)})
        simulator.seed(book)
        simulator.seed({"7": OrderState.OPEN, "9": OrderState.OPEN})
        simulator.markets["7"] = ("ethusdt", "buy")
        rows = [{"venue": "tanx", "order_id": k, "symbol": "BTC-USDT"} for k in book]
        rows.append({"venue": "tanx", "order_id": "9", "symbol": ""})  # btcusdt, sell
        async with serve_simulators({"tanx": simulator}) as server:
            code, summary, stderr = await kill(
                tmp_path, server, rows, audit_url, "--all-open", tanx={"rate_limit": 0}
            )
        assert code == 0, stderr
        outcomes = summary["outcomes"]
        assert isinstance(outcomes, dict)
        assert (outcomes["canceled"], outcomes["cancel_pending"]) == (201, 50)
        # 125 per side: a full page of 100, then 25.
        assert simulator.bulk_requests == 4
        assert simulator.total_requests == 4  # order 9 went in the sell sweep, like the rest
        assert simulator.book["7"] is OrderState.OPEN
        assert summary["orders"] == 251
        assert db_rows(audit_url, "select count(*) from orders where seq = 0") == [(0,)]
        assert db_rows(audit_url, "select kind, count(*) from attempts group by kind") == [
            ("bulk", 251)
        ]

    async def test_rows_without_a_symbol_are_cancelled_one_by_one(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """No market to name: no bulk cancel at all, every order on its own."""
        simulator = TanxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({str(n): OrderState.OPEN for n in range(1, 31)})  # tanX ids start at 1
        rows = [{"venue": "tanx", "order_id": str(n)} for n in range(1, 31)]
        async with serve_simulators({"tanx": simulator}) as server:
            code, _, stderr = await kill(
                tmp_path, server, rows, audit_url, "--all-open", tanx={"rate_limit": 0}
            )
        assert code == 0, stderr
        assert simulator.bulk_requests == 0
        assert sum(simulator.requests.values()) == 30
        assert db_rows(audit_url, "select kind, count(*) from attempts group by kind") == [
            ("cancel", 30)
        ]


class TestDryRun:
    async def test_plan_counts_bulk_and_cancel_all_requests(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`kill --all-open --dry-run` sends nothing and says how each venue would be done."""
        sfox = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        zebpay = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None)
        rows = [{"venue": "sfox", "order_id": str(n)} for n in range(120)]
        rows += [{"venue": "zebpay", "order_id": f"d-{n}"} for n in range(30)]
        async with serve_simulators({"sfox": sfox, "zebpay": zebpay}) as server:
            code, summary, stderr = await kill(
                tmp_path,
                server,
                rows,
                audit_url,
                "--all-open",
                "--dry-run",
                sfox={"rate_limit": 50},
                zebpay={"rate_limit": 100},
            )
        assert code == 0, stderr
        assert summary["status"] == "planned"
        assert sfox.total_requests == zebpay.total_requests == 0
        assert "sfox: 120 orders in 3 bulk requests at 50 per 10 s = about 1 s" in stderr
        assert "zebpay: 30 orders by cancel-all (--all-open)" in stderr
        options = json.loads(db_rows(audit_url, "select options from runs")[0][0])
        assert (options["all_open"], options["bulk"]) == (True, True)


class TestCrashDuringCancelAll:
    async def test_killed_mid_cancel_all_resumes_order_by_order(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """SIGKILL while the cancel-all is unanswered: every order has its bulk attempt row,
        closed on resume as lost; resume never repeats the cancel-all (it would cancel orders
        placed since) and cancels each order on its own, which finds it already closed."""
        plan = FaultPlan(by_request={1: Fault.SLOW}, slow_seconds=3.0)
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"k-{n}": OrderState.OPEN for n in range(40)})
        orders = write_orders_csv(
            tmp_path / "orders.csv", [{"venue": "zebpay", "order_id": f"k-{n}"} for n in range(40)]
        )
        env = cli_env(audit_url)
        async with serve_simulators({"zebpay": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, zebpay={"rate_limit": 0})
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                "kill",
                str(orders),
                "--venues-config",
                str(config),
                "--all-open",
                "--run-key",
                "crash",
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(2000):  # bounded: at most 20 s
                if simulator.bulk_requests:
                    break
                await asyncio.sleep(0.01)
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.wait_for(process.communicate(), 30)
            assert all(state is OrderState.CANCELED for state in simulator.book.values())
            resumed = await run_cli("resume", "crash", "--json", env=env)
        assert resumed.code == 0, resumed.stderr
        assert json.loads(resumed.stdout)["outcomes"]["already_closed"] == 40
        assert simulator.bulk_requests == 1
        assert sum(simulator.requests.values()) == 40
        kinds = db_rows(
            audit_url,
            "select kind, verdict, count(*) from attempts group by kind, verdict order by kind",
        )
        assert kinds == [("bulk", "transient", 40), ("cancel", "already_closed", 40)]
