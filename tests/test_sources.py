"""Order sources: malformed CSV files, stdin and read-only queries, through to plan_rows and the CLI.

Real files and real SQLite databases; the CLI runs as a subprocess with no BATCHCANCEL_*
variables, so its exit code, stderr and audit database are exactly what an operator sees.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from batchcancel import sources
from batchcancel.audit.store import PlannedOrder
from batchcancel.commands import plan_rows
from batchcancel.errors import SourceError
from batchcancel.sources import NumberedRow, OrderTable, read_csv, read_query
from batchcancel.venues.base import OrderRow
from tests.conftest import CliResult

CRUX_UUID = "3f2b9c1e-8a4d-4f6b-9c2e-1d7a5b3e9f01"
MEGABYTE = 1024 * 1024


def write(path: Path, data: bytes | str) -> Path:
    """Write `data` exactly as given (no newline translation)."""
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def rows(table: OrderTable) -> list[NumberedRow]:
    return [numbered for chunk in table.chunks() for numbered in chunk]


def order_ids(table: OrderTable) -> list[str]:
    return [numbered.row.order_id for numbered in rows(table)]


def planned(table: OrderTable, *, only_venue: str | None = None) -> list[PlannedOrder]:
    return list(plan_rows(rows(table), only_venue=only_venue))


def read(tmp_path: Path, data: bytes | str, *, venue: str | None = None) -> OrderTable:
    return read_csv(str(write(tmp_path / "orders.csv", data)), venue=venue)


def assert_one_line(message: str) -> None:
    assert message
    assert "\n" not in message and "\r" not in message


# --- the CLI as a subprocess ------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The parent environment without any BATCHCANCEL_* variable."""
    return {k: v for k, v in os.environ.items() if not k.startswith("BATCHCANCEL_")}


def run_cli(tmp_path: Path, *args: str, stdin: bytes | None = None) -> CliResult:
    """`python -m batchcancel ARGS --db sqlite:///{tmp_path}/a.db`, in tmp_path."""
    process = subprocess.run(
        [sys.executable, "-m", "batchcancel", *args, "--db", f"sqlite:///{tmp_path}/a.db"],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        env=clean_env(),
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    return CliResult(
        process.returncode,
        process.stdout.decode("utf-8", errors="replace"),
        process.stderr.decode("utf-8", errors="replace"),
    )


def audit_runs(db: Path) -> int:
    """How many runs the audit database holds (0 when it or its schema does not exist)."""
    if not db.exists():
        return 0
    with closing(sqlite3.connect(db)) as conn:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone() is None:
            return 0
        return int(conn.execute("SELECT count(*) FROM runs").fetchone()[0])


def audit_order_ids(db: Path) -> list[str]:
    with closing(sqlite3.connect(db)) as conn:
        return [row[0] for row in conn.execute("SELECT order_id FROM orders ORDER BY seq")]


def assert_usage_error(result: CliResult, db: Path) -> None:
    """SPEC: exit 2, one line on stderr, no traceback, nothing recorded."""
    assert result.code == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("batchcancel: error:")
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert audit_runs(db) == 0


# --- a real SQLite source database ------------------------------------------------------------


@pytest.fixture
def source_db(tmp_path: Path) -> Path:
    """A SQLite file with an INTEGER-id order table and a TEXT-id one."""
    path = tmp_path / "source.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "CREATE TABLE orders (venue TEXT, order_id INTEGER, account_id INTEGER, symbol TEXT)"
        )
        conn.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?)",
            [
                ("tanx", 9223372036854775807, None, "BTCUSDT"),
                ("etna", 7, 12345678901234567, None),
                ("tanx", 5, None, ""),
            ],
        )
        conn.execute("CREATE TABLE text_ids (venue TEXT, order_id TEXT)")
        conn.executemany(
            "INSERT INTO text_ids VALUES (?, ?)",
            [("sfox", "001"), ("sfox", "12345678901234567890"), ("sfox", "1.0")],
        )
        conn.commit()
    return path


def table_contents(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with closing(sqlite3.connect(db)) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}


# --- tests ------------------------------------------------------------------------------------


