"""Reading PostgreSQL plans in tests: how many rows a statement's scans read, whatever plan was chosen."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session


def rows_read(plan: dict[str, Any], tables: set[str]) -> int:
    """Rows that the scans of ``tables`` in an EXPLAIN ANALYZE plan read: returned or filtered out, every loop."""
    own = 0
    if plan.get("Relation Name") in tables:
        own = (plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0)) * plan["Actual Loops"]
    return own + sum(rows_read(child, tables) for child in plan.get("Plans", []))


class StatementCapture:
    """``with StatementCapture(engine, "FROM consent_events") as captured:`` keeps the statements (and their
    parameters) that contain the marker, as the application sent them."""

    def __init__(self, engine: Engine, marker: str) -> None:
        self.engine = engine
        self.marker = marker
        self.statements: list[tuple[str, Any]] = []

    def _keep(self, _connection: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        if self.marker in statement:
            self.statements.append((statement, parameters))

    def __enter__(self) -> StatementCapture:
        event.listen(self.engine, "before_cursor_execute", self._keep)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._keep)

    def rows_read(self, session: Session, tables: set[str], index: int = 0) -> int:
        """Run the captured statement ``index`` again under EXPLAIN ANALYZE and count the rows its scans read."""
        statement, parameters = self.statements[index]
        explained = session.connection().exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters)
        return rows_read(explained.scalar_one()[0]["Plan"], tables)


def only_postgresql(database: Any) -> None:
    """Skip a plan test on SQLite: the plans and their row counts are PostgreSQL's."""
    if database.backend != "postgresql":
        pytest.skip("plans and their row counts are PostgreSQL's")


def insert_subjects(connection: Connection, count: int) -> None:
    """Subjects 1..count (pk = n, subject_id ``sub_plan<n>``), straight into the table, for a plan test's data."""
    connection.execute(
        text(
            "INSERT INTO subjects (pk, subject_id, jurisdictions, restricted, legal_hold, created_at, updated_at) "
            "SELECT n, 'sub_plan' || n, '[\"pipl\"]', false, false, now(), now() FROM generate_series(1, :count) n"
        ),
        {"count": count},
    )


def insert_consent_states(connection: Connection, count: int, status: str) -> None:
    """One e-mail marketing consent state per subject 1..count, updated 400 days ago; ``status`` is an SQL
    expression of ``n`` (the subject)."""
    connection.execute(
        text(
            "INSERT INTO consent_state (subject_pk, purpose_key, scope, status, purpose_version, actor, source, "
            f"last_event_pk, updated_at) SELECT n, 'marketing.communications.email', '', {status}, 1, 'subject', "
            "'api', n, now() - interval '400 days' FROM generate_series(1, :count) n"
        ),
        {"count": count},
    )
