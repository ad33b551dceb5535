"""The kill report (SPEC "The kill report"): a real kill from the venues' own books against the
simulators, then `kill_report` on its audit database, as text and as one JSON object.

The report names who started the kill, why, when, its command line, scope and digest; per venue
its verdict and counts, which must equal the database's; then the orders that need a human:
bad outcomes, and an order the venue still lists as working after its cancel was acknowledged.
A run without `--from-venues` is reported from its input, each venue `not listed`. No
credential appears anywhere in it.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchcancel.audit.store import AuditStore
from batchcancel.kill_report import NOT_LISTED, STILL_WORKING, kill_report
from batchcancel.simulators.base import Answer, FaultPlan
from tests.conftest import (
    SECRET_VALUES,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.test_books import VENUE_NAMES, books_config
from tests.test_list_open import ACCOUNT, key_of, place_book, simulator

PER_VENUE = 12
UNKNOWN_SFOX = "123456789"  # an order the input names and sFOX does not know: not_found


def reports(url: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """The run's kill report as text, and as the parsed JSON object."""
    store = AuditStore(url)
    try:
        text = kill_report(store, run_id, as_json=False)
        raw = kill_report(store, run_id, as_json=True)
    finally:
        store.close()
    for secret in SECRET_VALUES:
        assert secret not in text and secret not in raw, secret
    report = json.loads(raw)
    assert isinstance(report, dict)
    return text, report


def db_venue_counts(url: str, run_id: str) -> dict[str, dict[str, int]]:
    """Per venue, straight from the orders table: what the report's counts must equal."""
    rows = db_rows(
        url,
        "SELECT venue, count(*), "
        "sum(CASE WHEN listed_by IS NOT NULL THEN 1 ELSE 0 END), "
        "sum(CASE WHEN seq > 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN listed_by IS NOT NULL AND seq > 0 THEN 1 ELSE 0 END), "
        "sum(CASE WHEN outcome IN ('canceled', 'cancel_pending') THEN 1 ELSE 0 END), "
        "sum(CASE WHEN outcome = 'already_closed' THEN 1 ELSE 0 END), "
        "sum(CASE WHEN outcome = 'failed' THEN 1 ELSE 0 END) "
        f"FROM orders WHERE run_id = '{run_id}' GROUP BY venue",
    )
    names = ("orders", "listed", "from_input", "listed_and_in_input", "cancelled",
             "already_closed", "failed")  # fmt: skip
    return {row[0]: dict(zip(names, map(int, row[1:]), strict=True)) for row in rows}


def assert_counts_match(report: dict[str, Any], url: str) -> None:
    for venue, counts in db_venue_counts(url, report["run_id"]).items():
        line = report["venues"][venue]
        assert {name: line[name] for name in counts} == counts, venue


