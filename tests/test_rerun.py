"""A re-run with a --run-key is a resume in every respect, and a dry run sends nothing, ever.

Airflow retries a task with the same run key; an operator checks a key with --dry-run before
running it for real. Neither may send what the run's own record says not to: a dry run on
an existing key reports what a resume would send and changes nothing; a re-run with the key
keeps the run's recorded options and never repeats a cancel-all once one has gone out.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from batchcancel.simulators.base import Fault, FaultPlan, OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.simulators.zebpay import ZebpaySimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)

AUDIT_TABLES = ("runs", "sessions", "orders", "attempts", "lanes", "requests")


def audit_snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every audit table, in a fixed order: what "changes nothing" compares."""
    return {
        table: sorted(db_rows(url, f"select * from {table}"), key=repr) for table in AUDIT_TABLES
    }


def sfox_orders(tmp_path: Path, count: int) -> Path:
    rows = [{"venue": "sfox", "order_id": f"s-{n}"} for n in range(count)]
    return write_orders_csv(tmp_path / "orders.csv", rows)


class TestDryRunOnAnExistingKey:
    async def test_a_second_dry_run_sends_nothing_and_changes_nothing(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """run --dry-run --run-key K twice (and kill --dry-run): the second used to resume
        run K and send every cancel. Now each reports what a resume would send, per venue,
        and the audit database is byte for byte what it was."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({f"s-{n}": OrderState.OPEN for n in range(12)})
        orders = sfox_orders(tmp_path, 12)
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            common = (str(orders), "--venues-config", str(config), "--run-key", "K", "--json")
            first = await run_cli("run", *common, "--dry-run", env=env)
            assert first.code == 0, first.stderr
            before = audit_snapshot(audit_url)
            for command in ("run", "kill", "run"):
                again = await run_cli(command, *common, "--dry-run", env=env)
                assert again.code == 0, again.stderr
                assert json.loads(again.stdout)["status"] == "planned"
                assert "a resume would send 12 orders (sfox 12)" in again.stderr
                assert "nothing sent, nothing changed" in again.stderr
                assert audit_snapshot(audit_url) == before
            assert simulator.total_requests == 0
            # The key still resumes for real when asked without --dry-run.
            real = await run_cli("run", *common, env=env)
        assert real.code == 0, real.stderr
        assert simulator.total_requests == 12

    async def test_a_dry_run_on_a_run_with_resumable_orders_reports_them(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A real run left two orders failed; a dry run with its key names them and sends
        neither; the run's status and sessions stay as they were."""
        plan = FaultPlan().script("s-0", Fault.SERVER_ERROR).script("s-1", Fault.SERVER_ERROR)
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"s-{n}": OrderState.OPEN for n in range(6)})
        orders = sfox_orders(tmp_path, 6)
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            common = (str(orders), "--venues-config", str(config), "--run-key", "F")
            first = await run_cli("run", *common, "--max-attempts", "1", env=env)
            assert first.code == 1, first.stderr
            sent = simulator.total_requests
            before = audit_snapshot(audit_url)
            dry = await run_cli("kill", *common, "--dry-run", env=env)
        assert dry.code == 0, dry.stderr
        assert "a resume would send 2 orders (sfox 2)" in dry.stderr
        assert simulator.total_requests == sent
        assert audit_snapshot(audit_url) == before


