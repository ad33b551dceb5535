"""`--from-venues` over the real CLI and simulators: the venues' own books are listed,
cancelled and listed again until each is proven flat (SPEC "The venues' own books")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchcancel.simulators.base import Simulator
from tests.conftest import (
    ServeSimulators,
    assert_audit_intact,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.test_list_open import ACCOUNT, SYMBOL, place_book, simulator

VENUE_NAMES = ("crux", "etna", "sfox", "tanx", "zebpay")


def books_config(path: Path, server: Any, **extra: Mapping[str, object]) -> Path:
    """Every venue at the simulators; ETNA's account and ZebPay's symbol to list by."""
    venues: dict[str, dict[str, object]] = {name: {} for name in VENUE_NAMES}
    venues["etna"]["accounts"] = [ACCOUNT]
    venues["zebpay"]["symbols"] = [SYMBOL]
    for name, keys in extra.items():
        venues[name].update(keys)
    return write_venues_toml(path, server, **venues)


def working(sim: Simulator) -> list[str]:
    return sim.working_keys()


async def test_a_kill_from_every_book_ends_flat_at_all_five(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """Orders no input lists are cancelled from the books; each venue ends flat, exit 0."""
    sims = {name: simulator(name) for name in VENUE_NAMES}
    placed = {name: place_book(sim, name, 30) for name, sim in sims.items()}
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = books_config(tmp_path / "venues.toml", server)
        result = await run_cli(
            "kill", "--from-venues", "all", "--venues-config", str(config), "--json",
            "--reason", "runaway test", env=cli_env(db),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["books"]) == set(VENUE_NAMES)
    for name in VENUE_NAMES:
        book = summary["books"][name]
        assert book["verdict"] == "flat", (name, book, result.stderr)
        assert book["listed"] == 30
        assert book["working_at_end"] == 0
        assert book["seconds_to_flat"] is not None
        assert working(sims[name]) == [], name
    assert summary["orders"] == 30 * 5
    listed = db_rows(f"sqlite:///{db}", "SELECT count(*) FROM orders WHERE listed_by IS NOT NULL")
    assert listed == [(150,)]
    lists = db_rows(f"sqlite:///{db}", "SELECT count(*) FROM requests WHERE kind = 'list'")
    assert lists[0][0] >= 5 * 2  # each book listed, then listed again to prove it flat
    assert all(placed[name] for name in VENUE_NAMES)
    assert_audit_intact(f"sqlite:///{db}", summary["run_id"])


async def test_a_live_kill_pauses_another_run_on_its_venue(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """SPEC "A kill takes precedence": a slow end-of-day run on ETNA sends nothing there
    while a kill is live on ETNA, says so on stderr, and goes on to finish afterwards."""
    sim = simulator("etna")
    eod_keys = place_book(sim, "etna", 100)
    kill_keys = place_book(sim, "etna", 20, start=1000)
    assert {a for a in kill_keys} & set(eod_keys) == set()
    db = tmp_path / "audit.db"
    eod_csv = write_orders_csv(
        tmp_path / "eod.csv",
        [{"venue": "etna", "order_id": k, "account_id": ACCOUNT} for k in eod_keys],
    )
    kill_csv = write_orders_csv(
        tmp_path / "kill.csv",
        [{"venue": "etna", "order_id": k, "account_id": ACCOUNT} for k in kill_keys],
    )
    async with serve_simulators({"etna": sim}) as server:
        # The end-of-day run at 10 per second: ten seconds of work, so that the kill's own
        # start-up (seconds on a loaded machine) still finds it sending.
        slow = write_venues_toml(
            tmp_path / "slow.toml", server, etna={"rate_limit": 10, "period": 1.0}
        )
        # The kill at 4 per second (its own config): five seconds live on ETNA.
        fast = write_venues_toml(
            tmp_path / "kill.toml", server, etna={"rate_limit": 4, "period": 1.0}
        )
        eod = asyncio.create_task(
            run_cli("run", str(eod_csv), "--venues-config", str(slow), env=cli_env(db))
        )
        while len(sim.arrivals) < 3:  # the end-of-day run is sending
            await asyncio.sleep(0.05)
        kill = await run_cli("kill", str(kill_csv), "--venues-config", str(fast), env=cli_env(db))
        done = await eod
    assert kill.code == 0, kill.stderr
    assert done.code == 0, done.stderr
    assert "etna: paused while kill" in done.stderr
    assert "etna: the kill there has ended; going on" in done.stderr
    eod_set, kill_set = set(eod_keys), set(kill_keys)
    kill_times = [a.at for a in sim.arrivals if a.key in kill_set]
    # Once the end-of-day run has seen the kill (one look, plus a request in flight), it
    # sends nothing more to ETNA until the kill's last request is answered.
    window = (kill_times[0] + 1.5, kill_times[-1])
    during = [a for a in sim.arrivals if a.key in eod_set and window[0] < a.at < window[1]]
    assert window[1] > window[0] and during == []
    assert sim.working_keys() == []


async def test_a_dry_run_from_the_books_sends_nothing_not_even_a_list(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """--dry-run sends nothing: no list request reaches any venue, no order is touched."""
    sims = {name: simulator(name) for name in VENUE_NAMES}
    for name, sim in sims.items():
        place_book(sim, name, 5)
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = books_config(tmp_path / "venues.toml", server)
        result = await run_cli(
            "kill", "--from-venues", "all", "--dry-run", "--venues-config", str(config),
            "--json", env=cli_env(db),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "planned"
    assert {b["verdict"] for b in summary["books"].values()} == {"not_flat"}
    assert all(sim.arrivals == [] for sim in sims.values())
    assert all(len(sim.working_keys()) == 5 for sim in sims.values())


async def test_from_venues_names_an_unknown_venue_exit_2(tmp_path: Path) -> None:
    """A venue name --from-venues does not know: one error line, exit 2, nothing recorded."""
    result = await run_cli("kill", "--from-venues", "sfox,nowhere", env=cli_env(tmp_path / "a.db"))
    assert result.code == 2
    assert "unknown venue 'nowhere'" in result.stderr
    scoped = await run_cli("kill", "--side", "buy", "-", env=cli_env(tmp_path / "a.db"))
    assert scoped.code == 2 and "--from-venues" in scoped.stderr


async def test_status_and_the_kill_report_carry_the_books(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """`status RUN` prints each book's verdict; `report RUN --format kill --json` is one
    object whose venues agree with the summary; --json without --format kill is exit 2."""
    sims = {name: simulator(name) for name in ("sfox", "tanx")}
    for name, sim in sims.items():
        place_book(sim, name, 7)
    db = tmp_path / "audit.db"
    async with serve_simulators(sims) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, sfox={}, tanx={})
        result = await run_cli(
            "kill", "--from-venues", "sfox,tanx", "--venues-config", str(config), "--json",
            env=cli_env(db),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    status = await run_cli("status", run_id, env=cli_env(db))
    assert "books (--from-venues):" in status.stdout
    assert sum(line.split()[1] == "flat" for line in status.stdout.splitlines()[-2:]) == 2
    report = await run_cli("report", run_id, "--format", "kill", "--json", env=cli_env(db))
    assert report.code == 0, report.stderr
    text = json.dumps(json.loads(report.stdout))
    assert "sfox" in text and "tanx" in text and '"flat"' in text
    wrong = await run_cli("report", run_id, "--format", "csv", "--json", env=cli_env(db))
    assert wrong.code == 2 and "--format kill" in wrong.stderr
