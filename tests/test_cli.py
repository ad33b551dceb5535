"""The command line's contract: JSON logs, venues listing, status and report shapes."""

from __future__ import annotations

import json
from pathlib import Path

from batchcancel.report import ATTEMPT_COLUMNS, ORDER_COLUMNS
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)


async def small_run(tmp_path: Path, serve: ServeSimulators, db: str, *extra: str) -> str:
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({str(n): OrderState.OPEN for n in range(1, 31)})
    orders = write_orders_csv(
        tmp_path / "orders.csv", [{"venue": "sfox", "order_id": str(n)} for n in range(1, 31)]
    )
    async with serve({"sfox": simulator}) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
        result = await run_cli(
            *extra,
            "run",
            str(orders),
            "--venues-config",
            str(config),
            "--run-key",
            "r1",
            env=cli_env(db),
        )
    assert result.code == 0, result.stderr
    return result.stderr


class TestCli:
    async def test_json_logs_are_one_object_per_line(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """--log-format json: every stderr line is a JSON object with ts, level and event."""
        stderr = await small_run(tmp_path, serve_simulators, audit_url, "--log-format", "json")
        records = [json.loads(line) for line in stderr.strip().splitlines()]
        assert records
        assert all({"ts", "level", "event"} <= set(r) for r in records)
        planned = [r for r in records if r["event"] == "planned"]
        assert planned and planned[0]["orders"] == {"sfox": 30}

    async def test_status_and_report_shapes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """`status RUN --json` has SPEC's summary keys; `report` keeps SPEC's columns in order,
        as CSV and as one JSON array; no credential anywhere."""
        await small_run(tmp_path, serve_simulators, audit_url)
        env = cli_env(audit_url)
        status = await run_cli("status", "r1", "--json", env=env)
        assert status.code == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["outcomes"]["canceled"] == 30
        assert data["run_key"] == "r1"
        recent = await run_cli("status", env=env)
        assert "r1" in recent.stdout
        for attempts, columns in ((False, ORDER_COLUMNS), (True, ATTEMPT_COLUMNS)):
            flag = ("--attempts",) if attempts else ()
            csv_out = await run_cli("report", "r1", "--format", "csv", *flag, env=env)
            assert csv_out.stdout.splitlines()[0] == ",".join(columns)
            assert len(csv_out.stdout.splitlines()) == 31
            json_out = await run_cli("report", "r1", "--format", "json", *flag, env=env)
            records = json.loads(json_out.stdout)
            assert len(records) == 30 and all(list(r) == list(columns) for r in records)
            for secret in SECRET_VALUES:
                assert secret not in csv_out.stdout + json_out.stdout
        written = tmp_path / "out.csv"
        to_file = await run_cli("report", "r1", "--format", "csv", "-o", str(written), env=env)
        assert to_file.code == 0 and written.read_text().startswith("run_id,venue,order_id")

    async def test_venues_lists_variables_never_values(self, tmp_path: Path) -> None:
        """`venues`: every adapter, its columns and credential variables, set or not."""
        result = await run_cli("venues", env=cli_env(tmp_path / "a.db"))
        assert result.code == 0
        for name in ("sfox", "etna", "crux", "tanx", "zebpay"):
            assert result.stdout.count(f"{name}:") == 1
        assert "BATCHCANCEL_ETNA_APP_KEY (set)" in result.stdout
        for secret in SECRET_VALUES:
            assert secret not in result.stdout
