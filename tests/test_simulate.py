"""`batchcancel simulate`: serves the five simulators and prints a config `run` can use."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

from tests.conftest import run_cli


class TestSimulate:
    async def test_serves_five_venues_and_prints_a_working_config(self, tmp_path: Path) -> None:
        """The printed venues TOML and credential exports point `run` at the simulators,
        which hold the orders of --orders-file open."""
        orders = tmp_path / "orders.csv"
        orders.write_text("venue,order_id\nsfox,101\nsfox,102\ntanx,7\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "batchcancel",
            "simulate",
            "--port",
            "0",
            "--orders-file",
            str(orders),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        lines: list[str] = []
        try:
            while len([x for x in lines if x.startswith("export ")]) < 8:  # eight variables
                line = await asyncio.wait_for(process.stdout.readline(), 30)
                assert line, "simulate ended early"
                lines.append(line.decode().rstrip("\n"))
            toml = "\n".join(x for x in lines if not x.startswith(("export ", "#")))
            for venue in ("sfox", "etna", "crux", "tanx", "zebpay"):
                assert f"[venues.{venue}]" in toml
            assert re.search(r'base_url = "http://127\.0\.0\.1:\d+/sfox"', toml)
            config = tmp_path / "venues.toml"
            config.write_text(toml.replace("rate_limit = 250", "rate_limit = 0"), encoding="utf-8")
            run_env = dict(env)
            for line in lines:
                if line.startswith("export "):
                    name, _, value = line.removeprefix("export ").partition("=")
                    run_env[name] = value
            run_env["BATCHCANCEL_DB"] = f"sqlite:///{tmp_path / 'a.db'}"
            result = await run_cli(
                "run", str(orders), "--venues-config", str(config), "--json", env=run_env
            )
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["outcomes"]["canceled"] == 3
