"""The venues' own books: the listing that found an order, and each venue's verdict.

Revision ID: 0006
Revises: 0005
"""
from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("listed_by", sa.BigInteger(), nullable=True))
    op.create_table(
        "books",
        sa.Column("run_id", sa.String(length=40), sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("venue", sa.String(length=32), primary_key=True),
        sa.Column("verdict", sa.String(length=12), nullable=False),
        sa.Column("listed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("from_input", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cancelled", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("working_at_end", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("lists", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("first_request_at", sa.DateTime(), nullable=True),
        sa.Column("last_answer_at", sa.DateTime(), nullable=True),
        sa.Column("flat_at", sa.DateTime(), nullable=True),
        sa.Column("seconds_to_flat", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False, server_default=""),
    )


def downgrade() -> None:
    op.drop_table("books")
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("listed_by")
