"""Outbox rows record the engine's facts (kind and payload), put into words at delivery.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already.
    Rows already queued keep their text and blocks and are delivered as before."""
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("outbox")}
    with op.batch_alter_table("outbox") as batch:
        if "fact" not in columns:
            batch.add_column(sa.Column("fact", AutoString(40), nullable=True))
        if "payload" not in columns:
            batch.add_column(sa.Column("payload", sa.Text(), nullable=True))


def downgrade() -> None:
    """Facts not yet delivered cannot be put into words by the older code: they are
    dropped (marked delivered) rather than posted as empty messages."""
    op.execute(sa.text("UPDATE outbox SET delivered_at = created_at, "
                       "last_error = 'dropped by the downgrade: ' || fact "
                       "WHERE fact IS NOT NULL AND delivered_at IS NULL"))
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("payload")
        batch.drop_column("fact")
