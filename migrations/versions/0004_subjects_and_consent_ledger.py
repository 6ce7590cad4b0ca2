"""subjects and consent ledger

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _append_only(table: str) -> None:
    """Consent events are evidence: reject UPDATE and DELETE on both databases."""
    if op.get_bind().dialect.name == "postgresql":
        # the function comes from revision 0002
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION govsvc_audit_append_only()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'govsvc: {operation} on {table} is refused: the consent ledger is append-only'); "
            "END"
        )


def upgrade() -> None:
    op.create_table(
        "subjects",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=False),
        sa.Column("jurisdictions", sa.String(length=200), nullable=False),
        sa.Column("birth_date_enc", sa.LargeBinary(), nullable=True),
        sa.Column("guardian_pk", sa.Integer(), nullable=True),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("legal_hold", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["guardian_pk"], ["subjects.pk"], name=op.f("fk_subjects_guardian_pk_subjects")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subjects")),
        sa.UniqueConstraint("subject_id", name=op.f("uq_subjects_subject_id")),
    )
    op.create_table(
        "consent_events",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=32), nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("purpose_key", sa.String(length=80), nullable=False),
        sa.Column("purpose_version", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=120), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("consent_type", sa.String(length=16), nullable=True),
        sa.Column("lawful_basis", sa.String(length=120), nullable=True),
        sa.Column("notice_id", sa.String(length=80), nullable=True),
        sa.Column("notice_version", sa.String(length=40), nullable=True),
        sa.Column("notice_sha256", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("actor_ref", sa.String(length=80), nullable=True),
        sa.Column("evidence_ref", sa.String(length=200), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], name=op.f("fk_consent_events_subject_pk_subjects")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consent_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_consent_events_event_id")),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_events_subject_pk"), ["subject_pk"], unique=False)

    op.create_table(
        "consent_state",
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("purpose_key", sa.String(length=80), nullable=False),
        sa.Column("scope", sa.String(length=120), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("purpose_version", sa.Integer(), nullable=False),
        sa.Column("consent_type", sa.String(length=16), nullable=True),
        sa.Column("actor", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_event_pk", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], name=op.f("fk_consent_state_subject_pk_subjects")),
        sa.PrimaryKeyConstraint("subject_pk", "purpose_key", "scope", name=op.f("pk_consent_state")),
    )
    op.create_table(
        "subject_identifiers",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("system", sa.String(length=64), nullable=False),
        sa.Column("blind_index", sa.String(length=64), nullable=False),
        sa.Column("value_enc", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subject_pk"], ["subjects.pk"], name=op.f("fk_subject_identifiers_subject_pk_subjects")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_subject_identifiers")),
        sa.UniqueConstraint("blind_index", "kind", "system", name="uq_subject_identifiers_lookup"),
    )
    with op.batch_alter_table("subject_identifiers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_subject_identifiers_subject_pk"), ["subject_pk"], unique=False)
    _append_only("consent_events")


def downgrade() -> None:
    with op.batch_alter_table("subject_identifiers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subject_identifiers_subject_pk"))

    op.drop_table("subject_identifiers")
    op.drop_table("consent_state")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_events_subject_pk"))

    op.drop_table("consent_events")
    op.drop_table("subjects")
