"""--query is read-only for real, and float id columns are invalid (SPEC "Input").

Real SQLite files and real PostgreSQL databases; the hostile queries go through the real CLI
as a subprocess, pointed at a served sFOX simulator, so "nothing sent" is what the simulator saw.
"""

from __future__ import annotations

import secrets
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from batchcancel import sources
from batchcancel.commands import plan_rows
from batchcancel.errors import SourceError
from batchcancel.simulators.base import OrderState
from batchcancel.simulators.sfox import SfoxSimulator
from batchcancel.sources import read_query
from tests.conftest import (
    CREDENTIALS,
    CliResult,
    ServeSimulators,
    cli_env,
    db_rows,
    postgres_database,
    run_cli,
    write_venues_toml,
)
from tests.pg import PostgresServer
from tests.test_sources import audit_runs

BIG = 1234567890123456789  # 19 digits: a float would keep 17 of them
MAX_BIGINT = 9223372036854775807
FLOAT_ID = 12345678901234567.0  # str() gives 1.2345678901234568e+16
ROWS: list[tuple[Any, ...]] = [
    ("sfox", BIG, None, "BTCUSD", FLOAT_ID),
    ("sfox", MAX_BIGINT, None, None, 0.5),
    ("etna", 7, 12345678901234567, None, 2.0),
]
SELECT = "select venue, order_id from open_orders"


@dataclass
class Source:
    """A source database holding `open_orders`, and a way to see everything it holds."""

    backend: str
    url: str
    marker_dir: Path  # where the database server could write a file, if anything let it

    def state(self) -> list[Any]:
        """Tables, rows and settings a hostile query might change (a read-write look)."""
        if self.backend == "sqlite":
            with closing(sqlite3.connect(sa.engine.make_url(self.url).database or "")) as conn:
                return [
                    conn.execute("SELECT name FROM sqlite_master ORDER BY name").fetchall(),
                    conn.execute("SELECT * FROM open_orders ORDER BY rowid").fetchall(),
                    conn.execute("PRAGMA user_version").fetchall(),
                    conn.execute("PRAGMA journal_mode").fetchall(),
                ]
        return [
            db_rows(self.url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"),
            db_rows(self.url, "SELECT * FROM open_orders ORDER BY order_id"),
        ]


def make_source(backend: str, tmp_path: Path, postgres: PostgresServer | None) -> Source:
    """`open_orders` holding ROWS, in a SQLite file or a fresh PostgreSQL database."""
    if backend == "sqlite":
        path = tmp_path / "desk.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute(
                "CREATE TABLE open_orders (venue TEXT, order_id INTEGER, account_id INTEGER, "
                "symbol TEXT, price REAL)"
            )
            conn.executemany("INSERT INTO open_orders VALUES (?, ?, ?, ?, ?)", ROWS)
            conn.commit()
        return Source("sqlite", f"sqlite:///{path}", tmp_path)
    url = postgres_database(postgres)
    assert postgres is not None
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE open_orders (venue text, order_id bigint, account_id bigint, "
                "symbol text, price double precision)"
            )
            conn.execute(
                sa.text("INSERT INTO open_orders VALUES (:v, :o, :a, :s, :p)"),
                [dict(zip("voasp", row, strict=True)) for row in ROWS],
            )
            # A function that writes: calling it from a SELECT must be refused too.
            conn.exec_driver_sql(
                "CREATE FUNCTION purge() RETURNS bigint LANGUAGE sql "
                "AS $$ DELETE FROM open_orders RETURNING 1::bigint $$"
            )
    finally:
        engine.dispose()
    return Source("postgresql", url, postgres.root)  # the server's own folder: it may write there


@pytest.fixture(params=["sqlite", "postgresql"])
def source(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: PostgresServer | None
) -> Source:
    return make_source(request.param, tmp_path, postgres)


# Each hostile query, as a template: {marker} is a file path the query would create.
BOTH = {
    "commit-then-drop": f"{SELECT}; commit; drop table open_orders",
    "then-drop": f"{SELECT}; drop table open_orders",
    "then-delete": f"{SELECT}; delete from open_orders",
    "delete-returning": "delete from open_orders returning venue, order_id",
    "update-returning": "update open_orders set order_id = 1 returning venue, order_id",
    "insert-returning": "insert into open_orders (venue, order_id) values ('sfox', 5) "
    "returning venue, order_id",
    "drop": "drop table open_orders",
}
POSTGRES_ONLY = {
    "writing-cte": "with d as (delete from open_orders returning *) select venue, order_id from d",
    "commit-then-delete": "commit; delete from open_orders",
    "begin-read-write": "commit; begin read write; delete from open_orders; commit",
    "set-read-write": "set transaction read write; delete from open_orders",
    "session-read-write": "set session characteristics as transaction read write; commit; "
    "delete from open_orders",
    "default-read-write": "set default_transaction_read_only = off; commit; "
    "delete from open_orders",
    "writing-function": "select venue, purge() as order_id from open_orders",
    "select-into": "select venue, order_id into stolen from open_orders",
    "copy-to-program": "copy (select 1) to program 'touch {marker}'",
    "copy-to-file": "copy open_orders to '{marker}'",
}
SQLITE_ONLY = {
    "attach-new-file": "attach '{marker}' as other",
    "attach-uri-rwc": "attach 'file:{marker}?mode=rwc' as other",
    "pragma-user-version": "pragma user_version = 7",
    "pragma-journal-mode": "pragma journal_mode = wal",
    "vacuum-into": "vacuum into '{marker}'",
}
HOSTILE = [
    *(
        pytest.param(backend, sql, id=f"{backend}-{name}")
        for backend in ("sqlite", "postgresql")
        for name, sql in BOTH.items()
    ),
    *(
        pytest.param("postgresql", sql, id=f"postgresql-{name}")
        for name, sql in POSTGRES_ONLY.items()
    ),
    *(pytest.param("sqlite", sql, id=f"sqlite-{name}") for name, sql in SQLITE_ONLY.items()),
]