class TestUnreadableFile:
    def test_missing_file(self, tmp_path: Path) -> None:
        """A path that does not exist is a SourceError naming it, in one line."""
        path = tmp_path / "nope.csv"
        with pytest.raises(SourceError, match="does not exist") as exc:
            read_csv(str(path), venue=None)
        assert str(path) in str(exc.value)
        assert_one_line(str(exc.value))

    def test_directory(self, tmp_path: Path) -> None:
        """A directory is not a CSV file."""
        with pytest.raises(SourceError, match="is a directory") as exc:
            read_csv(str(tmp_path), venue=None)
        assert_one_line(str(exc.value))

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"", id="empty"),
            pytest.param(b"   \n\t\r\n  \n", id="whitespace-only"),
            pytest.param(b"\xef\xbb\xbf", id="bom-only"),
            pytest.param(b"\xef\xbb\xbf \r\n", id="bom-and-blank-line"),
        ],
    )
    def test_no_content(self, tmp_path: Path, data: bytes) -> None:
        """A file with nothing but whitespace has no header: SourceError 'is empty'."""
        with pytest.raises(SourceError, match="is empty") as exc:
            read(tmp_path, data)
        assert_one_line(str(exc.value))

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"caf\xe9,order_id\nsfox,1\n", id="latin1-header"),
            pytest.param(b"venue,order_id\nsfox,caf\xe9\n", id="latin1-value"),
            pytest.param(b"venue,order_id\nsfox,\xff\xfe\n", id="invalid-bytes"),
        ],
    )
    def test_not_utf8(self, tmp_path: Path, data: bytes) -> None:
        """Undecodable bytes are a one-line SourceError telling the operator to save as UTF-8."""
        with pytest.raises(SourceError, match="not valid UTF-8") as exc:
            read(tmp_path, data)
        assert_one_line(str(exc.value))

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param(b"venue,order_id\nsfox,1\x002\n", id="nul-in-value"),
            pytest.param("venue,order_id\nsfox,1\n".encode("utf-16"), id="utf-16"),
        ],
    )
    def test_nul_bytes(self, tmp_path: Path, data: bytes) -> None:
        """A NUL byte means a binary (or UTF-16) file, not a text CSV."""
        with pytest.raises(SourceError, match="NUL") as exc:
            read(tmp_path, data)
        assert_one_line(str(exc.value))

    @pytest.mark.parametrize(
        "data",
        [
            pytest.param('venue,order_id\nsfox,"1\n', id="unterminated-quote"),
            pytest.param("venue,order_id\nsfox,1\nsfox,2,3\n", id="row-with-extra-field"),
        ],
    )
    def test_broken_csv(self, tmp_path: Path, data: str) -> None:
        """A CSV the parser cannot tokenise is a one-line SourceError, not a pandas traceback."""
        with pytest.raises(SourceError, match="not a readable CSV file") as exc:
            read(tmp_path, data)
        assert_one_line(str(exc.value))

    def test_first_row_with_extra_field(self, tmp_path: Path) -> None:
        """A first data row with more fields than the header is rejected, not read shifted."""
        with pytest.raises(SourceError):
            rows(read(tmp_path, "venue,order_id\nsfox,1,extra\n"))


