"""Live progress: plain lines when stderr is not a terminal, a rich table on a terminal."""

from __future__ import annotations

import asyncio
import io
import json
import os
import pty
import sys
import threading
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from batchcancel.drain_types import LaneView
from batchcancel.progress import Progress
from batchcancel.redact import Redactor
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

SFOX_KEY = CREDENTIALS["BATCHCANCEL_SFOX_API_KEY"]


async def setup(tmp_path: Path, server_factory: ServeSimulators) -> tuple[SfoxSimulator, Path]:
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({str(n): OrderState.OPEN for n in range(1, 61)})
    orders = write_orders_csv(
        tmp_path / "orders.csv", [{"venue": "sfox", "order_id": str(n)} for n in range(1, 61)]
    )
    return simulator, orders


class EchoingSfox(SfoxSimulator):
    """Refuses every request, quoting the Authorization header it got in the 401 body."""

    def auth_problem(self, request: web.Request, body: bytes) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        return web.json_response({"error": f"Unauthorized: {header} is not known"}, status=401)


async def run_on_terminal(*args: str, env: Mapping[str, str]) -> tuple[int, str, bytes]:
    """`batchcancel ARGS` with stderr on a pseudo-terminal: exit code, screen, stdout."""
    primary, secondary = pty.openpty()
    chunks: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                data = os.read(primary, 4096)
            except OSError:  # the other end closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "batchcancel",
        *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=secondary,
    )
    os.close(secondary)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    reader.join(timeout=10)
    os.close(primary)
    assert process.returncode is not None
    return process.returncode, b"".join(chunks).decode(errors="replace"), out


class TestProgress:
    async def test_plain_lines_when_not_a_terminal(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """Not a terminal (Airflow logs): plain `progress <venue>: done/total` lines."""
        simulator, orders = await setup(tmp_path, serve_simulators)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 20, "period": 1.0}
            )
            result = await run_cli(
                "run",
                str(orders),
                "--venues-config",
                str(config),
                env=cli_env(tmp_path / "a.db"),
            )
        assert result.code == 0, result.stderr
        lines = [x for x in result.stderr.splitlines() if x.startswith("progress sfox: ")]
        assert len(lines) >= 2  # at the start, then every few seconds
        assert "/60 done" in lines[-1] and "/s" in lines[-1]

    async def test_live_table_on_a_terminal(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """On a pseudo-terminal the rich table renders (venue, done/total) without error."""
        simulator, orders = await setup(tmp_path, serve_simulators)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(
                tmp_path / "v.toml", server, sfox={"rate_limit": 30, "period": 1.0}
            )
            env = {**cli_env(tmp_path / "a.db"), "TERM": "xterm", "COLUMNS": "120"}
            code, screen, out = await run_on_terminal(
                "run", str(orders), "--venues-config", str(config), env=env
            )
        assert code == 0, screen
        assert "done/total" in screen and "sfox" in screen
        assert "Traceback" not in screen
        assert "60/60" in screen
        assert b"canceled 60" in out


class TestRedactedProgress:
    async def test_live_table_hides_an_echoed_credential(
        self, tmp_path: Path, serve_simulators: ServeSimulators
    ) -> None:
        """sFOX quotes the Bearer key in its 401: the live table's `stopped: credentials
        refused: ...` state and the summary show the reason, never the key."""
        simulator = EchoingSfox(credentials=CREDENTIALS, rate_limit=None)
        _, orders = await setup(tmp_path, serve_simulators)
        async with serve_simulators({"sfox": simulator}) as server:
            config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 0})
            # Wide enough that rich never wraps the reason (a wrapped key would hide a leak).
            env = {**cli_env(tmp_path / "a.db"), "TERM": "xterm", "COLUMNS": "400"}
            code, screen, out = await run_on_terminal(
                "run", str(orders), "--venues-config", str(config), env=env
            )
        assert code == 1, screen
        assert simulator.auth_refused >= 1
        assert "credentials refused" in screen and "[redacted]" in screen, screen
        for text in (screen, out.decode()):
            assert SFOX_KEY[:9].lower() not in text.lower(), text

    def test_lines_hide_secrets_and_escape_control_characters(self) -> None:
        """Plain and JSON lines: a halt reason's credential is hidden, its terminal escape
        and lone surrogate escaped, so a strict UTF-8 stream takes the line."""
        reason = f"credentials refused: HTTP 401: Bearer {SFOX_KEY} \x1b[2J \ud800"
        view = LaneView("sfox", total=3, done=1, halted=reason)
        for json_lines in (False, True):
            raw = io.BytesIO()
            stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict")
            redactor = Redactor(SECRET_VALUES)
            with Progress(stream, live=False, json_lines=json_lines, redactor=redactor) as show:
                show({"sfox": view})
            stream.flush()
            lines = raw.getvalue().decode().splitlines()
            assert lines, json_lines
            for line in lines:
                state = json.loads(line)["state"] if json_lines else line
                assert SFOX_KEY not in state and "[redacted]" in state, state
                assert "\x1b" not in state and "\\x1b[2J" in state and "\\ud800" in state
