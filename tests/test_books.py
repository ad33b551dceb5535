"""`--from-venues` over the real CLI and simulators: the venues' own books are listed,
cancelled and listed again until each is proven flat (SPEC "The venues' own books")."""

from __future__ import annotations

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
