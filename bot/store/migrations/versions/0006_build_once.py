"""A deployment records the build it puts on its environment (artifact, commit, the
deployment that built it) and the commits it ships, with the max_commits override.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS: tuple[tuple[str, Callable[[], Any], dict[str, Any]], ...] = (
    ("artifact", lambda: AutoString(500), {}),
    ("commit_sha", lambda: AutoString(64), {}),
    ("built_by", sa.Integer, {}),
    ("changes", sa.Text, {}),
    ("many_commits_ok", sa.Boolean, {"server_default": sa.false()}),
)


def upgrade() -> None:
    """Skips what is there: a database adopted from create_all may have it already."""
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("deployment")}
    with op.batch_alter_table("deployment") as batch:
        for name, kind, extra in COLUMNS:
            if name not in have:
                nullable = name != "many_commits_ok"
                batch.add_column(sa.Column(name, kind(), nullable=nullable, **extra))


def downgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        for name, _, _ in reversed(COLUMNS):
            batch.drop_column(name)
