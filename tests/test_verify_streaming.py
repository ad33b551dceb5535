"""verify as it now reads a run, rows streaming past what the facts say (issue 16):

- several rows wrong at once: the one with the lowest key is named, tables in their order;
- a run still being written verifies intact at every commit it is read at (one snapshot);
- the venues' books and the orders their lists found (`kill --from-venues`) are checked;
- an export of a broken chain still holds every link, and names the break on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path

import sqlalchemy as sa

from batchcancel.audit.store import AuditStore
from batchcancel.audit.verify import Verdict, export_run, read_links, verify_file, verify_run
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from tests.conftest import (
    CREDENTIALS,
    ServeSimulators,
    cli_env,
    db_rows,
    run_cli,
    write_orders_csv,
    write_venues_toml,
)
from tests.test_books import books_config
from tests.test_chain import finished_run, tamper
from tests.test_list_open import place_book, simulator


def verdict(url: str, run: str) -> Verdict:
    store = AuditStore(url)
    try:
        return verify_run(store.engine, store.find_run(run).id)
    finally:
        store.close()


def pk_of(url: str, order_id: str) -> int:
    return int(db_rows(url, f"select pk from orders where order_id = '{order_id}'")[0][0])


class TestTheLowestKeyIsNamed:
    async def test_of_several_wrong_rows_the_first_in_key_order(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """Rows come in the database's order, not sorted; the problem named is still the
        one a walk in key order meets first: a missing row before a later edited one, the
        lower of two edited keys, and orders before attempts."""
        run_id = await finished_run(tmp_path, serve_simulators, audit_url)
        low, high = pk_of(audit_url, "20"), pk_of(audit_url, "28")
        assert low < high

        tamper(audit_url, f"update attempts set detail = 'x' where order_pk = {high}")
        tamper(audit_url, f"delete from attempts where order_pk = {low}")
        found = verdict(audit_url, run_id)
        assert found.problem == f"attempts {low}/1: the row is missing (deleted)", found

        tamper(audit_url, f"update orders set reason = 'edited' where pk in ({low}, {high})")
        found = verdict(audit_url, run_id)
        assert found.problem.startswith(f"orders {low}: reason is 'edited'"), found

    async def test_an_order_deleted_with_its_attempts_is_named_by_key(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        run_id = await finished_run(tmp_path, serve_simulators, audit_url)
        pk = pk_of(audit_url, "15")
        tamper(audit_url, f"delete from attempts where order_pk = {pk}")
        tamper(audit_url, f"delete from orders where pk = {pk}")
        found = verdict(audit_url, run_id)
        assert found.problem == f"orders {pk}: the row is missing (deleted)", found

    async def test_an_order_never_sent_and_deleted_is_named_by_its_row_number(
        self, tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
    ) -> None:
        """The invalid row is never sent: facts know it only by its source row number."""
        run_id = await finished_run(tmp_path, serve_simulators, audit_url)
        (seq,) = db_rows(audit_url, "select seq from orders where order_id = ''")[0]
        tamper(audit_url, "delete from orders where order_id = ''")
        found = verdict(audit_url, run_id)
        assert found.problem == f"orders seq/{seq}: the row is missing (deleted)", found


async def test_a_run_in_progress_verifies_at_every_commit_it_is_read_at(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """verify reads links and rows in one snapshot: while a run commits batch after batch,
    each verify sees some commit whole, never rows of a later one than its links."""
    sim = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    sim.seed({str(n): OrderState.OPEN for n in range(1000, 1600)})
    rows: list[Mapping[str, str]] = [
        {"venue": "sfox", "order_id": str(n)} for n in range(1000, 1600)
    ]
    seen: list[int] = []
    async with serve_simulators({"sfox": sim}) as server:
        config = write_venues_toml(tmp_path / "v.toml", server, sfox={"rate_limit": 150})
        orders = write_orders_csv(tmp_path / "orders.csv", rows)
        command = ("run", str(orders), "--venues-config", str(config), "--run-key", "live")
        running = asyncio.create_task(run_cli(*command, env=cli_env(audit_url)))
        for _ in range(600):  # bounded: the run takes about four seconds
            if running.done():
                break
            await asyncio.sleep(0.02)
            try:
                if db_rows(audit_url, "select count(*) from chain_links")[0][0] == 0:
                    continue
            except sa.exc.DBAPIError:  # the run has not created its tables yet
                continue
            checked = await asyncio.to_thread(verdict, audit_url, "live")
            assert checked.intact, checked.problem
            seen.append(checked.facts)
        result = await running
    assert result.code == 0, result.stderr
    final = verdict(audit_url, "live")
    assert final.intact, final.problem
    mid_run = {n for n in seen if n < final.facts}
    assert len(mid_run) >= 3, (seen, final.facts)  # checked at several commits along the way


async def test_books_and_the_orders_lists_found_are_checked(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """A `kill --from-venues` run records each book and each listed order as facts; an
    edit of either, a book inserted or deleted, is named."""
    sim = simulator("sfox")
    place_book(sim, "sfox", 12)
    async with serve_simulators({"sfox": sim}) as server:
        config = books_config(tmp_path / "venues.toml", server)
        result = await run_cli(
            "kill", "--from-venues", "sfox", "--venues-config", str(config), "--json",
            "--reason", "verify test", env=cli_env(audit_url),
        )  # fmt: skip
    assert result.code == 0, result.stderr
    run_id = json.loads(result.stdout)["run_id"]
    assert verdict(audit_url, run_id).intact
    (listed,) = db_rows(audit_url, "select min(pk) from orders where listed_by is not null")[0]
    book_columns = (
        "run_id, venue, verdict, listed, from_input, cancelled, working_at_end, lists, "
        "started_at, first_request_at, last_answer_at, flat_at, seconds_to_flat, detail"
    )
    copy = book_columns.replace("run_id, venue,", "run_id, 'etna',")
    cases = [
        ("update books set verdict = 'draining'", "update books set verdict = 'flat'",
         "books sfox: verdict is 'draining', the chain recorded 'flat'"),
        ("update books set listed = listed + 1", "update books set listed = listed - 1",
         "books sfox: listed is 13, the chain recorded 12"),
        (f"update orders set listed_by = listed_by + 1000 where pk = {listed}",
         f"update orders set listed_by = listed_by - 1000 where pk = {listed}",
         f"orders {listed}: listed_by is "),
        (f"insert into books ({book_columns}) select {copy} from books",
         "delete from books where venue = 'etna'",
         "books etna: the row is in no recorded fact (inserted)"),
        ("delete from books", "", "books sfox: the row is missing (deleted)"),
    ]  # fmt: skip
    for change, undo, named in cases:
        tamper(audit_url, change)
        found = verdict(audit_url, run_id)
        assert found.problem.startswith(named), (change, found.problem)
        if undo:
            tamper(audit_url, undo)
            assert verdict(audit_url, run_id).intact, undo


async def test_an_export_of_a_broken_chain_holds_every_link_and_names_the_break(
    tmp_path: Path, serve_simulators: ServeSimulators, audit_url: str
) -> None:
    """export writes its header first and its digest once the links are through: a broken
    chain still gives a readable header (no digest) and every link."""
    run_id = await finished_run(tmp_path, serve_simulators, audit_url)
    tamper(audit_url, "update chain_links set facts = replace(facts, '\"canceled\"', "
                      "'\"failed\"') where facts like '%\"canceled\"%'")  # fmt: skip
    engine = sa.create_engine(audit_url)
    try:
        links = read_links(engine, run_id)
        export = tmp_path / "broken.jsonl"
        written = export_run(engine, run_id, export)
    finally:
        engine.dispose()
    assert not written.intact and "its hash does not match its facts" in written.problem
    lines = export.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header == {"format": "batchcancel-export/1", "run_id": run_id, "digest": ""}
    assert [json.loads(line)["hash"] for line in lines[1:]] == [link["hash"] for link in links]
    alone = verify_file(export)
    assert not alone.intact and alone.problem == written.problem
