"""The command line's contract, in process (click's CliRunner): exit codes, the `--json`
summary's keys, JSON logs, the venues listing, status and report shapes, and what a re-run
with a run key does. Signals, crashes and torture stay subprocess tests (test_signals.py,
test_crash_torture.py); these need neither.

The simulators serve from a thread of their own (serve_in_thread), since the command runs
its own event loop in the test's thread.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from batchcancel.audit.records import RunInfo
from batchcancel.cli import cli
from batchcancel.report import ATTEMPT_COLUMNS, ORDER_COLUMNS
from batchcancel.runs import Given, RunRequest, recorded_drain_options
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.server import SimulatorServer, serve_in_thread
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import CREDENTIALS, SECRET_VALUES, write_orders_csv, write_venues_toml

SUMMARY_KEYS = [
    "run_id",
    "run_key",
    "status",
    "orders",
    "outcomes",
    "venues",
    "elapsed_s",
    "digest",
]
ORDERS = 30


def invoke(*args: str, db: str) -> Result:
    """`batchcancel ARGS` in process, with our credentials and audit database and none of
    the BATCHCANCEL_* variables of the environment the tests run in."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("BATCHCANCEL_")}
    env.update(CREDENTIALS)
    env["BATCHCANCEL_DB"] = db
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def sfox() -> Iterator[tuple[SfoxSimulator, SimulatorServer]]:
    """An unthrottled sFOX simulator with orders 1..30 open."""
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({str(n): OrderState.OPEN for n in range(1, ORDERS + 1)})
    with serve_in_thread({"sfox": simulator}) as server:
        yield simulator, server


def _files(tmp_path: Path, server: SimulatorServer, extra: list[Mapping[str, str]]) -> list[str]:
    rows = [{"venue": "sfox", "order_id": str(n)} for n in range(1, ORDERS + 1)]
    orders = write_orders_csv(tmp_path / "orders.csv", rows + extra)
    config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
    return [str(orders), "--venues-config", str(config)]