async def run_query(
    tmp_path: Path, serve: ServeSimulators, source: Source, sql: str, *extra: str
) -> tuple[CliResult, SfoxSimulator]:
    """`batchcancel run --query SQL --source-db URL` against a served sFOX simulator holding
    the source's sFOX orders; the audit database is a SQLite file in tmp_path."""
    simulator = SfoxSimulator(credentials=CREDENTIALS, rate_limit=None)
    simulator.seed({str(BIG): OrderState.OPEN, str(MAX_BIGINT): OrderState.OPEN})
    async with serve({"sfox": simulator}) as server:
        config = write_venues_toml(tmp_path / "venues.toml", server, sfox={"rate_limit": 0})
        result = await run_cli(
            "run",
            "--query",
            sql,
            "--source-db",
            source.url,
            "--venues-config",
            str(config),
            "--json",
            *extra,
            env=cli_env(tmp_path / "audit.db"),
        )
    return result, simulator


class TestReadOnly:
    @pytest.mark.parametrize(("backend", "template"), HOSTILE)
    async def test_hostile_query_exits_2_and_changes_nothing(
        self,
        tmp_path: Path,
        serve_simulators: ServeSimulators,
        postgres: PostgresServer | None,
        backend: str,
        template: str,
    ) -> None:
        """SPEC: the database itself refuses any write; a refusal is exit 2, one line, no run,
        nothing sent, and the source database (and the file system) unchanged."""
        source = make_source(backend, tmp_path, postgres)
        marker = source.marker_dir / f"written-{secrets.token_hex(4)}"
        before = source.state()
        result, simulator = await run_query(
            tmp_path, serve_simulators, source, template.format(marker=marker)
        )
        assert result.code == 2, result.stderr + result.stdout
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("batchcancel: error: --query"), lines
        assert source.state() == before
        assert not marker.exists()
        assert simulator.total_requests == 0
        assert audit_runs(tmp_path / "audit.db") == 0

    @pytest.mark.parametrize(
        ("sql", "expected"),
        [
            (f"{SELECT} where venue = 'sfox';", [BIG, MAX_BIGINT]),
            (f"  -- a list\n/* resting */ {SELECT} where venue like 's%' ;\n", [BIG, MAX_BIGINT]),
            (f"with o as ({SELECT}) select venue, order_id from o", [BIG, MAX_BIGINT, 7]),
            (f"{SELECT} where venue = 'sfox;' or venue = 'etna'", [7]),
        ],
        ids=["trailing-semicolon", "comments-and-percent", "with", "semicolon-in-string"],
    )
    def test_plain_queries_still_read(self, source: Source, sql: str, expected: list[int]) -> None:
        """The read-only path still reads what an operator writes."""
        table = read_query(sql, source.url, venue=None)
        ids = [n.row.order_id for chunk in table.chunks() for n in chunk]
        assert sorted(ids) == sorted(str(i) for i in expected)

    def test_postgresql_url_of_another_driver_reads_through_psycopg(
        self, tmp_path: Path, postgres: PostgresServer | None
    ) -> None:
        """A URL naming another PostgreSQL driver (psycopg2 here, whose simple-query cursor
        would run `; commit; drop ...`) is read through psycopg 3 all the same."""
        source = make_source("postgresql", tmp_path, postgres)
        url = source.url.replace("postgresql+psycopg://", "postgresql+psycopg2://")
        table = read_query(f"{SELECT} where venue = 'etna'", url, venue=None)
        assert [n.row.order_id for chunk in table.chunks() for n in chunk] == ["7"]
        with pytest.raises(SourceError, match="--query failed"):
            read_query(f"{SELECT}; commit; drop table open_orders", url, venue=None)
        assert len(source.state()[1]) == len(ROWS)

    def test_in_memory_sqlite_refused(self) -> None:
        """An in-memory SQLite database holds no orders: a one-line usage error."""
        for url in ("sqlite://", "sqlite:///:memory:"):
            with pytest.raises(SourceError, match="in-memory") as exc:
                read_query("select 'sfox' as venue, '1' as order_id", url, venue=None)
            assert "\n" not in str(exc.value)


