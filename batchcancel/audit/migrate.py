"""Bring the audit schema to head with Alembic's command API, on the caller's connection.

Alembic is imported only when the schema is behind: every command opens the audit database,
and the import alone took about 0.1 s of a kill's first second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

import sqlalchemy as sa

from batchcancel.errors import MigrationError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["HEAD", "MIGRATIONS_DIR", "alembic_config", "is_at_head", "upgrade_to_head"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[1] / "migrations"
# The newest migration's revision (tests/test_migrations.py checks it against Alembic's).
HEAD: Final = "0007"
MIGRATION_LOCK_KEY: Final = 0x62617463686361  # "batchca": the advisory lock migrations hold


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic Config for our migrations, optionally bound to a live connection."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def is_at_head(engine: sa.Engine) -> bool:
    """True when the database's schema revision is the newest migration."""
    with engine.connect() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return False
        revisions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
        return list(revisions) == [HEAD]


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    """SQLite: hold an exclusive lock on `<database>.migrate.lock` while migrating, so that
    two processes opening a new database at once do not both create its tables (DDL there
    commits statement by statement). Other databases: nothing to hold."""
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:" or engine.url.query.get("mode") == "memory":
        yield
        return
    import fcntl

    with open(f"{database}.migrate.lock", "a+b") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def upgrade_to_head(engine: sa.Engine) -> None:
    """Apply every missing migration; MigrationError with one line if that fails."""
    if not MIGRATIONS_DIR.is_dir():
        raise MigrationError(
            f"migrations folder {MIGRATIONS_DIR} is missing; reinstall batchcancel"
        )
    try:
        if is_at_head(engine):
            return
        from alembic import command

        with _sqlite_file_lock(engine), engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two workers starting on a new database at once: one migrates, the other
                # waits here and then finds the schema at head (DDL is transactional there).
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
            command.upgrade(alembic_config(conn), "head")
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MigrationError(f"cannot migrate the audit database: {detail}") from None