class TestRunContract:
    """`run` and `kill`: SPEC's exit codes and the `--json` summary."""

    def test_run_json_is_specs_summary_and_exits_0(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """--json prints one object with exactly SPEC's keys; every order canceled: exit 0."""
        simulator, server = sfox
        files = _files(tmp_path, server, [])
        result = invoke("run", *files, "--run-key", "r1", "--json", db=audit_url)
        assert result.exit_code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert list(summary) == SUMMARY_KEYS
        assert summary["status"] == "succeeded" and summary["run_key"] == "r1"
        assert summary["orders"] == ORDERS and summary["outcomes"]["canceled"] == ORDERS
        assert summary["venues"]["sfox"]["canceled"] == ORDERS
        assert all(state is not OrderState.OPEN for state in simulator.book.values())

    def test_a_rerun_with_the_key_resumes_and_sends_nothing_final_again(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """The same --run-key again is a resume of the same run (SPEC), not a new run: it
        says so, reads no source, and exits 0 with the same run id."""
        _, server = sfox
        files = _files(tmp_path, server, [])
        first = invoke("run", *files, "--run-key", "k", "--json", db=audit_url)
        again = invoke("run", *files, "--run-key", "k", "--json", db=audit_url)
        assert (first.exit_code, again.exit_code) == (0, 0), again.stderr
        assert json.loads(again.stdout)["run_id"] == json.loads(first.stdout)["run_id"]
        assert "resuming it with its recorded options" in again.stderr

    def test_dry_run_with_an_invalid_row_exits_1_and_sends_nothing(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """A dry run plans and estimates, sends nothing; an invalid row makes it exit 1. A
        dry run on the same key then says what a resume would send, and changes nothing."""
        simulator, server = sfox
        files = _files(tmp_path, server, [{"venue": "nowhere", "order_id": "9"}])
        result = invoke("run", *files, "--run-key", "d", "--dry-run", "--json", db=audit_url)
        assert result.exit_code == 1, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "planned" and summary["outcomes"]["invalid"] == 1
        assert "would cancel 30 orders (sfox 30); 1 invalid" in result.stderr
        assert "sfox: 30 orders, unthrottled" in result.stderr
        again = invoke("run", *files, "--run-key", "d", "--dry-run", db=audit_url)
        assert again.exit_code == 1
        assert "a resume would send 30 orders (sfox 30)" in again.stderr
        assert all(state is OrderState.OPEN for state in simulator.book.values())

    def test_kill_records_its_defaults(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """`kill` records SPEC's kill defaults (3 attempts, a 60 s deadline, bulk on), which
        `status --json` shows under options."""
        _, server = sfox
        files = _files(tmp_path, server, [])
        result = invoke("kill", *files, "--run-key", "kk", db=audit_url)
        assert result.exit_code == 0, result.stderr
        status = json.loads(invoke("status", "kk", "--json", db=audit_url).stdout)
        options = status["options"]
        assert (options["max_attempts"], options["deadline"], options["bulk"]) == (3, 60.0, True)

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["run"], "give SOURCE (a CSV path or -), --query with --source-db, or --from-venues"),
            (["run", "--query", "select 1"], "--query needs --source-db URL"),
            (["run", "-", "--venue", "nowhere"], "unknown venue"),
            (["resume", "no-such-run"], "no-such-run"),
            (["status", "no-such-run"], "no-such-run"),
        ],
    )
    def test_usage_and_unknown_runs_exit_2_with_one_line(
        self, tmp_path: Path, args: list[str], message: str
    ) -> None:
        """A wrong option or an unknown run: one `batchcancel: error:` line, exit 2."""
        result = invoke(*args, db=f"sqlite:///{tmp_path / 'a.db'}")
        assert result.exit_code == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error: ")
        assert message in lines[0]


class TestCli:
    """Logs, listings and reports."""

    def test_json_logs_are_one_object_per_line(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """--log-format json: every stderr line is a JSON object with ts, level and event."""
        _, server = sfox
        files = _files(tmp_path, server, [])
        result = invoke("--log-format", "json", "run", *files, "--run-key", "r1", db=audit_url)
        assert result.exit_code == 0, result.stderr
        records = [json.loads(line) for line in result.stderr.strip().splitlines()]
        assert records
        assert all({"ts", "level", "event"} <= set(r) for r in records)
        planned = [r for r in records if r["event"] == "planned"]
        assert planned and planned[0]["orders"] == {"sfox": 30}

    def test_status_and_report_shapes(
        self, tmp_path: Path, sfox: tuple[SfoxSimulator, SimulatorServer], audit_url: str
    ) -> None:
        """`status RUN --json` has SPEC's summary keys; `report` keeps SPEC's columns in order,
        as CSV and as one JSON array; no credential anywhere."""
        _, server = sfox
        run = invoke("run", *_files(tmp_path, server, []), "--run-key", "r1", db=audit_url)
        assert run.exit_code == 0, run.stderr
        status = invoke("status", "r1", "--json", db=audit_url)
        assert status.exit_code == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["outcomes"]["canceled"] == 30
        assert data["run_key"] == "r1"
        assert "r1" in invoke("status", db=audit_url).stdout
        for attempts, columns in ((False, ORDER_COLUMNS), (True, ATTEMPT_COLUMNS)):
            flag = ("--attempts",) if attempts else ()
            csv_out = invoke("report", "r1", "--format", "csv", *flag, db=audit_url).stdout
            assert csv_out.splitlines()[0] == ",".join(columns)
            assert len(csv_out.splitlines()) == 31
            json_out = invoke("report", "r1", "--format", "json", *flag, db=audit_url).stdout
            records = json.loads(json_out)
            assert len(records) == 30 and all(list(r) == list(columns) for r in records)
            for secret in SECRET_VALUES:
                assert secret not in csv_out + json_out
        written = tmp_path / "out.csv"
        to_file = invoke("report", "r1", "--format", "csv", "-o", str(written), db=audit_url)
        assert to_file.exit_code == 0 and written.read_text().startswith("run_id,venue,order_id")

    def test_venues_lists_variables_never_values(self, tmp_path: Path) -> None:
        """`venues`: every adapter, its columns and credential variables, set or not."""
        result = invoke("venues", db=f"sqlite:///{tmp_path / 'a.db'}")
        assert result.exit_code == 0
        for name in ("sfox", "etna", "crux", "tanx", "zebpay"):
            assert result.stdout.count(f"{name}:") == 1
        assert "BATCHCANCEL_ETNA_APP_KEY (set)" in result.stdout
        for secret in SECRET_VALUES:
            assert secret not in result.stdout


def _run_info(command: str, options: Mapping[str, object]) -> RunInfo:
    now = datetime.now(UTC)
    return RunInfo("r", "k", command, "attention", False, "x.csv", "", 1, 0, now, None, options)


class TestRecordedOptions:
    """What a run records (RunRequest.to_record) is what a resume restores."""

    def test_a_resume_restores_what_the_run_recorded(self) -> None:
        """bulk, all-open, confirm, its timeout and the attempts come back; the deadline and
        the lease are the resume's own; a kill resumes claiming every lane."""
        request = RunRequest.of(
            "kill",
            Given(max_attempts=4, lease=12.0),
            source="x.csv",
            all_open=True,
            confirm=True,
            confirm_timeout=7.0,
        )
        drain, confirm = recorded_drain_options(
            _run_info("kill", request.to_record()), deadline=9.0, max_attempts=None, lease=40.0
        )
        assert (drain.bulk, drain.all_open, drain.claim_all) == (True, True, True)
        assert (drain.max_attempts, drain.deadline, drain.lease) == (4, 9.0, 40.0)
        assert confirm is not None and (confirm.deadline, confirm.max_attempts) == (7.0, 4)

    def test_a_plain_run_restores_no_confirm_and_no_bulk(self) -> None:
        """A run without --bulk or --confirm resumes without them, with 5 attempts."""
        request = RunRequest.of("run", Given(), source="x.csv")
        drain, confirm = recorded_drain_options(
            _run_info("run", request.to_record()), deadline=None, max_attempts=None, lease=30.0
        )
        assert (drain.bulk, drain.all_open, drain.claim_all, drain.max_attempts) == (
            False,
            False,
            False,
            5,
        )
        assert confirm is None
