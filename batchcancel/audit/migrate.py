"""Bring the audit schema to head with Alembic's command API, on the caller's connection."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from batchcancel.errors import MigrationError

__all__ = ["MIGRATIONS_DIR", "alembic_config", "is_at_head", "upgrade_to_head"]

MIGRATIONS_DIR: Final = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic Config for our migrations, optionally bound to a live connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def is_at_head(engine: sa.Engine) -> bool:
    """True when the database's schema revision is the newest migration."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision() == head


def upgrade_to_head(engine: sa.Engine) -> None:
    """Apply every missing migration; MigrationError with one line if that fails."""
    if not MIGRATIONS_DIR.is_dir():
        raise MigrationError(
            f"migrations folder {MIGRATIONS_DIR} is missing; reinstall with pip install -e ."
        )
    try:
        if is_at_head(engine):
            return
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
    except sa.exc.SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise MigrationError(f"cannot migrate the audit database: {detail}") from None
