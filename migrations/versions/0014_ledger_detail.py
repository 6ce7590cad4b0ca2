"""deletion ledger: what a partial deletion removed (the fields or categories), so a replay needs nothing else

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: a batch (table copy) on SQLite would drop the insert-only triggers.
    op.add_column("deletion_ledger", sa.Column("detail", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE deletion_ledger DROP COLUMN detail")  # SQLite >= 3.35 and PostgreSQL, triggers kept
