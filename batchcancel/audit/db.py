"""The audit database connection: engine and pragmas, the read and write blocks that turn
every SQLAlchemy error into an AuditError, the database's clock and the driver's dialect."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from batchcancel.audit.records import utcnow
from batchcancel.errors import AuditError
from batchcancel.redact import Redactor

__all__ = ["Database", "audit_error", "create_engine"]

# Hides passwords in the messages of errors raised where no store (and so no secret) is known.
_PASSWORDS: Final = Redactor()
_NAMED: Final = re.compile(r":(\w+)")


class Database:
    """One audit database: its engine, and the only places a connection is opened."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url)
        self.dialect: str = self.engine.dialect.name  # sqlite or postgresql
        # PostgreSQL through psycopg 3 on libpq 14+: statements can share one round trip.
        self.pipelines = self.dialect == "postgresql" and _psycopg_pipelines(self.engine)

    def dispose(self) -> None:
        """Release connections."""
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A connection for reading; a database error is an AuditError, as for writes, so a
        failing read stops the run in order instead of surfacing as an internal error."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise audit_error(exc, "read") from None

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """One transaction, committed when the block ends and rolled back if it raises; a
        database error (at begin, inside, or at commit) is an AuditError. Other exceptions
        (LaneLostError, RunLockedError) pass through unchanged after the rollback."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.SQLAlchemyError as exc:
            raise audit_error(exc, "write") from None

    def stream(self, query: sa.Select[Any]) -> Iterator[sa.Row[Any]]:
        """The rows of `query`, fetched in chunks (a million never sit in memory at once)."""
        with self.read() as conn:
            result = conn.execution_options(stream_results=True, yield_per=5000).execute(query)
            yield from result

    def now(self, conn: sa.Connection) -> datetime:
        """The database's clock (naive UTC): what lease expiry is judged by. SQLite has no
        server: its clock is this host's, which every process on the file shares."""
        if self.dialect == "postgresql":
            value = conn.execute(sa.select(sa.func.timezone("UTC", sa.func.now()))).scalar()
            if isinstance(value, datetime):
                return value.replace(tzinfo=None)
        return utcnow()

    def sql(self, statement: str) -> str:
        """A statement written with :name parameters, in this driver's parameter style."""
        if self.dialect == "sqlite":
            return statement  # the sqlite3 module takes :name with dict parameters
        return _NAMED.sub(r"%(\1)s", statement)

    def stamp(self, value: datetime) -> datetime | str:
        """A timestamp as the driver should get it (SQLite: SQLAlchemy's text form)."""
        if self.dialect == "sqlite":
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value


def audit_error(exc: Exception, action: str = "write") -> AuditError:
    """A one-line AuditError for a database error (SQLAlchemy's, or the driver's own where
    the driver is used directly), passwords hidden."""
    # A database's message may quote a statement's parameters or the URL it was given.
    lines = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [""]
    detail = _PASSWORDS.text(lines[0])
    return AuditError(f"audit database {action} failed: {detail}")


def create_engine(url: str) -> sa.Engine:
    """An engine for the audit URL; AuditError if the URL is not usable."""
    try:
        if url.startswith("sqlite"):
            engine = sa.create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=4,
                max_overflow=4,
            )
            sa.event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise AuditError(
            f"--db is not a usable database URL: {type(exc).__name__}: {exc}"
        ) from None


def _psycopg_pipelines(engine: sa.Engine) -> bool:
    if engine.dialect.driver != "psycopg":
        return False
    import psycopg

    return bool(psycopg.Pipeline.is_supported())


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (status, report) work during a run; FULL makes each commit durable
    # before the request it records leaves; busy_timeout waits out brief locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
