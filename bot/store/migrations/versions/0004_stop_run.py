"""Deployments remember a run a cancel or abort left going, for its replica to stop.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deployment")}
    if "stop_run" not in columns:
        with op.batch_alter_table("deployment") as batch:
            batch.add_column(sa.Column("stop_run", AutoString(300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.drop_column("stop_run")