class TestHeader:
    def test_utf8_bom(self, tmp_path: Path) -> None:
        """A UTF-8 BOM (Excel's 'CSV UTF-8') does not hide the first column's name."""
        table = read(tmp_path, b"\xef\xbb\xbfvenue,order_id\nsfox,1\n")
        assert [n.row.venue for n in rows(table)] == ["sfox"]
        assert order_ids(table) == ["1"]

    def test_utf8_bom_before_order_id(self, tmp_path: Path) -> None:
        """With --venue and order_id as the only (first) column, the BOM still goes."""
        table = read(tmp_path, b"\xef\xbb\xbforder_id\n1\n", venue="sfox")
        assert order_ids(table) == ["1"]

    @pytest.mark.parametrize(
        "header",
        [
            "VENUE,ORDER_ID,ACCOUNT_ID,SYMBOL",
            "Venue,Order_Id,Account_Id,Symbol",
            " venue , order_id ,  account_id,symbol  ",
            "\tVenue\t,ORDER_id,account_ID,SyMbOl",
        ],
    )
    def test_names_case_insensitive_and_trimmed(self, tmp_path: Path, header: str) -> None:
        """Column names match whatever their case and surrounding spaces."""
        table = read(tmp_path, f"{header}\netna,5,100,BTCUSDT\n")
        [numbered] = rows(table)
        row = numbered.row
        assert (row.venue, row.order_id, row.account_id, row.symbol) == (
            "etna",
            "5",
            "100",
            "BTCUSDT",
        )

    def test_header_only(self, tmp_path: Path) -> None:
        """A header with no rows is an empty order list, not an error (nothing to cancel)."""
        table = read(tmp_path, "venue,order_id,account_id,symbol\n")
        assert len(table) == 0
        assert rows(table) == []
        assert table.duplicates == 0

    def test_no_order_id_column(self, tmp_path: Path) -> None:
        """Without order_id the message lists the columns that were found, as written."""
        with pytest.raises(SourceError, match="no `order_id` column") as exc:
            read(tmp_path, "Venue,OrderID,Account\nsfox,1,2\n")
        assert "Venue, OrderID, Account" in str(exc.value)
        assert_one_line(str(exc.value))

    def test_wrong_delimiter_lists_the_one_column(self, tmp_path: Path) -> None:
        """A semicolon file reads as one column; the message shows it, so the cause is plain."""
        with pytest.raises(SourceError, match="no `order_id` column") as exc:
            read(tmp_path, "venue;order_id\nsfox;1\n")
        assert "venue;order_id" in str(exc.value)

    def test_no_venue_column_without_venue_option(self, tmp_path: Path) -> None:
        """Without a venue column every row's venue is unknown unless --venue is given."""
        with pytest.raises(SourceError, match="no `venue` column and --venue") as exc:
            read(tmp_path, "order_id\n1\n")
        assert_one_line(str(exc.value))

    def test_no_venue_column_with_venue_option(self, tmp_path: Path) -> None:
        """With --venue the venue column is optional and every row gets that venue."""
        table = read(tmp_path, "order_id\n1\n2\n", venue="sfox")
        assert [(n.row.venue, n.row.order_id) for n in rows(table)] == [
            ("sfox", "1"),
            ("sfox", "2"),
        ]

    @pytest.mark.parametrize(
        "header", ["venue,order_id, order_id", "venue,order_id,ORDER_ID", "Venue,venue,order_id"]
    )
    def test_repeated_names_after_normalising(self, tmp_path: Path, header: str) -> None:
        """Two columns that normalise to the same name are ambiguous: SourceError."""
        with pytest.raises(SourceError, match="repeated column names"):
            read(tmp_path, f"{header}\nsfox,1,2\n")

    def test_exactly_repeated_name(self, tmp_path: Path) -> None:
        """A header naming order_id twice is as ambiguous as 'order_id, ORDER_ID'."""
        with pytest.raises(SourceError, match="repeated column names"):
            read(tmp_path, "venue,order_id,order_id\nsfox,1,2\n")

    def test_extra_columns_ignored(self, tmp_path: Path) -> None:
        """Columns beyond SPEC's four are ignored; missing optional ones are ''."""
        table = read(tmp_path, "note,order_id,venue,price\nhello,1,sfox,9.5\n")
        assert [n.row for n in rows(table)] == [OrderRow("sfox", "1", "", "")]


