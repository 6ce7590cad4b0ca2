"""indexes for reads that scanned a growing table

- ``consent_events.recorded_at``: the admin dashboard counts the last 30 days of consent acts at every load; the
  ledger is append-only and holds every act ever recorded.
- ``deletion_ledger.run_id``: a retention run reads its own tombstones when it executes or resumes; the ledger is
  insert-only and never shrinks.
- ``admin_login_attempts.at``: every sign-in prunes the attempts older than a day; ``at`` was only the second
  column of the table's indexes, and a refused attempt (rate-limited ones too) adds a row.
- ``consent_state (subject_pk, updated_at) WHERE status = 'withdrawn'``: the retention rule that clears withdrawn
  consents pages through them by subject; each page scanned every consent state (a run grew with the square of
  the table).

On PostgreSQL the indexes are built ``CONCURRENTLY`` (outside a transaction), so that writes to the ledgers go on
while they are built.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_consent_events_recorded_at", "consent_events", "recorded_at"),
    ("ix_deletion_ledger_run_id", "deletion_ledger", "run_id"),
    ("ix_admin_login_attempts_at", "admin_login_attempts", "at"),
)


_WITHDRAWN = "ix_consent_state_withdrawn"
_WITHDRAWN_ONLY = sa.text("status = 'withdrawn'")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            for name, table, column in _INDEXES:
                op.create_index(name, table, [column], postgresql_concurrently=True, if_not_exists=True)
            op.create_index(
                _WITHDRAWN,
                "consent_state",
                ["subject_pk", "updated_at"],
                postgresql_where=_WITHDRAWN_ONLY,
                postgresql_concurrently=True,
                if_not_exists=True,
            )
        return
    for name, table, column in _INDEXES:  # plain CREATE INDEX: a batch rebuild would drop the tables' triggers
        op.create_index(name, table, [column])
    op.create_index(_WITHDRAWN, "consent_state", ["subject_pk", "updated_at"], sqlite_where=_WITHDRAWN_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.drop_index(_WITHDRAWN, table_name="consent_state", postgresql_concurrently=True, if_exists=True)
            for name, table, _column in reversed(_INDEXES):
                op.drop_index(name, table_name=table, postgresql_concurrently=True, if_exists=True)
        return
    op.drop_index(_WITHDRAWN, table_name="consent_state")
    for name, table, _column in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
