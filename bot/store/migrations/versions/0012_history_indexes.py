"""`/deploy history` and `/deploy audit` read a service's newest rows from an index on
(service[, env], id) backwards, instead of walking the whole table back from its newest id
until enough of them turn up (a service last deployed long ago: every row). Each replaces
the index on ``service`` alone, which the new ones serve as well.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table: (new index, its columns, the index it replaces)
INDEXES = {"deployment": ("ix_deployment_slot_id", ["service", "env", "id"],
                          "ix_deployment_service"),
           "auditevent": ("ix_auditevent_service_id", ["service", "id"],
                          "ix_auditevent_service")}


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    inspector = sa.inspect(op.get_bind())
    for table, (new, columns, old) in INDEXES.items():
        existing = {i["name"] for i in inspector.get_indexes(table)}
        if new not in existing:
            op.create_index(new, table, columns)
        if old in existing:
            op.drop_index(old, table_name=table)


def downgrade() -> None:
    for table, (new, _, old) in INDEXES.items():
        op.create_index(old, table, ["service"])
        op.drop_index(new, table_name=table)
