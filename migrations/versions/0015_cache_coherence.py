"""cache coherence: instance leases, write barriers and invalidation triggers (PostgreSQL)

Every change to what a decision reads sends a notification on the channel ``govsvc_cache``, from triggers, so no
code path (nor an operator's SQL) can forget it:
- ``s<pk>,<pk>…``: these subjects changed (their row, identifiers or consent states);
- ``*``: something every decision reads changed (policy or taxonomy version, a category hold, a client's key, the
  key epoch), or too many subjects at once.
A writer then sends ``b<n>`` (a barrier, ``n`` from ``cache_barrier_seq``) and waits until every instance with an
unexpired lease in ``cache_leases`` has acknowledged ``n`` (``govsvc.core.coherence``).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# More subjects than this in one statement: one "*" (a notification's payload is limited to 8,000 bytes).
_MANY = 400

_SUBJECT_TABLES = {"subjects": "pk", "subject_identifiers": "subject_pk", "consent_state": "subject_pk"}
_GLOBAL_TABLES = ("policy_state", "taxonomy_versions", "legal_holds", "crypto_state", "api_clients")


def _subject_function(table: str, column: str) -> str:
    changed = {
        "INSERT": f"SELECT DISTINCT {column} FROM new_rows",  # noqa: S608 - constant names
        "DELETE": f"SELECT DISTINCT {column} FROM old_rows",  # noqa: S608
        "UPDATE": f"SELECT {column} FROM new_rows UNION SELECT {column} FROM old_rows",  # noqa: S608
    }
    branches = "\n".join(
        f"    {'IF' if index == 0 else 'ELSIF'} TG_OP = '{operation}' THEN\n"  # noqa: S608 - constant names
        f"        SELECT count(*), string_agg(k::text, ',') INTO total, keys FROM ({query}) changed(k);"
        for index, (operation, query) in enumerate(changed.items())
    )
    return f"""
CREATE FUNCTION govsvc_invalidate_{table}() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    keys text;
BEGIN
{branches}
    END IF;
    IF total > {_MANY} THEN
        PERFORM pg_notify('govsvc_cache', '*');
    ELSIF total > 0 THEN
        PERFORM pg_notify('govsvc_cache', 's' || keys);
    END IF;
    RETURN NULL;
END $$"""


def upgrade() -> None:
    op.create_table(
        "cache_leases",
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acked_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("instance_id", name=op.f("pk_cache_leases")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return  # SQLite: no notifications, and decisions read the database every time
    op.execute("CREATE SEQUENCE cache_barrier_seq")
    op.execute(
        "CREATE FUNCTION govsvc_invalidate_all() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN PERFORM pg_notify('govsvc_cache', '*'); RETURN NULL; END $$"
    )
    for table in _GLOBAL_TABLES:  # per row: an UPDATE that matches nothing says nothing
        op.execute(
            f"CREATE TRIGGER govsvc_cache_{table} AFTER INSERT OR UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION govsvc_invalidate_all()"
        )
        op.execute(
            f"CREATE TRIGGER govsvc_cache_{table}_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION govsvc_invalidate_all()"
        )
    for table, column in _SUBJECT_TABLES.items():
        op.execute(_subject_function(table, column))
        transitions = {
            "INSERT": "NEW TABLE AS new_rows",
            "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
            "DELETE": "OLD TABLE AS old_rows",
        }
        for operation, tables in transitions.items():  # per statement: one notification for a bulk change
            op.execute(
                f"CREATE TRIGGER govsvc_cache_{table}_{operation.lower()} AFTER {operation} ON {table} "
                f"REFERENCING {tables} FOR EACH STATEMENT EXECUTE FUNCTION govsvc_invalidate_{table}()"
            )
        op.execute(
            f"CREATE TRIGGER govsvc_cache_{table}_truncate AFTER TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION govsvc_invalidate_all()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in (*_GLOBAL_TABLES, *_SUBJECT_TABLES):
            op.execute(f"DROP TRIGGER IF EXISTS govsvc_cache_{table} ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS govsvc_cache_{table}_truncate ON {table}")
            for operation in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS govsvc_cache_{table}_{operation} ON {table}")
        for table in _SUBJECT_TABLES:
            op.execute(f"DROP FUNCTION IF EXISTS govsvc_invalidate_{table}()")
        op.execute("DROP FUNCTION IF EXISTS govsvc_invalidate_all()")
        op.execute("DROP SEQUENCE IF EXISTS cache_barrier_seq")
    op.drop_table("cache_leases")