class TestOtherDialects:
    """Dialects whose database does not enforce read-only: one plain SELECT/WITH only."""

    @pytest.mark.parametrize(
        "sql",
        [
            "select venue, order_id from open_orders",
            "  SELECT 1;  ",
            "-- a comment\n/* another */\nWITH o AS (SELECT 1) SELECT * FROM o",
            "select replace(symbol, '-', '') as symbol, order_id from open_orders",
        ],
    )
    def test_accepted(self, sql: str) -> None:
        assert sources.plain_query_problem(sql) is None

    @pytest.mark.parametrize(
        "sql",
        [
            "delete from open_orders",
            "select 1; delete from open_orders",
            "select 1; commit; drop table open_orders",
            "select 1;; ",
            "select 1; -- and a comment",
            "with d as (select 1) delete from open_orders",
            "with d as (delete from open_orders returning *) select * from d",
            "select * into outfile '/tmp/x' from open_orders",
            "select * from open_orders for update",
            "/*!50000 delete from open_orders where 1 or */ select 1",
            "# mysql comment\nselect 1",
            "set transaction read write",
            "call purge()",
            "exec purge",
            "",
        ],
    )
    def test_refused(self, sql: str) -> None:
        problem = sources.plain_query_problem(sql)
        assert problem and "\n" not in problem


class TestFloatIds:
    def test_float_order_ids_invalid_with_cast_reason(self, source: Source) -> None:
        """SPEC: an id that arrives as a float is invalid, with a reason to cast it."""
        table = read_query(
            "select venue, price as order_id from open_orders where venue = 'sfox'",
            source.url,
            venue=None,
        )
        planned = list(plan_rows(next(table.chunks()), only_venue=None))
        assert [p.order_id for p in planned] == [repr(FLOAT_ID), "0.5"]
        for p in planned:
            assert p.invalid_reason and "order_id" in p.invalid_reason
            assert "cast" in p.invalid_reason.lower()

    def test_float_account_id_invalid_with_cast_reason(self, source: Source) -> None:
        table = read_query(
            "select venue, order_id, price as account_id from open_orders where venue = 'etna'",
            source.url,
            venue=None,
        )
        (planned,) = plan_rows(next(table.chunks()), only_venue=None)
        assert planned.invalid_reason and "account_id" in planned.invalid_reason
        assert "cast" in planned.invalid_reason.lower()

    def test_sqlite_float_values_among_integers(self, tmp_path: Path) -> None:
        """SQLite types each value: only the rows whose id is a float are invalid."""
        path = tmp_path / "mixed.db"
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("CREATE TABLE t (venue TEXT, order_id)")
            conn.executemany("INSERT INTO t VALUES ('sfox', ?)", [(BIG,), (FLOAT_ID,), ("42",)])
            conn.commit()
        table = read_query("select * from t order by rowid", f"sqlite:///{path}", venue=None)
        planned = list(plan_rows(next(table.chunks()), only_venue=None))
        assert [(p.order_id, p.invalid_reason is None) for p in planned] == [
            (str(BIG), True),
            (repr(FLOAT_ID), False),
            ("42", True),
        ]

    async def test_float_ids_recorded_invalid_never_sent(
        self, tmp_path: Path, serve_simulators: ServeSimulators, source: Source
    ) -> None:
        """Through the CLI: float ids reach the audit as invalid (reason: cast) and no request
        for them leaves; the run needs attention (exit 1)."""
        result, simulator = await run_query(
            tmp_path,
            serve_simulators,
            source,
            "select venue, price as order_id from open_orders where venue = 'sfox'",
        )
        assert result.code == 1, result.stderr
        assert simulator.total_requests == 0
        recorded = db_rows(
            f"sqlite:///{tmp_path / 'audit.db'}",
            "SELECT order_id, outcome, reason FROM orders ORDER BY seq",
        )
        assert [(order_id, outcome) for order_id, outcome, _ in recorded] == [
            (repr(FLOAT_ID), "invalid"),
            ("0.5", "invalid"),
        ]
        assert all("cast" in reason.lower() for _, _, reason in recorded)

    async def test_bigint_ids_keep_every_digit_with_a_null(
        self, tmp_path: Path, serve_simulators: ServeSimulators, source: Source
    ) -> None:
        """19-digit integer ids go out with every digit, also when the column holds a NULL
        (which must not turn the column into floats); the NULL row is invalid, not sent."""
        result, simulator = await run_query(
            tmp_path,
            serve_simulators,
            source,
            f"{SELECT} where venue = 'sfox' union all select 'sfox', null",
        )
        assert result.code == 1, result.stderr
        assert dict(simulator.requests) == {str(BIG): 1, str(MAX_BIGINT): 1}
        recorded = db_rows(
            f"sqlite:///{tmp_path / 'audit.db'}",
            "SELECT order_id, outcome FROM orders ORDER BY order_id",
        )
        assert recorded == [("", "invalid"), (str(BIG), "canceled"), (str(MAX_BIGINT), "canceled")]
