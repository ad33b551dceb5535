"""The live view: per venue a progress bar, the rate beside the configured limit, an ETA, and
the countdown of a 429 pause; plain and JSON lines carry the same fields. Checked on a real
terminal (tmux, whose screen is captured as a test artifact) and through the real CLI.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
import uuid
from pathlib import Path

import pytest

from batchcancel.drain_types import LaneView
from batchcancel.progress import Progress
from batchcancel.redact import Redactor
from batchcancel.simulators.base import Fault, FaultPlan
from tests.conftest import ServeSimulators, cli_env, run_cli, write_orders_csv, write_venues_toml
from tests.torture_support import build_venues

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TMUX = shutil.which("tmux")
PAUSE = 2.0  # Retry-After of the scripted 429: long enough to be seen counting down


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_and_json_lines_carry_the_same_fields() -> None:
    """Half-way, 10 orders a second, a 429 pause with 2.5 s to run: the plain line and the
    JSON record both say the limit, the percentage, the ETA (the rest at the rate seen, plus
    the pause) and the countdown."""
    clock = Clock()
    view = LaneView("sfox", total=100, started=clock.now)
    shown: dict[bool, str] = {}
    for json_lines in (False, True):
        out = io.StringIO()
        progress = Progress(out, live=False, json_lines=json_lines, redactor=Redactor(),
                            limits={"sfox": (20, 1.0)}, clock=clock)
        clock.now = 1000.0
        view.sent = view.done = 0
        view.paused_until = 0.0
        with progress:
            progress({"sfox": view})  # the first line, at once
            for _ in range(50):  # 5 s at 10 orders a second
                clock.now += 0.1
                view.sent += 1
                view.done += 1
                view.outcomes["canceled"] += 1
                progress({"sfox": view})
            view.paused_until = clock.now + 2.5
            view.rate_limited = 1
        shown[json_lines] = out.getvalue().splitlines()[-1]  # the final state, at exit
    record = json.loads(shown[True])
    assert record["event"] == "progress"
    assert record["limit"] == "20/s" and record["limit_per_s"] == 20.0
    assert record["done"] == 50 and record["total"] == 100 and record["percent"] == 50.0
    assert record["rate"] == pytest.approx(10.0, abs=0.5)
    assert record["pause_left_s"] == 2.5 and record["rate_limited"] == 1
    assert record["eta_s"] == pytest.approx(50 / 10 + 2.5, abs=0.5)
    assert record["state"] == "429 pause, 2.5 s left"
    plain = shown[False]
    assert plain.startswith("progress sfox: 50/100 done (50%), ")
    assert f"{record['rate']:.1f}/s (limit 20/s)" in plain
    assert f"ETA {record['eta_s']:.0f} s" in plain
    assert "1 429s" in plain and "canceled 50" in plain and plain.endswith("429 pause, 2.5 s left")


def test_limits_unknown_unthrottled_and_per_period() -> None:
    """A venue without a configured limit shows none; 0 is unthrottled; a 10 s window reads
    '250 per 10 s'; a stopped lane has no ETA."""
    clock = Clock()
    out = io.StringIO()
    views = {
        "sfox": LaneView("sfox", total=4, done=4, started=clock.now),
        "tanx": LaneView("tanx", total=4, started=clock.now),
        "etna": LaneView("etna", total=4, done=1, halted="credentials refused", started=clock.now),
    }
    progress = Progress(out, live=False, json_lines=True, redactor=Redactor(),
                        limits={"tanx": (0, 1.0), "etna": (250, 10.0)}, clock=clock)
    with progress:
        clock.now += 1
        progress(views)
    records = {r["venue"]: r for r in map(json.loads, out.getvalue().splitlines()[-3:])}
    assert records["sfox"]["limit"] is None and records["sfox"]["eta_s"] == 0
    assert records["tanx"]["limit"] == "unthrottled" and records["tanx"]["eta_s"] is None
    assert records["etna"]["limit"] == "250 per 10 s" and records["etna"]["eta_s"] is None
    assert records["etna"]["state"] == "stopped: credentials refused"


def run_setup(tmp_path: Path) -> tuple[object, Path]:
    plan = FaultPlan(retry_after=PAUSE)
    venues = build_venues({"sfox": 60, "tanx": 30}, faults={"sfox": plan})
    plan.script(venues.ids("sfox")[5], Fault.RATE_LIMIT)
    return venues, write_orders_csv(tmp_path / "orders.csv", venues.rows)


def config_for(tmp_path: Path, server: object) -> Path:
    return write_venues_toml(
        tmp_path / "venues.toml",
        server,  # type: ignore[arg-type]
        sfox={"rate_limit": 20, "period": 1.0, "backoff": 0.05, "cooldown": PAUSE},
        tanx={"rate_limit": 10, "period": 1.0, "backoff": 0.05},
    )


async def test_json_and_plain_progress_through_the_cli(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """Not a terminal: with --log-format json each progress record has the limit, ETA and
    pause fields; in text, each line names the limit and the ETA."""
    venues, orders = run_setup(tmp_path)
    async with serve_simulators(venues.simulators) as server:  # type: ignore[attr-defined]
        config = config_for(tmp_path, server)
        result = await run_cli("--log-format", "json", "run", str(orders), "--venues-config",
                               str(config), env=cli_env(tmp_path / "a.db"))
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines()]
    progress = [r for r in records if r.get("event") == "progress"]
    assert {r["venue"] for r in progress} == {"sfox", "tanx"}
    for record in progress:
        assert {"limit", "limit_per_s", "eta_s", "pause_left_s", "percent", "rate",
                "rate_limited", "done", "total", "outcomes", "state"} <= set(record)
    last = {r["venue"]: r for r in progress}
    assert last["sfox"]["limit"] == "20/s" and last["tanx"]["limit"] == "10/s"
    assert last["sfox"]["done"] == 60 and last["sfox"]["rate_limited"] == 1
    assert last["sfox"]["eta_s"] == 0 and last["sfox"]["state"] == "done"


async def tmux(*args: str) -> str:
    assert TMUX is not None
    process = await asyncio.create_subprocess_exec(
        TMUX, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def test_live_view_on_a_terminal_counts_a_429_pause_down(
    tmp_path: Path, serve_simulators: ServeSimulators
) -> None:
    """In tmux (a real terminal, 150 columns): the table has a bar, req/s beside the limit,
    an ETA, and, while sFOX waits out its 429, the pause counting down; the run ends with
    every bar full. The screens are kept in test-artifacts/live-view.txt."""
    if TMUX is None:
        pytest.skip("tmux is not installed")
    venues, orders = run_setup(tmp_path)
    socket = f"bc-test-{uuid.uuid4().hex[:8]}"
    env = cli_env(tmp_path / "a.db")
    env_args = [arg for key, value in env.items() if key.startswith(("BATCHCANCEL_", "PATH"))
                for arg in ("-e", f"{key}={value}")]
    done_flag = tmp_path / "exit-code"
    screens: list[str] = []
    async with serve_simulators(venues.simulators) as server:  # type: ignore[attr-defined]
        config = config_for(tmp_path, server)
        import sys

        command = (
            f"{sys.executable} -m batchcancel run {orders} --venues-config {config} "
            f"> {tmp_path / 'out.txt'}; echo $? > {done_flag}; sleep 600"
        )
        await tmux("-L", socket, "new-session", "-d", "-x", "150", "-y", "12", *env_args,
                   "-c", str(Path.cwd()), command)
        try:
            for _ in range(1200):  # bounded: at most about a minute
                screen = await tmux("-L", socket, "capture-pane", "-p", "-t", "0")
                if not screens or screen != screens[-1]:
                    screens.append(screen)
                if done_flag.exists() and done_flag.read_text().strip():
                    break
                await asyncio.sleep(0.05)
            screen = await tmux("-L", socket, "capture-pane", "-p", "-t", "0")
            screens.append(screen)
        finally:
            await tmux("-L", socket, "kill-server")
    assert done_flag.read_text().strip() == "0", screens[-1]
    ARTIFACTS.mkdir(exist_ok=True)
    text = "\n\n".join(f"--- screen {n} ---\n{s.rstrip()}" for n, s in enumerate(screens))
    (tmp_path / "live-view.txt").write_text(text, encoding="utf-8")
    (ARTIFACTS / "live-view.txt").write_text(text, encoding="utf-8")
    header = [s for s in screens if "req/s" in s]
    assert header, screens[-1]
    assert all(word in header[-1] for word in ("progress", "done/total", "limit", "ETA", "429s"))
    pausing = [s for s in screens if re.search(r"sfox .*429 pause, \d+\.\d s left", s)]
    assert pausing, "the 429 pause was never shown"
    countdown = {float(m) for s in pausing for m in re.findall(r"429 pause, (\d+\.\d) s left", s)}
    assert len(countdown) >= 2, f"the pause did not count down: {countdown}"
    final = screens[-1]
    sfox_row = next(line for line in final.splitlines() if line.startswith("sfox"))
    assert "60/60" in sfox_row and "20/s" in sfox_row and "done" in sfox_row
    assert "━" * 10 in sfox_row, "the bar is full"
    tanx_row = next(line for line in final.splitlines() if line.startswith("tanx"))
    assert "30/30" in tanx_row and "10/s" in tanx_row
    assert "canceled 60" in (tmp_path / "out.txt").read_text()
