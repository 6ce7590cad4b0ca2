"""Helpers for audit-log tests: record events, drain the sequencer, tamper with storage as an attacker would."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, create_engine, text

from govsvc.audit.models import APPEND_ONLY_TABLES
from govsvc.audit.service import AuditContext, record

ACTOR = AuditContext(principal_id="client:cl_test", role="app", client_id="cl_test", request_id="req-test")


def record_events(app, count: int, *, subject_prefix: str = "sub_", action: str = "data.read", **fields) -> None:
    """Record ``count`` events (committed), subjects ``sub_0``, ``sub_1``…"""
    with app.extensions["govsvc.db"].transaction() as session:
        for index in range(count):
            record(session, action, subject_ref=f"{subject_prefix}{index}", context=ACTOR, **fields)


def drain(app) -> int:
    """Sequence everything pending and sign a checkpoint."""
    return app.extensions["govsvc.sequencer"].drain()


def tamper(database_url: str, *statements: str | Callable[[Connection], object]) -> None:
    """Run statements (SQL text or callables taking the connection) with the append-only triggers out of the
    way, as a database superuser could."""
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SET LOCAL session_replication_role = replica"))
            else:
                for table in APPEND_ONLY_TABLES:
                    connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_update"))
                    connection.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_delete"))
            for statement in statements:
                if callable(statement):
                    statement(connection)
                else:
                    connection.execute(text(statement))
    finally:
        engine.dispose()
