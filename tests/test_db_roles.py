"""With a separate application role on PostgreSQL, the service cannot rewrite the audit log even by privilege."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DatabaseError

from govsvc.core.roles import app_role_grants
from tests.support.audit import drain, record_events


@pytest.mark.parametrize("db_template", ["postgresql"], indirect=True)  # roles: PostgreSQL only (SQLite: triggers)
def test_the_app_role_may_insert_and_select_but_not_rewrite_the_audit_log(app, database) -> None:
    record_events(app, 3)
    drain(app)
    role = "govsvc_app_test"
    owner = create_engine(database.url)
    try:
        with owner.begin() as connection:
            connection.execute(
                text(f"DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
            )
            for statement in app_role_grants(role):
                connection.execute(text(statement))
    finally:
        owner.dispose()
    as_app = create_engine(database.url.replace("postgres@", f"{role}@"))
    try:
        with as_app.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_events (event_id, time, action, outcome) "
                    "VALUES ('e1', now(), 'data.read', 'success')"
                )
            )
            assert connection.execute(text("SELECT count(*) FROM audit_leaves")).scalar() >= 3
            connection.execute(text("UPDATE api_clients SET name = name"))  # ordinary tables stay writable
        for statement in (
            "UPDATE audit_events SET action = 'x.y'",
            "DELETE FROM audit_leaves",
            "TRUNCATE audit_checkpoints",
        ):
            with pytest.raises(DatabaseError, match="permission denied"), as_app.begin() as connection:
                connection.execute(text(statement))
    finally:
        as_app.dispose()


def test_cli_prints_the_grants(app) -> None:
    output = app.test_cli_runner().invoke(args=["db", "app-role-sql", "--role", "govsvc_app"]).output
    assert (
        "GRANT SELECT, INSERT ON audit_events, audit_leaves, audit_tree_nodes, audit_checkpoints TO govsvc_app;"
        in output
    )
    assert "REVOKE UPDATE, DELETE, TRUNCATE ON audit_events" in output
