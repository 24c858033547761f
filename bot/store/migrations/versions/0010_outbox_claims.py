"""Outbox rows are claimed with a lease (``claimed_by``, ``claim_until``), so of several
replicas only one posts a thread's messages to Slack at a time.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already.
    Rows already queued start unclaimed: the first replica to look delivers them."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}
    with op.batch_alter_table("outbox") as batch:
        if "claimed_by" not in columns:
            batch.add_column(sa.Column("claimed_by", AutoString(64), nullable=True))
        if "claim_until" not in columns:
            batch.add_column(sa.Column("claim_until", sa.DateTime(timezone=True),
                                       nullable=True))


def downgrade() -> None:
    """The older code delivers from one loop per replica without claims: the rows left
    are delivered as before (possibly by two replicas, as before this revision)."""
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("claim_until")
        batch.drop_column("claimed_by")
