"""Indexes for the reads that used to walk every order of a run: counts by outcome, counts by
state and the next page of orders still to send, and the attempts left in flight.

`status` and `resume` on a million-order run read through these (docs/benchmarks.md). The
attempts index starts with run_id, so it also serves every query ix_attempts_run served.
On a large existing database the upgrade builds them once (about a second per index per
million orders on SQLite); PostgreSQL holds writes to the tables while it does.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Orders per venue per outcome (status, summaries); cancel_pending ones in input order.
    op.create_index("ix_orders_run_venue_outcome", "orders", ["run_id", "venue", "outcome", "pk"])
    # Orders per state, and a venue's pending (or in-flight) orders in input order.
    op.create_index("ix_orders_run_venue_state", "orders", ["run_id", "venue", "state", "pk"])
    # The attempts still unanswered (verdict IS NULL) that a resume closes as lost.
    op.create_index("ix_attempts_run_verdict", "attempts", ["run_id", "verdict"])
    op.drop_index("ix_attempts_run", table_name="attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_run", "attempts", ["run_id"])
    op.drop_index("ix_attempts_run_verdict", table_name="attempts")
    op.drop_index("ix_orders_run_venue_state", table_name="orders")
    op.drop_index("ix_orders_run_venue_outcome", table_name="orders")
