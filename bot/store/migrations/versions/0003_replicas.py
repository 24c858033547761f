"""Replicas: a heartbeat table, and the replica that owns a deployment's running step.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Str = AutoString


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    inspector = sa.inspect(op.get_bind())
    if "replica" not in inspector.get_table_names():
        _create_replica()
    if "run_owner" not in {c["name"] for c in inspector.get_columns("deployment")}:
        with op.batch_alter_table("deployment") as batch:
            batch.add_column(sa.Column("run_owner", Str(64), nullable=True))


def _create_replica() -> None:
    op.create_table(
        "replica",
        sa.Column("id", Str(64), nullable=False),
        sa.Column("alive_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_replica_alive_until", "replica", ["alive_until"])


def downgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.drop_column("run_owner")
    op.drop_index("ix_replica_alive_until", table_name="replica")
    op.drop_table("replica")
