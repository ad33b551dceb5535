"""Alembic migrations: they create the audit schema, stay at head, and match the models."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from batchcancel.audit.migrate import (
    HEAD,
    MIGRATIONS_DIR,
    alembic_config,
    is_at_head,
    upgrade_to_head,
)
from batchcancel.audit.tables import metadata

AUDIT_TABLES = {"runs", "sessions", "orders", "attempts"}
REPO = MIGRATIONS_DIR.parent


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    """An engine on a fresh SQLite file that nothing has touched yet."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    yield engine
    engine.dispose()


def table_names(engine: sa.Engine) -> set[str]:
    return set(sa.inspect(engine).get_table_names())


class TestUpgrade:
    def test_fresh_file_gets_every_audit_table(self, engine: sa.Engine) -> None:
        """upgrade_to_head on an empty SQLite file creates runs, sessions, orders and attempts."""
        assert not table_names(engine) & AUDIT_TABLES
        upgrade_to_head(engine)
        assert table_names(engine) >= AUDIT_TABLES

    def test_is_at_head_only_after_upgrade(self, engine: sa.Engine) -> None:
        """A fresh file is not at head; after upgrade_to_head it is."""
        assert not is_at_head(engine)
        upgrade_to_head(engine)
        assert is_at_head(engine)

    def test_head_constant_is_alembics_head(self, engine: sa.Engine) -> None:
        """HEAD (what is_at_head compares with, without importing Alembic) is the newest
        migration, and an older revision in the database is not at head."""
        assert ScriptDirectory.from_config(alembic_config()).get_current_head() == HEAD
        upgrade_to_head(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '0002'"))
        assert not is_at_head(engine)

    def test_second_upgrade_is_a_no_op(self, engine: sa.Engine) -> None:
        """Upgrading twice keeps the revision and the data: nothing is re-created or dropped."""
        upgrade_to_head(engine)
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO runs (id, command, status, dry_run, source, options, reason, "
                    "os_user, host, pid, command_line, version, orders_total, duplicates, "
                    "created_at, sessions) VALUES ('r1', 'run', 'loaded', 0, '', '{}', '', "
                    "'', '', 0, '', '', 0, 0, '2026-01-01 00:00:00.000000', 0)"
                )
            )
            revision = MigrationContext.configure(conn).get_current_revision()
        upgrade_to_head(engine)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == revision
            assert conn.execute(sa.text("SELECT id FROM runs")).scalars().all() == ["r1"]
        assert is_at_head(engine)

    def test_models_do_not_drift_from_migrations(self, engine: sa.Engine) -> None:
        """Autogenerate finds no difference between the migrated schema and tables.metadata."""
        upgrade_to_head(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
        assert diff == []


class TestCli:
    def test_db_upgrade_command(self, tmp_path: Path) -> None:
        """`python -m batchcancel db upgrade --db sqlite:///…` exits 0 and leaves a schema at head."""
        path = tmp_path / "cli.db"
        result = subprocess.run(
            [sys.executable, "-m", "batchcancel", "db", "upgrade", "--db", f"sqlite:///{path}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        engine = sa.create_engine(f"sqlite:///{path}")
        try:
            assert table_names(engine) >= AUDIT_TABLES
            assert is_at_head(engine)
        finally:
            engine.dispose()
