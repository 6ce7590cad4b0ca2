"""Reading PostgreSQL plans in tests: how many rows a statement's scans read, whatever plan was chosen."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from tests.support.audit import tamper


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


def insert_consent_events(connection: Connection, old: int, recent: int, recent_age: str) -> None:
    """``old`` consent acts a year old, then ``recent`` acts ``recent_age`` old (an SQL interval), all given for
    subject 1 under the notice ``privacy-notice`` 2026-11 (zh-CN)."""
    connection.execute(
        text(
            "INSERT INTO consent_events (event_id, subject_pk, purpose_key, purpose_version, scope, event_type, "
            "channel, actor, source, notice_id, notice_version, language, notice_sha256, recorded_at) "
            "SELECT md5(n::text), 1, 'marketing.communications.email', 1, '', 'given', 'web', 'subject', 'api', "
            "'privacy-notice', '2026-11', 'zh-CN', 'abc', now() - CASE WHEN n <= :old THEN interval '365 days' "
            "ELSE CAST(:recent_age AS interval) END FROM generate_series(1, :total) AS n"
        ),
        {"old": old, "recent_age": recent_age, "total": old + recent},
    )


def fill(database_url: str, *steps: Callable[[Connection], object]) -> None:
    """Write a plan test's data straight into the tables (append-only triggers out of the way), then ANALYZE, so
    that the planner sees the tables' real sizes."""
    tamper(database_url, *steps, "ANALYZE")


def insert_placed_events(connection: Connection, events: int, placed: int, seconds_apart: int = 0) -> None:
    """``events`` audit events (action ``plan.read``), the last one now and each ``seconds_apart`` after the one
    before, and leaves (from seq 1,000,001) placing the first ``placed`` of them."""
    connection.execute(
        text(
            "INSERT INTO audit_events (event_id, time, action, outcome) SELECT md5(n::text), "
            "now() - make_interval(secs => (:events - n) * :apart), 'plan.read', 'success' "
            "FROM generate_series(1, :events) AS n"
        ),
        {"events": events, "apart": seconds_apart},
    )
    connection.execute(
        text(
            "INSERT INTO audit_leaves (seq, event_pk, event_json, leaf_hash) SELECT 1000000 + row_number() OVER "
            "(ORDER BY id), id, '{}', sha256(id::text::bytea) FROM (SELECT id FROM audit_events WHERE action = "
            "'plan.read' ORDER BY id LIMIT :placed) AS first"
        ),
        {"placed": placed},
    )
