"""Initial schema, as create_all made it before migrations, with append-only audit triggers.

The triggers make the audit trail append-only in the database itself. Databases made by
that older code are stamped at this revision, not migrated
(see bot.store.migrations.upgrade), so keep it identical to what create_all made.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Str = AutoString

# SQLite: refuse both statements with a trigger each. PostgreSQL: one plpgsql function.
APPEND_ONLY_SQLITE = [
    f"CREATE TRIGGER IF NOT EXISTS auditevent_no_{action.lower()} BEFORE {action} ON auditevent "
    "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
    for action in ("UPDATE", "DELETE")
]
APPEND_ONLY_POSTGRES = [
    "CREATE OR REPLACE FUNCTION shipbot_audit_append_only() RETURNS trigger AS $$ "
    "BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS auditevent_append_only ON auditevent",
    "CREATE TRIGGER auditevent_append_only BEFORE UPDATE OR DELETE ON auditevent "
    "FOR EACH ROW EXECUTE FUNCTION shipbot_audit_append_only()",
]
DROP_APPEND_ONLY_SQLITE = [
    f"DROP TRIGGER IF EXISTS auditevent_no_{action}" for action in ("update", "delete")
]
DROP_APPEND_ONLY_POSTGRES = [
    "DROP TRIGGER IF EXISTS auditevent_append_only ON auditevent",
    "DROP FUNCTION IF EXISTS shipbot_audit_append_only()",
]


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def upgrade() -> None:
    op.create_table(
        "announcement",
        sa.Column("key", Str(255), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "deployment",
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("request_key", Str(255), nullable=False),
        sa.Column("service", Str(64), nullable=False),
        sa.Column("env", Str(64), nullable=False),
        sa.Column("version", Str(128), nullable=True),
        sa.Column("previous_version", Str(128), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requester", Str(64), nullable=False),
        sa.Column("state", Str(32), nullable=False),
        sa.Column("active_slot", Str(140), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("next_action_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("step_deadline_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("step_attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", Str(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ci_run_id", Str(255), nullable=True),
        sa.Column("ci_url", Str(1000), nullable=True),
        sa.Column("deploy_run_id", Str(255), nullable=True),
        sa.Column("channel", Str(80), nullable=False),
        sa.Column("card_channel", Str(80), nullable=True),
        sa.Column("card_ts", Str(32), nullable=True),
        sa.Column("hotfix", sa.Boolean(), nullable=False),
        sa.Column("approvals_required", sa.Integer(), nullable=False),
        sa.Column("approval_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("approval_ts", Str(32), nullable=True),
        sa.Column("approvals_received", sa.Integer(), nullable=False),
        sa.Column("approval_copy", Str(120), nullable=True),
        sa.Column("kind", Str(16), nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("alert_thread_id", sa.Integer(), nullable=True),
        sa.Column("alert_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recovery_seconds", sa.Float(), nullable=True),
        sa.Column("strategy", Str(16), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("stage_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("action_run_id", Str(255), nullable=True),
        sa.Column("last_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_reason", sa.Text(), nullable=True),
        sa.Column("analysis_state", sa.Text(), nullable=False),
        sa.Column("analysis_log", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["rollback_of"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("active_slot"),
        sa.UniqueConstraint("request_key"),
    )
    op.create_index("ix_deployment_alert_thread_id", "deployment", ["alert_thread_id"])
    op.create_index("ix_deployment_env", "deployment", ["env"])
    op.create_index("ix_deployment_next_action_at", "deployment", ["next_action_at"])
    op.create_index("ix_deployment_service", "deployment", ["service"])
    op.create_index("ix_deployment_state", "deployment", ["state"])
    op.create_table(
        "freeze",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env", Str(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", Str(64), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lifted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lifted_by", Str(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_freeze_env", "freeze", ["env"])
    op.create_table(
        "lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("env", Str(64), nullable=False),
        sa.Column("service", Str(64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", Str(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", Str(64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_lock_env", "lock", ["env"])
    op.create_table(
        "alertthread",
        sa.Column("row_version", sa.Integer(), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", Str(16), nullable=False),
        sa.Column("open_key", Str(255), nullable=True),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("fingerprint", Str(64), nullable=False),
        sa.Column("service", Str(64), nullable=True),
        sa.Column("env", Str(64), nullable=True),
        sa.Column("status", Str(16), nullable=False),
        sa.Column("name", Str(255), nullable=False),
        sa.Column("severity", Str(64), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", Str(80), nullable=True),
        sa.Column("root_channel", Str(80), nullable=True),
        sa.Column("root_ts", Str(32), nullable=True),
        sa.Column("suspect_ts", Str(32), nullable=True),
        sa.Column("suspect_deployment_id", sa.Integer(), nullable=True),
        sa.Column("rollback_to", Str(128), nullable=True),
        sa.Column("acknowledged_by", Str(64), nullable=True),
        sa.Column("dismissed_by", Str(64), nullable=True),
        sa.Column("rollback_deployment_id", sa.Integer(), nullable=True),
        sa.Column("auto_rollback", sa.Boolean(), nullable=False),
        sa.Column("redeploy_deployment_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["redeploy_deployment_id"], ["deployment.id"]),
        sa.ForeignKeyConstraint(["rollback_deployment_id"], ["deployment.id"]),
        sa.ForeignKeyConstraint(["suspect_deployment_id"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    op.create_index("ix_alertthread_service", "alertthread", ["service"])
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=False),
        sa.Column("user", Str(64), nullable=False),
        sa.Column("decision", Str(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment_id", "user"),
    )
    op.create_index("ix_approval_deployment_id", "approval", ["deployment_id"])
    op.create_table(
        "auditevent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("service", Str(64), nullable=False),
        sa.Column("env", Str(64), nullable=False),
        sa.Column("actor", Str(64), nullable=False),
        sa.Column("action", Str(32), nullable=False),
        sa.Column("from_state", Str(32), nullable=True),
        sa.Column("to_state", Str(32), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_auditevent_at", "auditevent", ["at"])
    op.create_index("ix_auditevent_deployment_id", "auditevent", ["deployment_id"])
    op.create_index("ix_auditevent_service", "auditevent", ["service"])
    op.create_table(
        "alertinstance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", Str(255), nullable=False),
        sa.Column("thread_id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", Str(64), nullable=False),
        sa.Column("status", Str(16), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["thread_id"], ["alertthread.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_alertinstance_thread_id", "alertinstance", ["thread_id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment_id", sa.Integer(), nullable=True),
        sa.Column("alert_thread_id", sa.Integer(), nullable=True),
        sa.Column("kind", Str(16), nullable=False),
        sa.Column("channel", Str(80), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("blocks", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", Str(500), nullable=True),
        sa.ForeignKeyConstraint(["alert_thread_id"], ["alertthread.id"]),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployment.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_outbox_alert_thread_id", "outbox", ["alert_thread_id"])
    op.create_index("ix_outbox_delivered_at", "outbox", ["delivered_at"])
    op.create_index("ix_outbox_deployment_id", "outbox", ["deployment_id"])
    for statement in APPEND_ONLY_SQLITE if _sqlite() else APPEND_ONLY_POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    for statement in DROP_APPEND_ONLY_SQLITE if _sqlite() else DROP_APPEND_ONLY_POSTGRES:
        op.execute(statement)
    for table in ("outbox", "alertinstance", "auditevent", "approval", "alertthread", "lock",
                  "freeze", "deployment", "announcement"):
        op.drop_table(table)