class TestValues:
    @pytest.mark.parametrize("eol", ["\r\n", "\r", "\n"], ids=["crlf", "cr", "lf"])
    def test_line_ends(self, tmp_path: Path, eol: str) -> None:
        """CRLF (and bare CR) line ends leave no carriage return in the last column."""
        text = eol.join(["venue,order_id,symbol", "zebpay,A1,BTCUSDT", "zebpay,A2,ETHUSDT"]) + eol
        table = read(tmp_path, text)
        assert [(n.row.order_id, n.row.symbol) for n in rows(table)] == [
            ("A1", "BTCUSDT"),
            ("A2", "ETHUSDT"),
        ]

    def test_crlf_last_column_is_order_id(self, tmp_path: Path) -> None:
        """With order_id last, a CRLF file's ids carry no '\\r' and validate."""
        table = read(tmp_path, "venue,order_id\r\ntanx,5\r\ntanx,6\r\n")
        assert order_ids(table) == ["5", "6"]
        assert all(p.invalid_reason is None for p in planned(table))

    def test_quoted_commas_and_quotes(self, tmp_path: Path) -> None:
        """A quoted value keeps its commas; doubled quotes are one quote."""
        table = read(tmp_path, 'venue,order_id,symbol\nsfox,"a,b",X\nsfox,"q""1",Y\n')
        assert [(n.row.order_id, n.row.symbol) for n in rows(table)] == [("a,b", "X"), ('q"1', "Y")]

    def test_quoted_newline(self, tmp_path: Path) -> None:
        """A quoted line break belongs to the value; the next row is still the next row."""
        table = read(tmp_path, 'venue,order_id\nsfox,"a\nb"\nsfox,2\n')
        assert order_ids(table) == ["a\nb", "2"]
        assert [n.seq for n in rows(table)] == [1, 2]

    @pytest.mark.parametrize(
        "order_id",
        ["1e5", "001", "1.0", "0x1F", "1_000", "-0", "+7", "NaN", "NA", "null", "None", "inf"],
    )
    def test_ids_stay_exact_strings(self, tmp_path: Path, order_id: str) -> None:
        """Ids that look like numbers or missing values are kept character for character."""
        table = read(tmp_path, f"venue,order_id,account_id\nsfox,{order_id},{order_id}\n")
        row = rows(table)[0].row
        assert row.order_id == order_id
        assert row.account_id == order_id

    @pytest.mark.parametrize(
        "order_id", ["12345678901234567890", "99999999999999999999", "1" + "0" * 29]
    )
    def test_long_integer_ids_exact(self, tmp_path: Path, order_id: str) -> None:
        """Ids of 20+ digits are not rounded through int64 or float."""
        table = read(tmp_path, f"venue,order_id\nsfox,{order_id}\n")
        assert order_ids(table) == [order_id]
        assert planned(table)[0].invalid_reason is None

    def test_whitespace_around_values_trimmed(self, tmp_path: Path) -> None:
        """Spaces and tabs around every value go; venue names are lower-cased."""
        table = read(
            tmp_path, "venue,order_id,account_id,symbol\n  ETNA\t,  5 ,\t100  , BTCUSDT \n"
        )
        row = rows(table)[0].row
        assert (row.venue, row.order_id, row.account_id, row.symbol) == (
            "etna",
            "5",
            "100",
            "BTCUSDT",
        )
        assert planned(table)[0].invalid_reason is None

    def test_short_row_fills_empty(self, tmp_path: Path) -> None:
        """A row with fewer fields than the header gets '' (never 'nan') for the rest."""
        table = read(tmp_path, "venue,order_id,account_id\netna,5\nsfox\n")
        assert [(n.row.order_id, n.row.account_id) for n in rows(table)] == [("5", ""), ("", "")]
        reasons = [p.invalid_reason for p in planned(table)]
        assert reasons[0] is not None and "account_id" in reasons[0]
        assert reasons[1] == "order_id is empty"

    def test_blank_lines_skipped_and_seq_counts_data_rows(self, tmp_path: Path) -> None:
        """Blank lines are no rows; seq is the 1-based position among data rows."""
        table = read(tmp_path, "venue,order_id\n\nsfox,1\n\n\nsfox,2\n\n")
        assert [(n.seq, n.row.order_id) for n in rows(table)] == [(1, "1"), (2, "2")]

    def test_megabyte_order_id(self, tmp_path: Path) -> None:
        """A 1 MB id is read whole without crashing, and sFOX validation rejects it."""
        huge = "9" * MEGABYTE
        table = read(tmp_path, f"venue,order_id\nsfox,{huge}\nsfox,1\n")
        assert [len(i) for i in order_ids(table)] == [MEGABYTE, 1]
        first, second = planned(table)
        assert first.invalid_reason is not None and "sfox order_id" in first.invalid_reason
        assert second.invalid_reason is None


class TestBothParsers:
    """Arrow's parser reads big lists fast; it must read every file it accepts exactly as the
    C parser does, and hand every other file to the C parser."""

    @pytest.mark.parametrize(
        ("data", "arrow_reads_it"),
        [
            pytest.param("venue,order_id\nsfox,1\nsfox,2\n", True, id="plain"),
            pytest.param("venue,order_id\r\nsfox,1\r\nsfox,2", True, id="crlf-no-last-eol"),
            pytest.param("venue,order_id\rsfox,1\rsfox,2\r", True, id="cr"),
            pytest.param("venue,order_id\r\n\r\nsfox,1\r\n\r\n", True, id="crlf-blank-lines"),
            pytest.param("venue,order_id\n\nsfox,1\n\n\nsfox,2\n\n", True, id="blank-lines"),
            pytest.param("\ufeffVenue , ORDER_ID\n SFOX\t, 007 \n", True, id="bom-case-spaces"),
            pytest.param(
                "venue,order_id,account_id,symbol\netna,5,100,BTC-USDT\nETNA,5,100,BTC-USDT\n",
                True,
                id="duplicates",
            ),
            pytest.param(
                "venue,order_id\nsfox,NA\nsfox,null\nsfox,\nsfox,nan\n,N/A\nsfox,1e5\n",
                True,
                id="na-like",
            ),
            pytest.param(
                "venue,order_id\nsfox,\u00a0x\u00a0\nsfox,\u00e9\u4e2d\n", True, id="unicode"
            ),
            pytest.param("order_id,venue,extra\n1,sfox,a\n2,crux,b\n", True, id="extra-column"),
            pytest.param("venue,order_id\n", True, id="header-only"),
            pytest.param("venue,order_id\nsfox,1\nsfox\n", False, id="short-row"),
            pytest.param("venue,order_id\nsfox,1\n  \nsfox,2\n", False, id="whitespace-line"),
            pytest.param('venue,order_id\nsfox,"1,2"\n', False, id="quoted"),
            pytest.param("order_id\n1\n  \n2\n", False, id="one-column"),
        ],
    )
    def test_same_rows_from_either_parser(
        self, tmp_path: Path, data: str, arrow_reads_it: bool
    ) -> None:
        path = write(tmp_path / "orders.csv", data)
        raw = path.read_bytes()
        text = raw.decode("utf-8-sig")
        header = next(csv.reader(io.StringIO(text, newline=None)))
        took_arrow = sources._parse_fast(raw, header) is not None
        assert took_arrow == arrow_reads_it
        exact = sources._normalise(
            sources._parse_exact(text, header, name="x"), name="x", venue="sfox"
        )
        table = read_csv(str(path), venue="sfox")
        assert rows(table) == rows(exact)
        assert (table.duplicates, table.venue_counts()) == (exact.duplicates, exact.venue_counts())


