"""audit_leaves.event_pk without a foreign key to audit_events

The sequencer places only events it has just read, in the same transaction, and audit events are never deleted
(append-only triggers), so the constraint could never fail. Its check was not free: on PostgreSQL, a row lock
(``FOR KEY SHARE``) on the event for every leaf, a write to the event's heap page and to the WAL; it made the
leaf COPY, per row, about as costly as the event's INSERT (146 against 82 µs per leaf without it, measured under
decision load). The unique constraint on ``event_pk`` stays: an event is placed once.

SQLite cannot drop a constraint: the table is rebuilt (same columns, primary key and unique constraint), and its
append-only triggers, dropped with the old table, are created again.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_FOREIGN_KEY = "fk_audit_leaves_event_pk_audit_events"


def _sqlite_append_only_triggers() -> None:
    """The triggers of migration 0002 on audit_leaves (SQLite), after a rebuild of the table."""
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER audit_leaves_no_{operation.lower()} BEFORE {operation} ON audit_leaves "
            f"BEGIN SELECT RAISE(ABORT, 'govsvc: {operation} on audit_leaves is refused: the audit log is "
            "append-only'); END"
        )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(_FOREIGN_KEY, "audit_leaves", type_="foreignkey")
        return
    with op.batch_alter_table("audit_leaves", recreate="always") as batch_op:
        batch_op.drop_constraint(_FOREIGN_KEY, type_="foreignkey")
    _sqlite_append_only_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_foreign_key(_FOREIGN_KEY, "audit_leaves", "audit_events", ["event_pk"], ["id"])
        return
    with op.batch_alter_table("audit_leaves", recreate="always") as batch_op:
        batch_op.create_foreign_key(_FOREIGN_KEY, "audit_events", ["event_pk"], ["id"])
    _sqlite_append_only_triggers()
