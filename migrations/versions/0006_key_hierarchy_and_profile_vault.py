"""key hierarchy and profile vault

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "crypto_keys",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_id", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("wrapped", sa.LargeBinary(), nullable=True),
        sa.Column("wrapped_by", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("destroyed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_crypto_keys")),
        sa.UniqueConstraint("key_id", "version", name="uq_crypto_keys_version"),
    )
    op.create_table(
        "key_rotations",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("rotation_id", sa.String(length=40), nullable=False),
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("last_pk", sa.Integer(), nullable=False),
        sa.Column("history_last_pk", sa.Integer(), nullable=False),
        sa.Column("values_done", sa.Integer(), nullable=False),
        sa.Column("started_by", sa.String(length=80), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_key_rotations")),
        sa.UniqueConstraint("rotation_id", name=op.f("uq_key_rotations_rotation_id")),
    )
    op.create_table(
        "vault_field_history",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=80), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("value_enc", sa.LargeBinary(), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("justification", sa.String(length=500), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["subject_pk"], ["subjects.pk"], name=op.f("fk_vault_field_history_subject_pk_subjects")
        ),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_vault_field_history")),
    )
    with op.batch_alter_table("vault_field_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_vault_field_history_subject_pk"), ["subject_pk"], unique=False)

    op.create_table(
        "vault_fields",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("subject_pk", sa.Integer(), nullable=False),
        sa.Column("field", sa.String(length=80), nullable=False),
        sa.Column("category", sa.String(length=120), nullable=False),
        sa.Column("level", sa.String(length=4), nullable=False),
        sa.Column("value_plain", sa.Text(), nullable=True),
        sa.Column("value_enc", sa.LargeBinary(), nullable=True),
        sa.Column("key_version", sa.Integer(), nullable=True),
        sa.Column("blind_index", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(["subject_pk"], ["subjects.pk"], name=op.f("fk_vault_fields_subject_pk_subjects")),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_vault_fields")),
        sa.UniqueConstraint("subject_pk", "field", name="uq_vault_fields_subject_field"),
    )
    with op.batch_alter_table("vault_fields", schema=None) as batch_op:
        batch_op.create_index("ix_vault_fields_blind_index", ["field", "blind_index"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("vault_fields", schema=None) as batch_op:
        batch_op.drop_index("ix_vault_fields_blind_index")

    op.drop_table("vault_fields")
    with op.batch_alter_table("vault_field_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_vault_field_history_subject_pk"))

    op.drop_table("vault_field_history")
    op.drop_table("key_rotations")
    op.drop_table("crypto_keys")