class TestRerunWithAKeyIsAResume:
    async def test_three_tries_of_an_all_open_kill_send_one_cancel_all(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """What an Airflow retry does: the same kill --all-open --run-key three times. The
        cancel-all went out three times, cancelling orders placed after the first try, and
        orders already final were recorded again as "not in the input". It goes out once."""
        # z-gone is unknown to the venue and meets a 500 on each try: the run stays resumable.
        plan = FaultPlan().script("z-gone", *[Fault.SERVER_ERROR] * 3)
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"z-{n}": OrderState.OPEN for n in range(20)})
        simulator.seed({"manual-0": OrderState.OPEN})  # not in the input
        rows = [{"venue": "zebpay", "order_id": f"z-{n}", "symbol": "BTCUSDT"} for n in range(20)]
        rows.append({"venue": "zebpay", "order_id": "z-gone", "symbol": "BTCUSDT"})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        env = cli_env(audit_url)
        async with serve_simulators({"zebpay": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, zebpay={"rate_limit": 0, "backoff": 0.05}
            )
            common = (str(orders), "--venues-config", str(config), "--all-open", "--run-key")
            codes = []
            for attempt in range(3):
                # Orders the runaway places between tries: not ours to cancel.
                simulator.seed({f"later-{attempt}": OrderState.OPEN})
                result = await run_cli("kill", *common, "R", "--max-attempts", "1", env=env)
                codes.append(result.code)
        assert simulator.bulk_requests == 1
        assert simulator.book["later-1"] is OrderState.OPEN
        assert simulator.book["later-2"] is OrderState.OPEN
        swept = db_rows(audit_url, "select order_id from orders where seq = 0 order by order_id")
        assert swept == [("later-0",), ("manual-0",)]
        assert db_rows(audit_url, "select count(*) from runs") == [(1,)]
        assert codes == [1, 1, 1]  # z-gone failed each time: resumable
        assert db_rows(audit_url, "select count(*) from requests where kind = 'sweep'") == [(1,)]

    async def test_a_rerun_keeps_the_recorded_options(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A run recorded without --all-open: a re-run of its key that adds --all-open still
        sends no cancel-all (the run's recorded options hold), as `resume` would."""
        plan = FaultPlan().script("z-0", Fault.SERVER_ERROR)
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"z-{n}": OrderState.OPEN for n in range(5)})
        simulator.seed({"manual-0": OrderState.OPEN})
        rows = [{"venue": "zebpay", "order_id": f"z-{n}", "symbol": "BTCUSDT"} for n in range(5)]
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        env = cli_env(audit_url)
        async with serve_simulators({"zebpay": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, zebpay={"rate_limit": 0})
            common = (str(orders), "--venues-config", str(config), "--run-key", "O")
            first = await run_cli("run", *common, "--max-attempts", "1", env=env)
            assert first.code == 1, first.stderr
            again = await run_cli("run", *common, "--all-open", "--json", env=env)
        assert again.code == 0, again.stderr
        assert "recorded options" in again.stderr
        assert simulator.bulk_requests == 0
        assert simulator.book["manual-0"] is OrderState.OPEN
        options = json.loads(db_rows(audit_url, "select options from runs")[0][0])
        assert options["all_open"] is False


class TestEveryCancelAllRequestIsRecorded:
    async def test_a_retried_cancel_all_has_a_record_per_request(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """A ZebPay cancel-all answered 500, then 200: both requests reached the venue (the
        first may well have cancelled the book), so each has its own record, in order."""
        plan = FaultPlan(by_request={1: Fault.SERVER_ERROR}, retry_after=0.1)
        simulator = ZebpaySimulator(credentials=CREDENTIALS, rate_limit=None, faults=plan)
        simulator.seed({f"z-{n}": OrderState.OPEN for n in range(10)})
        rows = [{"venue": "zebpay", "order_id": f"z-{n}"} for n in range(10)]
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        async with serve_simulators({"zebpay": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, zebpay={"rate_limit": 0, "backoff": 0.05}
            )
            result = await run_cli(
                "kill", str(orders), "--venues-config", str(config), "--all-open",
                env=cli_env(audit_url),
            )  # fmt: skip
        assert result.code == 0, result.stderr
        assert simulator.total_requests == 2  # the 500, then the cancel-all that answered
        recorded = db_rows(
            audit_url,
            "select venue, kind, http_status, verdict from requests order by pk",
        )
        assert recorded == [
            ("zebpay", "sweep", 500, "transient"),
            ("zebpay", "sweep", 200, "answered"),
        ]
        times = db_rows(audit_url, "select sent_at, answered_at from requests order by pk")
        assert times[0][1] <= times[1][0]  # the retry was sent after the first answer


async def wait_reading_stdin(pid: int) -> None:
    """Until process `pid` is blocked in read(0, ...) (Linux: /proc/PID/syscall); 60 s at most."""
    for _ in range(6000):
        try:
            fields = Path(f"/proc/{pid}/syscall").read_text().split()
        except OSError:
            fields = []
        if fields[:2] == ["0", "0x0"]:  # syscall 0 is read on x86_64, its fd is 0
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"process {pid} never read its stdin")


class TestTheSameNewKeyAtOnce:
    async def test_two_processes_starting_one_new_key_make_one_run(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """Two `run --run-key K` processes (two workers, a retry overlapping its first try)
        both find no run K, then both record it: one used to die on a raw unique-constraint
        error. Now the second joins run K (on SQLite, where one process works a run, it says
        which process holds it), and every order is cancelled exactly once."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({f"s-{n}": OrderState.OPEN for n in range(40)})
        text = sfox_orders(tmp_path, 40).read_bytes()
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            args = ("run", "-", "--venues-config", str(config), "--run-key", "K", "--json")
            processes = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "batchcancel",
                    *args,
                    env=env,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
                for _ in range(2)
            ]
            # Both look the key up before they read stdin: hold the input back until both
            # are blocked reading it, then give it to both at once.
            for process in processes:
                await wait_reading_stdin(process.pid)
            outputs = await asyncio.gather(
                *(asyncio.wait_for(p.communicate(text), 120) for p in processes)
            )
        errors = [err.decode() for _, err in outputs]
        for err in errors:
            assert "unique" not in err.lower() and "duplicate key" not in err.lower(), err
            assert "internal error" not in err, err
        assert db_rows(audit_url, "select count(*) from runs") == [(1,)]
        assert db_rows(audit_url, "select count(*) from orders") == [(40,)]
        assert max(simulator.requests.values()) == 1
        assert sum(simulator.requests.values()) == 40
        joined = [e for e in errors if "joining it as a resume" in e]
        assert len(joined) == 1, errors
        codes = sorted(p.returncode for p in processes)
        if audit_url.startswith("sqlite"):
            assert codes[0] == 0, errors
            # the joiner finds the run locked by the process that created it (or done)
            last = joined[0].splitlines()[-1]
            assert codes[1] == 0 or re.search(r"by (another )?process", last), errors
        else:
            assert codes == [0, 0], errors
        assert db_rows(audit_url, "select status from runs") == [("succeeded",)]
