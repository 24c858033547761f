"""Each slot's newest success found from an index: `/deploy status` over 1,000 services
reads 4,000 index entries' ends instead of sorting every success ever recorded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_deployment_state_slot"


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    indexes = {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("deployment")}
    if INDEX not in indexes:
        op.create_index(INDEX, "deployment", ["state", "service", "env", "id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="deployment")