async def test_a_kill_from_every_book_reports_who_why_scope_and_each_flat_verdict(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """Five books and an input that names one listed order and one sFOX does not know: every
    venue flat, counts as the database holds them, the unknown order the one that needs a
    human; the text says the same."""
    sims = {name: simulator(name) for name in VENUE_NAMES}
    for name, sim in sims.items():
        place_book(sim, name, PER_VENUE)
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    orders = write_orders_csv(
        tmp_path / "orders.csv",
        [
            {"venue": "sfox", "order_id": key_of("sfox", 0), "account_id": "", "symbol": ""},
            {"venue": "sfox", "order_id": UNKNOWN_SFOX, "account_id": "", "symbol": ""},
        ],
    )
    async with serve_simulators(sims) as server:
        config = books_config(tmp_path / "venues.toml", server)
        result = await run_cli(
            "kill", str(orders), "--from-venues", "all", "--venues-config", str(config),
            "--json", "--reason", "runaway algo 7", env=cli_env(db),
        )  # fmt: skip
    assert result.code == 1, result.stderr  # the unknown order needs attention
    summary = json.loads(result.stdout)
    text, report = reports(url, summary["run_id"])

    assert report["report"] == "kill"
    assert report["run_id"] == summary["run_id"]
    assert report["command"] == "kill"
    assert report["status"] == summary["status"] == "attention"
    assert report["flat"] is True
    assert report["who"]["os_user"] == getpass.getuser()
    assert report["who"]["host"] == socket.gethostname()
    assert report["why"] == "runaway algo 7"
    assert report["when"]["started_at"].endswith("Z") and "." in report["when"]["started_at"]
    assert report["when"]["finished_at"] is not None
    assert "--from-venues all" in report["command_line"]
    assert report["scope"] == {
        "from_venues": sorted(VENUE_NAMES),
        "account": [],
        "symbol": [],
        "side": None,
        "source": str(orders),
    }
    assert report["digest"] == summary["digest"]
    assert report["orders"] == summary["orders"] == PER_VENUE * 5 + 1
    assert set(report["venues"]) == set(VENUE_NAMES)
    for name in VENUE_NAMES:
        line = report["venues"][name]
        assert line["verdict"] == "flat", (name, line)
        # The input's sFOX order may be cancelled before the first list shows it (the
        # input is sent while the books are listed): then no list sees it working.
        assert PER_VENUE - (name == "sfox") <= line["listed"] <= PER_VENUE
        assert line["working_at_end"] == 0
        assert line["lists"] >= 2
        first, last, flat = (
            line["seconds_to_first_request"],
            line["seconds_to_last_answer"],
            line["seconds_to_flat"],
        )
        assert 0 <= first <= last, (name, line)
        assert flat is not None and first <= flat, (name, line)
    sfox = report["venues"]["sfox"]
    assert (sfox["from_input"], sfox["orders"]) == (2, 13)
    assert sfox["listed_and_in_input"] == sfox["listed"] - (PER_VENUE - 1)
    assert sfox["cancelled"] == PER_VENUE and sfox["needs_human"] == 1
    assert_counts_match(report, url)
    assert [(o["venue"], o["order_id"], o["outcome"]) for o in report["needs_human"]] == [
        ("sfox", UNKNOWN_SFOX, "not_found")
    ]
    assert report["needs_human"][0]["working_at_end"] is False
    assert [s["command"] for s in report["sessions"]] == ["kill"]

    assert f"run {summary['run_id']}" in text
    assert "every venue in scope is flat" in text
    assert f"{getpass.getuser()} on {socket.gethostname()}" in text
    assert "why:      runaway algo 7" in text
    assert "books of crux, etna, sfox, tanx, zebpay" in text
    assert "side any" in text
    assert summary["digest"] in text
    assert "orders that need a human: 1" in text
    assert f"sfox  {UNKNOWN_SFOX}  not_found" in text
    table = text.split("per venue (times in seconds from the start):\n")[1].split("\n\n")[0]
    rows = {line.split()[0]: line.split() for line in table.splitlines()}
    assert rows["venue"][:3] == ["venue", "verdict", "listed"]
    for name in VENUE_NAMES:
        assert rows[name][1] == "flat"
        assert rows[name][2] == str(report["venues"][name]["listed"])  # as in the JSON
    assert rows["sfox"][3:7] == ["2", str(PER_VENUE), "0", "0"]  # in input, cancelled, ...


async def test_an_order_still_working_after_its_cancel_is_named_and_the_book_not_flat(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """ETNA acknowledges one cancel (204) but never applies it: the run holds the order
    canceled while ETNA keeps listing it. The book is not_flat, the order needs a human,
    and the scope's --account reaches the report."""
    stuck = key_of("etna", 3)
    sim = simulator("etna", faults=FaultPlan().script(stuck, Answer(204)))
    place_book(sim, "etna", 6)
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    async with serve_simulators({"etna": sim}) as server:
        config = write_venues_toml(tmp_path / "venues.toml", server, etna={})
        result = await run_cli(
            "kill", "--from-venues", "etna", "--account", ACCOUNT, "--venues-config",
            str(config), "--json", "--reason", "stuck test", env=cli_env(db),
        )  # fmt: skip
    assert result.code == 1, result.stderr
    assert sim.working_keys() == [stuck]
    summary = json.loads(result.stdout)
    text, report = reports(url, summary["run_id"])
    assert report["flat"] is False
    assert report["scope"]["account"] == [ACCOUNT]
    assert report["scope"]["source"] == "the books of etna"  # no input
    etna = report["venues"]["etna"]
    assert etna["verdict"] == "not_flat"
    assert etna["working_at_end"] == 1
    assert etna["seconds_to_flat"] is None
    assert stuck in etna["detail"]
    assert_counts_match(report, url)
    assert etna["cancelled"] == 6  # the run believes every cancel went through
    needs = report["needs_human"]
    assert [(o["venue"], o["order_id"], o["outcome"], o["working_at_end"]) for o in needs] == [
        ("etna", stuck, "canceled", True)
    ]
    assert needs[0]["account_id"] == ACCOUNT
    assert needs[0]["reason"].startswith(STILL_WORKING)
    assert "NOT every venue in scope is flat" in text
    assert f"account {ACCOUNT};" in text
    assert f"etna  {stuck}  canceled  {STILL_WORKING}" in text


async def test_a_venue_that_cannot_be_listed_is_not_flat_with_the_reason(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """ETNA without an account id to list by: its book row says why, verdict not_flat."""
    sim = simulator("etna")
    place_book(sim, "etna", 3)
    db = tmp_path / "audit.db"
    async with serve_simulators({"etna": sim}) as server:
        config = write_venues_toml(tmp_path / "venues.toml", server, etna={})
        result = await run_cli(
            "kill", "--from-venues", "etna", "--venues-config", str(config), "--json",
            env=cli_env(db),
        )  # fmt: skip
    assert result.code == 1, result.stderr
    text, report = reports(f"sqlite:///{db}", json.loads(result.stdout)["run_id"])
    etna = report["venues"]["etna"]
    assert (etna["verdict"], etna["listed"], etna["orders"]) == ("not_flat", 0, 0)
    assert "account ids" in etna["detail"]
    assert report["flat"] is False and report["needs_human"] == []
    assert "why:      (no --reason given)" in text
    assert f"etna: {etna['detail']}" in text


async def test_a_run_from_its_input_alone_is_reported_venue_by_venue_as_not_listed(
    serve_simulators: ServeSimulators, tmp_path: Path
) -> None:
    """No --from-venues: the input's counts per venue, verdict `not listed`, nothing flat."""
    sims = {name: simulator(name) for name in ("sfox", "tanx")}
    rows: list[Mapping[str, str]] = [
        {"venue": name, "order_id": key, "account_id": "", "symbol": ""}
        for name, sim in sims.items()
        for key in place_book(sim, name, 4)
    ]
    rows.append({"venue": "tanx", "order_id": "not-a-number", "account_id": "", "symbol": ""})
    db = tmp_path / "audit.db"
    url = f"sqlite:///{db}"
    orders = write_orders_csv(tmp_path / "orders.csv", rows)
    async with serve_simulators(sims) as server:
        config = write_venues_toml(tmp_path / "venues.toml", server, sfox={}, tanx={})
        result = await run_cli(
            "kill", str(orders), "--venues-config", str(config), "--json", "--reason", "eod",
            env=cli_env(db),
        )  # fmt: skip
    summary = json.loads(result.stdout)
    text, report = reports(url, summary["run_id"])
    assert report["flat"] is False
    assert report["scope"]["from_venues"] is None
    assert set(report["venues"]) == {"sfox", "tanx"}
    for name in ("sfox", "tanx"):
        line = report["venues"][name]
        assert line["verdict"] == NOT_LISTED
        assert line["listed"] == 0 and line["working_at_end"] is None
        assert line["cancelled"] == 4
        assert line["seconds_to_first_request"] is not None
    assert report["venues"]["tanx"]["from_input"] == 5
    assert_counts_match(report, url)
    outcomes = db_rows(url, "SELECT order_id, outcome FROM orders WHERE venue = 'tanx'")
    invalid = [order for order, outcome in outcomes if outcome == "invalid"]
    assert [o["order_id"] for o in report["needs_human"]] == invalid == ["not-a-number"]
    assert "not from the venues' books" in text
    assert "books of none" in text
    assert NOT_LISTED in text


async def test_a_venue_in_scope_without_a_verdict_is_not_flat(tmp_path: Path) -> None:
    """A dry run lists nothing, so no book has a row: each venue in scope is not_flat."""
    db = tmp_path / "audit.db"
    result = await run_cli(
        "kill", "--from-venues", "sfox,tanx", "--dry-run", "--json", env=cli_env(db)
    )
    assert result.code == 0, result.stderr
    text, report = reports(f"sqlite:///{db}", json.loads(result.stdout)["run_id"])
    assert report["status"] == "planned" and report["flat"] is False
    assert report["scope"]["from_venues"] == ["sfox", "tanx"]
    for name in ("sfox", "tanx"):
        line = report["venues"][name]
        assert (line["verdict"], line["orders"], line["working_at_end"]) == ("not_flat", 0, None)
        assert line["detail"] == "never listed to the end: no verdict recorded"
    assert "NOT every venue in scope is flat" in text
