"""the notices in use, kept as a fold of the consent ledger

``/admin/notices`` grouped every consent event ever recorded at each load. ``consent_notice_usage`` holds the
counts and first/last times per notice (id, version, language, SHA-256) of the events up to
``consent_notice_usage_state.through_pk``, which a periodic job advances; the page adds the few events after it.
The job starts from 0: the first runs fold the existing ledger in chunks.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consent_notice_usage",
        sa.Column("notice_id", sa.String(length=80), nullable=False),
        sa.Column("notice_version", sa.String(length=40), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("notice_sha256", sa.String(length=64), nullable=False),
        sa.Column("events", sa.BigInteger(), nullable=False),
        sa.Column("first_recorded", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_recorded", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "notice_id", "notice_version", "language", "notice_sha256", name=op.f("pk_consent_notice_usage")
        ),
    )
    state = op.create_table(
        "consent_notice_usage_state",
        sa.Column("pk", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("through_pk", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("pk", name=op.f("pk_consent_notice_usage_state")),
    )
    op.bulk_insert(state, [{"pk": 1, "through_pk": 0}])


def downgrade() -> None:
    op.drop_table("consent_notice_usage_state")
    op.drop_table("consent_notice_usage")
