"""Order lists in: a CSV file, stdin, or a read-only SQL query, read with pandas.

Ids stay exact strings (no float conversion, no lost leading zeros). Column names are
normalised, values trimmed, exact duplicate rows collapsed. DataFrames never leave this module.
"""

from __future__ import annotations

import codecs
import csv
import gc
import io
import re
import sqlite3
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pyarrow
import sqlalchemy as sa

from batchcancel.errors import SourceError
from batchcancel.venues.base import OrderRow

__all__ = ["COLUMNS", "OrderTable", "no_input", "plain_query_problem", "read_csv", "read_query"]

COLUMNS: Final = ("venue", "order_id", "account_id", "symbol")
CHUNK_ROWS: Final = 20_000

# Arrow's default allocator (mimalloc) made the first pass over a million-row list 0.1-0.2 s
# slower than the C library's malloc (measured cold, in a fresh process: 0.19-0.35 s against
# 0.14-0.15 s), and a kill must say what it is about to cancel within its first second.
pyarrow.set_memory_pool(pyarrow.system_memory_pool())


@dataclass(frozen=True, slots=True)
class NumberedRow:
    """An input row and its 1-based position among the data rows; `invalid_reason` when the
    source already knows the row cannot be valid (an id that arrived as a float)."""

    seq: int
    row: OrderRow
    invalid_reason: str | None = None


class OrderTable:
    """The loaded, normalised order list."""

    def __init__(self, frame: pd.DataFrame, *, description: str, duplicates: int) -> None:
        self._frame = frame
        self.description = description
        self.duplicates = duplicates
        self.invalid: dict[int, str] = {}  # seq -> why the row is invalid (float ids)
        self.warning: str | None = None  # for the operator: the source is not enforced read-only

    def __len__(self) -> int:
        return len(self._frame)

    def venue_counts(self) -> dict[str, int]:
        """Rows per venue, as read (before validation)."""
        counts = self._frame["venue"].value_counts()
        return {str(venue): int(n) for venue, n in counts.items()}

    def chunks(self, size: int = CHUNK_ROWS) -> Iterator[list[NumberedRow]]:
        """The rows in input order, `size` at a time."""
        frame = self._frame
        seqs = frame.index.to_numpy()
        for start in range(0, len(frame), size):
            stop = start + size
            # Arrow strings become Python strings a chunk at a time, so the first chunk is
            # not kept waiting for the whole list.
            columns = [frame[name].iloc[start:stop].to_numpy() for name in COLUMNS]
            chunk = [
                NumberedRow(int(seq) + 1, OrderRow(venue, order_id, account, symbol))
                for seq, venue, order_id, account, symbol in zip(
                    seqs[start:stop], *columns, strict=True
                )
            ]
            if self.invalid:
                chunk = [NumberedRow(n.seq, n.row, self.invalid.get(n.seq)) for n in chunk]
            yield chunk


def no_input(description: str) -> OrderTable:
    """No orders of the operator's: a run from the venues' own books alone."""
    frame = pd.DataFrame({name: pd.Series([], dtype=object) for name in COLUMNS})
    return OrderTable(frame, description=description, duplicates=0)


def read_csv(path: str, *, venue: str | None) -> OrderTable:
    """Read a CSV file (or stdin for '-') with a header; SourceError if it cannot be read."""
    name = "stdin" if path == "-" else path
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{name} does not exist") from None
    except IsADirectoryError:
        raise SourceError(f"{name} is a directory, not a CSV file") from None
    except OSError as exc:
        raise SourceError(f"{name} cannot be read: {exc.strerror}") from None
    if b"\x00" in raw:
        raise SourceError(f"{name} contains NUL bytes; it is not a text CSV file")
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is dropped
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{name} is not valid UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None
    if not text.strip():
        raise SourceError(f"{name} is empty; expected a CSV header with an order_id column")
    try:
        header = next(csv.reader(io.StringIO(text, newline=None)), [])
    except csv.Error as exc:
        raise SourceError(f"{name} has an unreadable header: {exc}") from None
    _check_header(header, name=name)
    frame = _parse_fast(raw, header)
    if frame is None:
        frame = _parse_exact(text, header, name=name)
    return _normalise(frame, name=name, venue=venue)


