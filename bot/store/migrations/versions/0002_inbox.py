"""The inbox: slash commands and clicks recorded before their ack, deduplicated by key.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Str = AutoString


def upgrade() -> None:
    # A database adopted from create_all (stamped at 0001) was made from the models of
    # its day; one made by a version that already had this table has it.
    if "inboundrequest" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "inboundrequest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", Str(255), nullable=False),
        sa.Column("kind", Str(16), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("user", Str(64), nullable=False),
        sa.Column("channel", Str(80), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", Str(64), nullable=True),
        sa.Column("claim_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reply", sa.Text(), nullable=True),
        sa.Column("told_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_inboundrequest_told_at", "inboundrequest", ["told_at"])


def downgrade() -> None:
    op.drop_index("ix_inboundrequest_told_at", table_name="inboundrequest")
    op.drop_table("inboundrequest")