class TestDuplicates:
    def test_exact_duplicates_collapse(self, tmp_path: Path) -> None:
        """Exact duplicate rows become one order, counted; the first occurrence keeps its seq."""
        table = read(
            tmp_path,
            "venue,order_id,account_id\netna,5,100\nsfox,1,\netna,5,100\netna,5,100\nsfox,1,\n",
        )
        assert table.duplicates == 3
        assert len(table) == 2
        assert [(n.seq, n.row.venue, n.row.order_id) for n in rows(table)] == [
            (1, "etna", "5"),
            (2, "sfox", "1"),
        ]

    def test_duplicates_after_trimming_and_case(self, tmp_path: Path) -> None:
        """Rows equal once trimmed and the venue lower-cased are duplicates too."""
        table = read(tmp_path, "venue,order_id\nsfox,1\n SFOX , 1\nSfox,1 \n")
        assert table.duplicates == 2
        assert order_ids(table) == ["1"]

    @pytest.mark.parametrize(
        "second",
        ["etna,5,200", "etna,05,100", "etna,6,100", "tanx,5,"],
        ids=["other-account", "leading-zero", "other-id", "other-venue"],
    )
    def test_near_duplicates_kept(self, tmp_path: Path, second: str) -> None:
        """Rows that differ in any column (even '5' vs '05') are distinct orders."""
        table = read(tmp_path, f"venue,order_id,account_id\netna,5,100\n{second}\n")
        assert table.duplicates == 0
        assert len(table) == 2


class TestPlanRows:
    def test_unknown_venue(self, tmp_path: Path) -> None:
        """A row for an adapter we do not have is invalid, and says which venues exist."""
        table = read(tmp_path, "venue,order_id\nnyse,1\nsfox,2\n")
        first, second = planned(table)
        assert first.invalid_reason is not None
        assert "unknown venue 'nyse'" in first.invalid_reason
        assert "sfox" in first.invalid_reason
        assert second.invalid_reason is None

    def test_empty_venue_without_venue_option(self, tmp_path: Path) -> None:
        """An empty venue cell is an unknown venue, not a crash."""
        table = read(tmp_path, "venue,order_id\n,1\n")
        reason = planned(table)[0].invalid_reason
        assert reason is not None and "unknown venue ''" in reason

    @pytest.mark.parametrize("account", ["", "abc", "-1", "1.0"])
    def test_etna_needs_an_integer_account(self, tmp_path: Path, account: str) -> None:
        """ETNA rows without a numeric account_id are invalid, naming the column."""
        table = read(tmp_path, f"venue,order_id,account_id\netna,5,{account}\netna,6,100\n")
        first, second = planned(table)
        assert first.invalid_reason is not None and "account_id" in first.invalid_reason
        assert second.invalid_reason is None

    def test_etna_without_account_column(self, tmp_path: Path) -> None:
        """An ETNA list with no account_id column at all: every row invalid."""
        table = read(tmp_path, "venue,order_id\netna,5\netna,6\n")
        assert all(
            p.invalid_reason is not None and "account_id" in p.invalid_reason
            for p in planned(table)
        )

    @pytest.mark.parametrize(
        "order_id",
        ["12345", "not-a-uuid", CRUX_UUID[:-1], CRUX_UUID + "0", CRUX_UUID.replace("-", "_")],
    )
    def test_crux_needs_a_uuid(self, tmp_path: Path, order_id: str) -> None:
        """Crux ids are UUIDs; anything else is invalid with a reason."""
        table = read(tmp_path, f"venue,order_id\ncrux,{order_id}\ncrux,{CRUX_UUID}\n")
        first, second = planned(table)
        assert first.invalid_reason is not None and "UUID" in first.invalid_reason
        assert second.invalid_reason is None

    def test_venue_option_fills_empty_cells(self, tmp_path: Path) -> None:
        """--venue fills empty venue cells; rows naming it (any case) stay valid."""
        table = read(tmp_path, "venue,order_id\n,1\nSFOX,2\n  ,3\n", venue="sfox")
        result = planned(table, only_venue="sfox")
        assert [(p.venue, p.order_id) for p in result] == [
            ("sfox", "1"),
            ("sfox", "2"),
            ("sfox", "3"),
        ]
        assert all(p.invalid_reason is None for p in result)

    def test_venue_option_rejects_rows_for_another_venue(self, tmp_path: Path) -> None:
        """A row naming another venue than --venue keeps its venue and becomes invalid."""
        table = read(tmp_path, "venue,order_id\n,1\ntanx,2\n", venue="sfox")
        first, second = planned(table, only_venue="sfox")
        assert first.invalid_reason is None
        assert second.venue == "tanx"
        assert second.invalid_reason is not None
        assert "'tanx'" in second.invalid_reason and "--venue sfox" in second.invalid_reason

    def test_seq_and_columns_carried(self, tmp_path: Path) -> None:
        """Planned orders keep each row's seq, venue, ids and symbol."""
        table = read(tmp_path, "venue,order_id,account_id,symbol\nzebpay,C1,,BTCUSDT\netna,5,9,\n")
        assert planned(table) == [
            PlannedOrder(1, "zebpay", "C1", "", "BTCUSDT", None),
            PlannedOrder(2, "etna", "5", "9", "", None),
        ]


