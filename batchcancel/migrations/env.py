"""Alembic environment: the audit tables' metadata, and the connection batchcancel passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from batchcancel.audit.tables import metadata

config = context.config
target_metadata = metadata


def run_migrations() -> None:
    """Migrate on the connection given in attributes, or one opened from sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///batchcancel.db")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; use `batchcancel db upgrade`")
run_migrations()
