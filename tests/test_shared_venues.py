"""Two runs of one audit database at the same venue: the second is told they share its limit.

Each run paces itself at the venue's limit, so a kill started while an end-of-day run is still
cancelling at the same venue goes slower than the operator expects; the warning says why.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from tests.conftest import (
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.torture_support import build_venues, start_cli, wait_for_requests

KEYS = {"rate_limit": 20, "period": 1.0}  # the long run takes about 20 s for its 400 orders


async def test_second_run_at_a_busy_venue_is_warned(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """A kill while a run is cancelling at sFOX warns (plain and JSON lines) that it shares
    sFOX with that run, names no venue the run does not hold, and still finishes; once the
    run has stopped, the same kill warns of nothing."""
    venues = build_venues({"sfox": 410, "etna": 5})
    sfox = [row for row in venues.rows if row["venue"] == "sfox"]
    etna = [row for row in venues.rows if row["venue"] == "etna"]
    long_list = write_orders_csv(tmp_path / "eod.csv", sfox[:400])
    kill_lists = [
        write_orders_csv(tmp_path / f"kill{n}.csv", sfox[400 + 5 * n : 405 + 5 * n] + etna)
        for n in range(2)
    ]
    env = cli_env(audit_url)
    async with serve_simulators(venues.simulators) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, sfox=KEYS, etna=KEYS)
        eod = await start_cli("run", str(long_list), "--venues-config", str(config), env=env)
        try:
            assert await wait_for_requests(venues, 1, eod), "the long run never sent"
            ((eod_run,),) = db_rows(audit_url, "select id from runs")
            kill = await run_cli(
                "kill", str(kill_lists[0]), "--venues-config", str(config), env=env
            )
            logged = await run_cli(
                "--log-format",
                "json",
                "kill",
                str(kill_lists[0]),
                "--venues-config",
                str(config),
                env=env,
            )
        finally:
            eod.send_signal(signal.SIGTERM)
            await asyncio.wait_for(eod.communicate(), 60)
        assert eod.returncode == 3
        after = await run_cli("kill", str(kill_lists[1]), "--venues-config", str(config), env=env)

    assert kill.code == 0, kill.stderr
    warnings = [line for line in kill.stderr.splitlines() if "sending there too" in line]
    assert warnings == [
        f"batchcancel: sfox: run {eod_run} (run) is sending there too; the runs share its "
        "rate limit, so both go slower and 429s may pause both"
    ], kill.stderr
    records = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    shared = [r for r in records if r["event"] == "shared_venue"]
    assert [(r["venue"], r["other_runs"], r["level"]) for r in shared] == [
        ("sfox", [eod_run], "warning")
    ], logged.stderr
    assert after.code == 0, after.stderr
    assert "sending there too" not in after.stderr
