"""Indexes for the reads that used to walk every order of a run: counts by outcome and by
state, the orders still to send (or to confirm) and their next page, and the attempts left in
flight.

Each orders index leads with what the reads filter on after the run (state, outcome), then
venue and pk: a seek finds a run's pending orders, of one venue or of all, in input order.
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
    # Orders per outcome per venue (status, summaries); cancel_pending ones to confirm.
    op.create_index("ix_orders_run_outcome", "orders", ["run_id", "outcome", "venue", "pk"])
    # Orders per state per venue; pending (or in-flight) ones to send, in input order.
    op.create_index("ix_orders_run_state", "orders", ["run_id", "state", "venue", "pk"])
    # The attempts still unanswered (verdict IS NULL) that a resume closes as lost.
    op.create_index("ix_attempts_run_verdict", "attempts", ["run_id", "verdict"])
    op.drop_index("ix_attempts_run", table_name="attempts")


def downgrade() -> None:
    op.create_index("ix_attempts_run", "attempts", ["run_id"])
    op.drop_index("ix_attempts_run_verdict", table_name="attempts")
    op.drop_index("ix_orders_run_state", table_name="orders")
    op.drop_index("ix_orders_run_outcome", table_name="orders")
