"""What runs on each slot now (``slotversion``): `/deploy status` reads one row per slot
instead of aggregating every success ever recorded (PostgreSQL has no loose index scan,
so that aggregate read all 180,000 successes of a large history on every status).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each slot's newest success, as `/deploy status` computed it before this table: one slot
# runs one deployment at a time, so the highest id finished last.
BACKFILL = ("INSERT INTO slotversion (service, env, deployment_id, version, requester, "
            "created_at, finished_at) SELECT service, env, id, version, requester, created_at, "
            "finished_at FROM deployment WHERE id IN (SELECT max(id) FROM deployment "
            "WHERE state = 'succeeded' GROUP BY service, env)")


def upgrade() -> None:
    """Skips the table if it is there (a database adopted from create_all may have it);
    its rows are derived, so they are computed afresh either way."""
    if "slotversion" not in sa.inspect(op.get_bind()).get_table_names():
        op.create_table(
            "slotversion",
            sa.Column("service", AutoString(64), nullable=False),
            sa.Column("env", AutoString(64), nullable=False),
            sa.Column("deployment_id", sa.Integer(), nullable=False),
            sa.Column("version", AutoString(128), nullable=True),
            sa.Column("requester", AutoString(64), nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
            sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
            sa.PrimaryKeyConstraint("service", "env"),
        )
    op.execute("DELETE FROM slotversion")
    op.execute(BACKFILL)


def downgrade() -> None:
    """The older code computes each slot's newest success from ``deployment`` again."""
    op.drop_table("slotversion")
