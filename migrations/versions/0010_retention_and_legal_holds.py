"""retention rules, runs, chunk journal, leases, events; insert-only deletion ledger; legal holds; external SQL
sources; APScheduler's job store table

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:46:28.728924
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _create_insert_only_triggers() -> None:
    """The deletion ledger is insert-only: UPDATE and DELETE (and TRUNCATE on PostgreSQL) are refused."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE FUNCTION govsvc_ledger_insert_only() RETURNS trigger AS $$
            BEGIN
                RAISE EXCEPTION 'govsvc: % on % is refused: the deletion ledger is insert-only', TG_OP, TG_TABLE_NAME
                    USING ERRCODE = 'insufficient_privilege';
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER deletion_ledger_insert_only BEFORE UPDATE OR DELETE ON deletion_ledger "
            "FOR EACH ROW EXECUTE FUNCTION govsvc_ledger_insert_only()"
        )
        op.execute(
            "CREATE TRIGGER deletion_ledger_no_truncate BEFORE TRUNCATE ON deletion_ledger "
            "FOR EACH STATEMENT EXECUTE FUNCTION govsvc_ledger_insert_only()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER deletion_ledger_no_{operation.lower()} BEFORE {operation} ON deletion_ledger "
            f"BEGIN SELECT RAISE(ABORT, 'govsvc: {operation} on deletion_ledger is refused: the deletion ledger is "
            "insert-only'); END"
        )


def _drop_insert_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS deletion_ledger_insert_only ON deletion_ledger")
        op.execute("DROP TRIGGER IF EXISTS deletion_ledger_no_truncate ON deletion_ledger")
        op.execute("DROP FUNCTION IF EXISTS govsvc_ledger_insert_only()")
        return
    for operation in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS deletion_ledger_no_{operation}")


def upgrade() -> None:
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_apscheduler_jobs")),
    )
    with op.batch_alter_table("apscheduler_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_apscheduler_jobs_next_run_time"), ["next_run_time"], unique=False)

    op.create_table(
        "deletion_ledger",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_key", sa.String(length=80), nullable=False),
        sa.Column("store", sa.String(length=120), nullable=False),
        sa.Column("deleted_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_deletion_ledger")),
    )
    with op.batch_alter_table("deletion_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_deletion_ledger_store_key", ["store", "subject_key"], unique=False)

    op.create_table(
        "external_sources",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("url_wrapped", sa.LargeBinary(), nullable=False),
        sa.Column("dialect", sa.String(length=16), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("key_column", sa.String(length=64), nullable=False),
        sa.Column("subject_column", sa.String(length=64), nullable=False),
        sa.Column("subject_kind", sa.String(length=32), nullable=False),
        sa.Column("subject_system", sa.String(length=64), nullable=False),
        sa.Column("timestamp_column", sa.String(length=64), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_external_sources")),
        sa.UniqueConstraint("name", name=op.f("uq_external_sources_name")),
        sa.UniqueConstraint("source_id", name=op.f("uq_external_sources_source_id")),
    )
    op.create_table(
        "retention_leases",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("holder", sa.String(length=80), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_retention_leases")),
    )
    op.create_table(
        "retention_policy_versions",
        sa.Column("version", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("comment", sa.String(length=500), nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_retention_policy_versions")),
    )
    op.create_table(
        "retention_runs",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("rule_key", sa.String(length=80), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("store", sa.String(length=120), nullable=False),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dry_run_id", sa.String(length=40), nullable=True),
        sa.Column("approved_by", sa.String(length=80), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("counts", sa.Text(), nullable=False),
        sa.Column("exclusions", sa.Text(), nullable=False),
        sa.Column("samples", sa.Text(), nullable=False),
        sa.Column("errors", sa.Text(), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=True),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_retention_runs")),
        sa.UniqueConstraint("run_id", name=op.f("uq_retention_runs_run_id")),
    )
    with op.batch_alter_table("retention_runs", schema=None) as batch_op:
        batch_op.create_index("ix_retention_runs_rule_started", ["rule_key", "started_at"], unique=False)

    op.create_table(
        "legal_holds",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hold_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=True),
        sa.Column("categories", sa.Text(), nullable=False),
        sa.Column("dataset", sa.String(length=120), nullable=True),
        sa.Column("basis", sa.String(length=500), nullable=False),
        sa.Column("owner", sa.String(length=120), nullable=False),
        sa.Column("review_at", sa.Date(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], name=op.f("fk_legal_holds_subject_pk_subjects")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_legal_holds")),
        sa.UniqueConstraint("hold_id", name=op.f("uq_legal_holds_hold_id")),
    )
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.create_index("ix_legal_holds_status_scope", ["status", "scope"], unique=False)
        batch_op.create_index(batch_op.f("ix_legal_holds_subject_pk"), ["subject_pk"], unique=False)

    op.create_table(
        "retention_chunks",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("keys", sa.Text(), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_pk"], ["retention_runs.pk"], name=op.f("fk_retention_chunks_run_pk_retention_runs")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_retention_chunks")),
    )
    with op.batch_alter_table("retention_chunks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retention_chunks_run_pk"), ["run_pk"], unique=False)

    op.create_table(
        "retention_events",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.String(length=120), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], name=op.f("fk_retention_events_subject_pk_subjects")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_retention_events")),
    )
    with op.batch_alter_table("retention_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_retention_events_subject_pk"), ["subject_pk"], unique=False)
        batch_op.create_index("ix_retention_events_trigger_at", ["trigger", "occurred_at"], unique=False)

    _create_insert_only_triggers()


def downgrade() -> None:
    _drop_insert_only_triggers()
    with op.batch_alter_table("retention_events", schema=None) as batch_op:
        batch_op.drop_index("ix_retention_events_trigger_at")
        batch_op.drop_index(batch_op.f("ix_retention_events_subject_pk"))

    op.drop_table("retention_events")
    with op.batch_alter_table("retention_chunks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_retention_chunks_run_pk"))

    op.drop_table("retention_chunks")
    with op.batch_alter_table("legal_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_legal_holds_subject_pk"))
        batch_op.drop_index("ix_legal_holds_status_scope")

    op.drop_table("legal_holds")
    with op.batch_alter_table("retention_runs", schema=None) as batch_op:
        batch_op.drop_index("ix_retention_runs_rule_started")

    op.drop_table("retention_runs")
    op.drop_table("retention_policy_versions")
    op.drop_table("retention_leases")
    op.drop_table("external_sources")
    with op.batch_alter_table("deletion_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_deletion_ledger_store_key")

    op.drop_table("deletion_ledger")
    with op.batch_alter_table("apscheduler_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_apscheduler_jobs_next_run_time"))

    op.drop_table("apscheduler_jobs")