class TestQuery:
    def test_right_columns(self, source_db: Path, tmp_path: Path) -> None:
        """A query returning SPEC's columns gives exactly the rows the same CSV would."""
        table = read_query(
            "SELECT venue, order_id, account_id, symbol FROM orders ORDER BY rowid",
            f"sqlite:///{source_db}",
            venue=None,
        )
        same_csv = read(
            tmp_path,
            "venue,order_id,account_id,symbol\n"
            "tanx,9223372036854775807,,BTCUSDT\n"
            "etna,7,12345678901234567,\n"
            "tanx,5,,\n",
        )
        assert rows(table) == rows(same_csv)
        assert [n.seq for n in rows(table)] == [1, 2, 3]
        assert table.description == "--query"

    def test_integer_columns_are_exact_strings(self, source_db: Path) -> None:
        """INTEGER ids come out as their exact decimal strings; NULL is ''."""
        table = read_query(
            "SELECT venue, order_id, account_id, symbol FROM orders ORDER BY rowid",
            f"sqlite:///{source_db}",
            venue=None,
        )
        assert [(n.row.order_id, n.row.account_id, n.row.symbol) for n in rows(table)] == [
            ("9223372036854775807", "", "BTCUSDT"),
            ("7", "12345678901234567", ""),
            ("5", "", ""),
        ]
        reasons = [p.invalid_reason for p in planned(table)]
        # Exact digits, never read as floats; 2^63-1 is past what tanX can take (2^53-1).
        assert reasons[1:] == [None, None]
        assert reasons[0] is not None and "from 1 to 9007199254740991" in reasons[0]

    def test_text_columns_are_exact(self, source_db: Path) -> None:
        """TEXT ids keep leading zeros, 20 digits and dots."""
        table = read_query(
            "SELECT * FROM text_ids ORDER BY rowid", f"sqlite:///{source_db}", venue=None
        )
        assert order_ids(table) == ["001", "12345678901234567890", "1.0"]

    def test_column_names_normalised_and_venue_option(self, source_db: Path) -> None:
        """Aliases in any case and spacing match; --venue stands in for a missing venue."""
        table = read_query(
            'SELECT order_id AS " Order_ID " FROM text_ids ORDER BY rowid',
            f"sqlite:///{source_db}",
            venue="sfox",
        )
        assert [n.row for n in rows(table)][:1] == [OrderRow("sfox", "001")]

    def test_duplicates_collapse(self, source_db: Path) -> None:
        """A query's exact duplicate rows collapse like a CSV's."""
        table = read_query(
            "SELECT venue, order_id FROM text_ids UNION ALL SELECT venue, order_id FROM text_ids",
            f"sqlite:///{source_db}",
            venue=None,
        )
        assert len(table) == 3
        assert table.duplicates == 3

    @pytest.mark.parametrize(
        "sql",
        ["SELEC venue, order_id FROM orders", "SELECT venue, order_id FROM nosuch", ""],
        ids=["syntax", "no-table", "empty"],
    )
    def test_failing_query(self, source_db: Path, sql: str) -> None:
        """A query the database refuses is a one-line SourceError."""
        with pytest.raises(SourceError, match="--query") as exc:
            read_query(sql, f"sqlite:///{source_db}", venue=None)
        assert_one_line(str(exc.value))

    def test_two_statements(self, source_db: Path) -> None:
        """A second statement after ';' is refused, not run."""
        with pytest.raises(SourceError, match="--query failed"):
            read_query(
                "SELECT venue, order_id FROM text_ids; DELETE FROM text_ids",
                f"sqlite:///{source_db}",
                venue=None,
            )
        assert len(table_contents(source_db)["text_ids"]) == 3

    @pytest.mark.parametrize("url", ["not a url", "nosuchdialect://x/y"])
    def test_unusable_url(self, url: str) -> None:
        """A --source-db that is no SQLAlchemy URL is a one-line SourceError."""
        with pytest.raises(SourceError, match="--source-db") as exc:
            read_query("SELECT 1", url, venue=None)
        assert_one_line(str(exc.value))

    def test_wrong_columns(self, source_db: Path) -> None:
        """A query without order_id lists what it returned."""
        with pytest.raises(SourceError, match="no `order_id` column") as exc:
            read_query(
                "SELECT venue, symbol AS sym FROM orders", f"sqlite:///{source_db}", venue=None
            )
        assert "venue, sym" in str(exc.value)
        assert_one_line(str(exc.value))

    def test_missing_venue_column(self, source_db: Path) -> None:
        """A query without venue needs --venue, like a CSV."""
        with pytest.raises(SourceError, match="no `venue` column"):
            read_query("SELECT order_id FROM orders", f"sqlite:///{source_db}", venue=None)

    @pytest.mark.parametrize(
        "sql",
        [
            "INSERT INTO text_ids VALUES ('sfox', 'x') RETURNING venue, order_id",
            "DELETE FROM text_ids RETURNING venue, order_id",
            "UPDATE text_ids SET order_id = 'x' RETURNING venue, order_id",
            "DELETE FROM text_ids",
            "INSERT INTO text_ids VALUES ('sfox', 'x')",
            "DROP TABLE text_ids",
            "CREATE TABLE evil (venue TEXT, order_id TEXT)",
        ],
        ids=[
            "insert-returning",
            "delete-returning",
            "update-returning",
            "delete",
            "insert",
            "drop",
            "create",
        ],
    )
    def test_query_cannot_write(self, source_db: Path, sql: str) -> None:
        """--query is read-only: SQLite refuses to compile a writing statement (not authorized),
        the message says what --query must be, and the database is unchanged."""
        before = table_contents(source_db)
        with pytest.raises(SourceError, match=r"not authorized.*read-only SELECT") as exc:
            read_query(sql, f"sqlite:///{source_db}", venue=None)
        assert_one_line(str(exc.value))
        assert table_contents(source_db) == before

    def test_missing_sqlite_file_not_created(self, tmp_path: Path) -> None:
        """A read-only query against a SQLite path that does not exist creates no file."""
        missing = tmp_path / "typo.db"
        with pytest.raises(SourceError):
            read_query("SELECT venue, order_id FROM orders", f"sqlite:///{missing}", venue=None)
        assert not missing.exists()


