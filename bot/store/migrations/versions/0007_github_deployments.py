"""The GitHub Deployments mirror: a deployment remembers its GitHub Deployment, and the
state changes still to report wait in their own small queue (``mirrorevent``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    inspector = sa.inspect(op.get_bind())
    if "github_deployment_id" not in {c["name"] for c in inspector.get_columns("deployment")}:
        with op.batch_alter_table("deployment") as batch:
            batch.add_column(sa.Column("github_deployment_id", AutoString(32), nullable=True))
    if "mirrorevent" in inspector.get_table_names():
        return
    op.create_table(
        "mirrorevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("state", AutoString(16), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", AutoString(500), nullable=True),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_mirrorevent_deployment_id", "mirrorevent", ["deployment_id"])
    op.create_index("ix_mirrorevent_delivered_at", "mirrorevent", ["delivered_at"])


def downgrade() -> None:
    op.drop_index("ix_mirrorevent_delivered_at", table_name="mirrorevent")
    op.drop_index("ix_mirrorevent_deployment_id", table_name="mirrorevent")
    op.drop_table("mirrorevent")
    with op.batch_alter_table("deployment") as batch:
        batch.drop_column("github_deployment_id")
