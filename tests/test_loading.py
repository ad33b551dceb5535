"""Sending starts while a big order list is still loading; a cut-off load is finished later."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from batchcancel.audit.store import AuditStore, OrderToSend, PlannedOrder
from batchcancel.config import load_settings
from batchcancel.drain_types import DrainOptions
from batchcancel.engine import drain
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_venues_toml,
)

ROWS = 100_000  # five loading chunks
VALID = 200  # the first rows; the rest are invalid (never sent), so the run itself is quick


def write_big_csv(path: Path) -> Path:
    lines = ["venue,order_id"]
    lines += [f"sfox,{n}" for n in range(1, VALID + 1)]
    lines += [f"sfox,bad id {n}" for n in range(VALID + 1, ROWS + 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestLoading:
    async def test_first_send_before_last_row_and_interrupted_load_resumes(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The first cancel leaves before every row is recorded; a run killed while loading
        stays `loading`, and the same --run-key loads the rest and sends each order once."""
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({str(n): OrderState.OPEN for n in range(1, VALID + 1)})
        orders = write_big_csv(tmp_path / "big.csv")
        env = cli_env(audit_url)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 40, "period": 1.0}
            )
            args = ("run", str(orders), "--venues-config", str(config), "--run-key", "big")
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "batchcancel",
                *args,
                env=env,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            for _ in range(3000):  # bounded: 30 s
                if simulator.total_requests:
                    break
                await asyncio.sleep(0.005)
            recorded_at_first_send = db_rows(audit_url, "select count(*) from orders")[0][0]
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
            assert simulator.total_requests >= 1
            assert recorded_at_first_send < ROWS
            assert db_rows(audit_url, "select status from runs") == [("loading",)]

            again = await run_cli(*args, "--json", env=env)
        assert again.code == 1, again.stderr  # the invalid rows need attention
        summary = json.loads(again.stdout)
        assert summary["orders"] == ROWS
        assert summary["outcomes"]["invalid"] == ROWS - VALID
        assert summary["outcomes"]["canceled"] + summary["outcomes"]["already_closed"] == VALID
        assert db_rows(audit_url, "select count(distinct seq) from orders") == [(ROWS,)]
        assert simulator.total_requests <= VALID + 32  # in-flight ones may be sent again
        assert all(n <= 2 for n in simulator.requests.values())


class SlowAnswers(AuditStore):
    """The real store, whose look-ups for work answer late, as a busy database does: the query
    runs, then its answer takes DELAY seconds to come back. `looked_empty` is set when a look
    found nothing, so a loader can record rows while that empty answer is on its way."""

    DELAY = 0.3

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.looked_empty = threading.Event()

    def venues_with_work(self, run_id: str, *, to_confirm: bool = False) -> dict[str, int]:
        work = super().venues_with_work(run_id, to_confirm=to_confirm)
        self._answer_late(bool(work))
        return work

    def pending_page(self, *args: Any, **kwargs: Any) -> list[OrderToSend]:
        page = super().pending_page(*args, **kwargs)
        self._answer_late(bool(page))
        return page

    def _answer_late(self, found: bool) -> None:
        if not found:
            self.looked_empty.set()
        time.sleep(self.DELAY)


def planned_sfox(first_seq: int, ids: list[str]) -> list[PlannedOrder]:
    return [PlannedOrder(first_seq + n, "sfox", order_id, "", "") for n, order_id in enumerate(ids)]


class TestLastRowsWhileLooking:
    @pytest.mark.parametrize(
        "first_rows",
        [
            pytest.param("invalid", id="venue-first-seen-in-the-last-rows"),
            pytest.param("sendable", id="lane-already-running"),
        ],
    )
    async def test_rows_recorded_during_an_empty_look_are_sent(
        self, tmp_path: Path, serve_simulators: ServeSimulators, first_rows: str
    ) -> None:
        """The loader records its last rows (and finishes) while a look for work, which found
        none, is still answering: those orders are sent all the same. Before the fix the
        session (or the lane) read "loading is over" after its look and stopped, leaving
        them unsent in a run that reported itself finished."""
        ids = [str(n) for n in range(1, 11)]
        simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
        simulator.seed({order_id: OrderState.OPEN for order_id in ids})
        store = SlowAnswers(f"sqlite:///{tmp_path / 'audit.db'}")
        run_id = store.create_run(
            command="run",
            run_key=None,
            source="test",
            options={},
            reason="",
            command_line="batchcancel run test",
            dry_run=False,
        )
        if first_rows == "invalid":
            first = [PlannedOrder(1, "nosuch", "x", "", "", invalid_reason="unknown venue")]
            last = planned_sfox(2, ids)
        else:
            first, last = planned_sfox(1, ids[:5]), planned_sfox(6, ids[5:])
        store.add_orders(run_id, first)

        def loader(stopping: Callable[[], bool]) -> None:
            store.looked_empty.clear()  # the first rows' own looks came before
            assert store.looked_empty.wait(30), "no look ever came back empty"
            store.add_orders(run_id, last)

        async with serve_simulators({"sfox": simulator}) as server:
            settings = load_settings(
                CREDENTIALS,
                db_url="sqlite://",
                overrides={"sfox": {"base_url": server.url("sfox"), "rate_limit": 0}},
            )
            await drain(store, run_id, settings, DrainOptions(handle_signals=False), loader=loader)
        counts = store.counts(run_id)
        store.close()
        assert counts["sfox"] == {"canceled": 10}, counts
        assert simulator.total_requests == 10