def _csv(data: bytes) -> Callable[[Path], list[str]]:
    def args(tmp_path: Path) -> list[str]:
        return ["run", str(write(tmp_path / "orders.csv", data))]

    return args


def _query(sql: str) -> Callable[[Path], list[str]]:
    def args(tmp_path: Path) -> list[str]:
        db = tmp_path / "source.db"
        with closing(sqlite3.connect(db)) as conn:
            conn.execute("CREATE TABLE t (venue TEXT, order_id TEXT)")
            conn.execute("INSERT INTO t VALUES ('sfox', '1')")
            conn.commit()
        return ["run", "--query", sql, "--source-db", f"sqlite:///{db}"]

    return args


def _directory(tmp_path: Path) -> list[str]:
    (tmp_path / "orders.csv").mkdir()
    return ["run", str(tmp_path / "orders.csv")]


USAGE_ERRORS = [
    pytest.param(lambda tmp_path: ["run", str(tmp_path / "nope.csv")], id="missing-file"),
    pytest.param(_directory, id="directory"),
    pytest.param(_csv(b""), id="empty"),
    pytest.param(_csv(b"  \r\n\t\n"), id="whitespace-only"),
    pytest.param(_csv(b"Venue,OrderID\nsfox,1\n"), id="no-order-id-column"),
    pytest.param(_csv(b"order_id\n1\n"), id="no-venue-column"),
    pytest.param(_csv(b"venue,order_id\nsfox,caf\xe9\n"), id="not-utf8"),
    pytest.param(_csv(b"venue,order_id\nsfox,1\x00\n"), id="nul-bytes"),
    pytest.param(_csv(b'venue,order_id\nsfox,"1\n'), id="unterminated-quote"),
    pytest.param(_csv(b"venue,order_id\nsfox,1\nsfox,2,3\n"), id="ragged-row"),
    pytest.param(_query("SELEC * FROM t"), id="query-bad-sql"),
    pytest.param(_query("SELECT venue AS v, order_id AS o FROM t"), id="query-wrong-columns"),
    pytest.param(_query("DELETE FROM t RETURNING venue, order_id"), id="query-write"),
]