def _parse_fast(raw: bytes, header: list[str]) -> pd.DataFrame | None:
    """Arrow's multi-threaded parser: a million rows in about 0.1 s instead of 0.4-0.9 s, which
    is what lets a kill say what it is about to cancel within its first second.

    None, and the C parser reads the file instead (wording any error), when Arrow could read
    it differently: a quoted field may hold a line break Arrow misreads, and in a one-column
    file Arrow keeps a whitespace-only line that the C parser skips. None too when Arrow
    cannot read it (a row with too few or too many fields, say).
    """
    if len(header) < 2 or b'"' in raw:
        return None
    try:
        return pd.read_csv(
            io.BytesIO(raw[len(codecs.BOM_UTF8) :] if raw.startswith(codecs.BOM_UTF8) else raw),
            dtype=str,
            keep_default_na=False,
            engine="pyarrow",
        )
    except Exception:  # any failure means: let the C parser judge the file
        return None


def _parse_exact(text: str, header: list[str], *, name: str) -> pd.DataFrame:
    """pandas' C parser, whose failures become SourceErrors."""
    try:
        # A row with more fields than the header is an error, not a silent index column
        # (pandas' default) nor silently dropped fields (its warning with index_col=False).
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                io.StringIO(text),
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                skip_blank_lines=True,
                index_col=False,
                engine="c",
            )
    except pd.errors.ParserWarning:
        raise SourceError(
            f"{name}: the first data row has more fields than the header "
            f"({len(header)} columns: {', '.join(header)})"
        ) from None
    except (pd.errors.ParserError, csv.Error, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"{name} is not a readable CSV file: {first}") from None


def _check_header(header: list[str], *, name: str) -> None:
    """Repeated column names are an error (pandas would rename the second one silently)."""
    normal = [c.strip().lower() for c in header]
    if len(set(normal)) != len(normal):
        raise SourceError(f"{name} has repeated column names: {', '.join(header)}")


def read_query(sql: str, source_db: str, *, venue: str | None) -> OrderTable:
    """Run one read-only query against `source_db`; it must return the CSV's columns.

    The database itself refuses any write where it can (SQLite, PostgreSQL); other dialects
    get only one plain SELECT/WITH statement, and the table's `warning` says so.
    """
    try:
        url = sa.engine.make_url(source_db)
        engine = _read_only_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise SourceError(
            f"--source-db is not a usable database URL: {type(exc).__name__}"
        ) from None
    warning = None
    if engine.dialect.name not in ("sqlite", "postgresql"):
        problem = plain_query_problem(sql)
        if problem is not None:
            raise SourceError(f"--query refused: {problem}")
        warning = (
            f"--query: the {engine.dialect.name} database is not made to refuse writes; "
            "only one plain SELECT/WITH statement was accepted. Use a read-only database user"
        )
    try:
        with engine.connect() as conn:
            try:
                result = _execute_read_only(conn, sql)
                names = [str(name) for name in list(result.keys())]
                ids = [i for i, name in enumerate(names) if name.strip().lower() in _ID_COLUMNS]
                rows, invalid = [], {}
                for seq, row in enumerate(result, start=1):
                    rows.append([_cell(v) for v in row])
                    floats = [i for i in ids if isinstance(row[i], float)]
                    if floats:
                        invalid[seq] = _float_reason([names[i] for i in floats], row[floats[0]])
            except sa.exc.SQLAlchemyError as exc:
                raise SourceError(
                    f"--query failed: {_first_line(exc)} "
                    "(--query must be one read-only SELECT or WITH query)"
                ) from None
    except sa.exc.SQLAlchemyError as exc:
        raise SourceError(f"--source-db: cannot read the database: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    frame = pd.DataFrame(rows, columns=names, dtype=object)
    table = _normalise(frame, name="--query", venue=venue)
    table.invalid = invalid
    table.warning = warning
    return table


_ID_COLUMNS: Final = ("order_id", "account_id")


def _first_line(exc: sa.exc.SQLAlchemyError) -> str:
    return (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]


def _float_reason(columns: list[str], value: object) -> str:
    return (
        f"{' and '.join(c.strip().lower() for c in columns)} arrived as a floating-point "
        f"number ({value!r}) that may have lost digits; cast the column to an integer or "
        "text in the query"
    )


def _read_only_engine(url: sa.URL) -> sa.Engine:
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.query.get("uri"):
            raise SourceError("--source-db: give the SQLite file as sqlite:///PATH, not a URI")
        if url.database in (None, "", ":memory:"):
            raise SourceError("--source-db: an in-memory SQLite database holds no orders")
        path = Path(url.database or "")
        if not path.is_file():  # sqlite would create it empty
            raise SourceError(f"--source-db: SQLite file {url.database} does not exist")
        # mode=ro: SQLite itself refuses to write the file, whatever the query says.
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sa.create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
    if backend == "postgresql":
        # psycopg 3 whatever the URL named: its server-side cursor sends the query inside
        # DECLARE ... CURSOR FOR by the extended protocol, so PostgreSQL refuses a second
        # statement and anything but a query (COPY, SET, COMMIT, a writing CTE).
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url)


