"""consent receipt keys

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "receipt_signing_keys",
        sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kid", sa.String(length=32), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("wrapped_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_receipt_signing_keys")),
        sa.UniqueConstraint("kid", name=op.f("uq_receipt_signing_keys_kid")),
    )


def downgrade() -> None:
    op.drop_table("receipt_signing_keys")