class TestCli:
    @pytest.mark.parametrize("make_args", USAGE_ERRORS)
    def test_unreadable_source_exits_2(
        self, tmp_path: Path, make_args: Callable[[Path], list[str]]
    ) -> None:
        """SPEC: a source that cannot be read is exit 2, one line, no traceback, no run."""
        result = run_cli(tmp_path, *make_args(tmp_path))
        assert_usage_error(result, tmp_path / "a.db")

    def test_query_write_leaves_source_unchanged(self, tmp_path: Path) -> None:
        """Through the CLI too, a writing --query changes nothing in the source database."""
        args = _query("DELETE FROM t RETURNING venue, order_id")(tmp_path)
        result = run_cli(tmp_path, *args)
        assert result.code == 2
        assert table_contents(tmp_path / "source.db")["t"] == [("sfox", "1")]

    def test_not_utf8_message_is_one_line(self, tmp_path: Path) -> None:
        """The UTF-8 message names the file and the fix."""
        path = write(tmp_path / "latin.csv", b"venue,order_id\nsfox,caf\xe9\n")
        result = run_cli(tmp_path, "run", str(path))
        assert_usage_error(result, tmp_path / "a.db")
        assert "latin.csv" in result.stderr and "UTF-8" in result.stderr

    def test_header_only_is_an_empty_successful_run(self, tmp_path: Path) -> None:
        """A header with no rows: a recorded run of 0 orders that succeeds (exit 0)."""
        path = write(tmp_path / "orders.csv", "venue,order_id\n")
        result = run_cli(tmp_path, "run", str(path), "--json")
        assert result.code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["orders"] == 0
        assert summary["status"] == "succeeded"
        assert "Traceback" not in result.stderr
        assert audit_runs(tmp_path / "a.db") == 1

    def test_stdin(self, tmp_path: Path) -> None:
        """SOURCE '-' reads the CSV from stdin; ids are recorded exactly."""
        result = run_cli(
            tmp_path,
            "run",
            "-",
            "--venue",
            "sfox",
            "--dry-run",
            "--json",
            stdin=b"order_id\r\n001\r\n12345678901234567890\r\n001\r\n",
        )
        assert result.code == 0, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "planned"
        assert summary["orders"] == 2
        assert audit_order_ids(tmp_path / "a.db") == ["001", "12345678901234567890"]
        assert "1 duplicate rows collapsed" in result.stderr

    def test_stdin_empty(self, tmp_path: Path) -> None:
        """An empty stdin is a usage error naming stdin."""
        result = run_cli(tmp_path, "run", "-", "--venue", "sfox", stdin=b"")
        assert_usage_error(result, tmp_path / "a.db")
        assert "stdin" in result.stderr

    def test_megabyte_line_does_not_crash(self, tmp_path: Path) -> None:
        """A 1 MB order id is planned invalid: dry run exits 1, no traceback."""
        path = write(tmp_path / "orders.csv", f"venue,order_id\nsfox,{'x' * MEGABYTE}\nsfox,1\n")
        result = run_cli(tmp_path, "run", str(path), "--dry-run", "--json")
        assert result.code == 1, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        summary = json.loads(result.stdout)
        assert summary["orders"] == 2
        assert summary["outcomes"]["invalid"] == 1

    def test_first_row_with_extra_field_exits_2(self, tmp_path: Path) -> None:
        """A first data row longer than the header is a usage error like any ragged row."""
        path = write(tmp_path / "orders.csv", "venue,order_id\nsfox,1,extra\nsfox,2,extra\n")
        result = run_cli(tmp_path, "run", str(path))
        assert_usage_error(result, tmp_path / "a.db")