def _execute_read_only(conn: sa.Connection, sql: str) -> sa.CursorResult[Any]:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # A READ ONLY transaction (psycopg begins it so), and the server-side cursor above.
        conn.execution_options(postgresql_readonly=True, stream_results=True)
    elif dialect == "sqlite":
        # mode=ro leaves ATTACH (which creates files), VACUUM INTO and PRAGMAs on other
        # files open: the authorizer lets SQLite compile nothing but reads. sqlite3 itself
        # refuses a second statement.
        driver = conn.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        driver.set_authorizer(_sqlite_reads_only)
    elif dialect in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET TRANSACTION READ ONLY")  # what MySQL offers, best effort
    return conn.execute(sa.text(sql))


_SQLITE_READS: Final = frozenset(
    (sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE)
)


def _sqlite_reads_only(action: int, *_: object) -> int:
    return sqlite3.SQLITE_OK if action in _SQLITE_READS else sqlite3.SQLITE_DENY


# Words that make a statement write, lock, or run something, in any dialect we know of.
_WRITING_WORDS: Final = re.compile(
    r"\b(insert|update|delete|merge|upsert|into|drop|alter|create|truncate|grant|revoke|"
    r"call|exec|execute|attach|pragma|lock)\b",
    re.IGNORECASE,
)
# Whitespace and comments before the first word; not MySQL's /*! ... */, which it runs.
_LEADING_COMMENTS: Final = re.compile(r"(?:\s|--[^\n]*|/\*(?!!).*?\*/)*", re.DOTALL)


def plain_query_problem(sql: str) -> str | None:
    """Why `sql` is not one plain SELECT/WITH statement, or None: the whole check where the
    database does not enforce read-only. Strict on purpose: a ';' anywhere but at the very
    end is refused even inside a string, since how each dialect quotes cannot be known here."""
    text = sql.strip()
    text = text[:-1] if text.endswith(";") else text
    if ";" in text:
        return "only one statement is accepted (a ';' only at the end)"
    first = re.match(r"[a-z]*", _LEADING_COMMENTS.sub("", text, count=1), re.IGNORECASE)
    if first is None or first.group().lower() not in ("select", "with"):
        return "only a SELECT or WITH statement is accepted"
    if found := _WRITING_WORDS.search(text):
        return f"it contains {found.group(1)!r}; only a plain SELECT or WITH is accepted"
    return None


def _cell(value: object) -> str:
    """A database value as the exact string an id needs."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _normalise(frame: pd.DataFrame, *, name: str, venue: str | None) -> OrderTable:
    found = [str(c) for c in frame.columns]
    normal = [c.strip().lower() for c in found]
    if len(set(normal)) != len(normal):
        raise SourceError(f"{name} has repeated column names: {', '.join(found)}")
    frame.columns = pd.Index(normal)
    if "order_id" not in normal:
        raise SourceError(
            f"{name} has no `order_id` column; columns found: {', '.join(found) or 'none'}"
        )
    if venue is None and "venue" not in normal:
        raise SourceError(f"{name} has no `venue` column and --venue was not given")
    frame = frame.reindex(columns=list(COLUMNS), fill_value="")
    frame = frame.astype(str).apply(lambda column: column.str.strip())
    frame["venue"] = frame["venue"].str.lower()
    if venue is not None:
        # --venue fills the column; a row that names another venue keeps it and fails validation.
        frame.loc[frame["venue"] == "", "venue"] = venue
    before = len(frame)
    # Rows that repeat one another share an order_id: compare whole rows only among those
    # (one column hashed instead of four, when ids are unique as they usually are).
    if not frame["order_id"].is_unique:
        shared_id = frame["order_id"].duplicated(keep=False)
        candidates = frame[shared_id]
        frame = frame.drop(index=candidates.index[candidates.duplicated(keep="first")])
    # What is loaded so far (modules, the frame) lives until the process ends: spare every
    # later garbage collection the walk over it (with object arrays this was 4 of the 6 s a
    # million rows took to turn into chunks). No gc.collect() first: it cost 0.05 s of a
    # kill's first second, and the intermediate frames are already freed by refcount.
    gc.freeze()
    return OrderTable(frame, description=name, duplicates=before - len(frame))
