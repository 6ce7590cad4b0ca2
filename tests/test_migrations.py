"""Alembic migrations apply from empty, round-trip, and match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DatabaseError, IntegrityError

from govsvc.core import migrate
from govsvc.models import metadata
from tests.conftest import BACKENDS

_numbers = itertools.count(1)


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"govsvc_empty_{next(_numbers)}"
    cluster.admin_execute(f"CREATE DATABASE {name}")
    yield cluster.url(name)
    cluster.admin_execute(f"DROP DATABASE {name} WITH (FORCE)")


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_round_trip(empty_database_url: str) -> None:
    expected = set(metadata.tables)
    migrate.upgrade(empty_database_url)
    assert expected <= _tables(empty_database_url)
    migrate.downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) <= {"alembic_version"}
    migrate.upgrade(empty_database_url)
    assert expected <= _tables(empty_database_url)


def test_migrated_schema_matches_the_models(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url)
    engine = create_engine(empty_database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            assert migrate.current_revision(connection) == migrate.head_revision()
    finally:
        engine.dispose()
    assert differences == [], differences


def test_dropping_the_leaves_foreign_key_keeps_the_placed_leaves_and_their_append_only_triggers(
    empty_database_url: str,
) -> None:
    """0016 rebuilds audit_leaves on SQLite: its rows and its UPDATE/DELETE refusals survive, and a leaf no longer
    needs its event to exist (the sequencer is the only writer)."""
    migrate.upgrade(empty_database_url, "0015")
    engine = create_engine(empty_database_url)
    event = {"event_id": "e" * 32, "time": "2026-12-03T08:00:00+00:00", "action": "data.read", "outcome": "success"}
    try:
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO audit_events (event_id, time, action, outcome) "
                    "VALUES (:event_id, :time, :action, :outcome)"
                ),
                event,
            )
            pk = connection.execute(text("SELECT id FROM audit_events")).scalar_one()
            connection.execute(
                text("INSERT INTO audit_leaves (seq, event_pk, event_json, leaf_hash) VALUES (0, :pk, '{}', :digest)"),
                {"pk": pk, "digest": b"\x01" * 32},
            )
        migrate.upgrade(empty_database_url)
        engine.dispose()  # SQLite: a pooled connection's PRAGMAs would answer from the schema it read before
        with engine.begin() as connection:
            assert connection.execute(text("SELECT seq, event_pk FROM audit_leaves")).all() == [(0, pk)]
            assert inspect(connection).get_foreign_keys("audit_leaves") == []
        for statement in ("UPDATE audit_leaves SET seq = 5", "DELETE FROM audit_leaves"):
            with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
                connection.execute(text(statement))
        with pytest.raises(IntegrityError), engine.begin() as connection:  # placed once: event_pk stays unique
            connection.execute(
                text("INSERT INTO audit_leaves (seq, event_pk, event_json, leaf_hash) VALUES (1, :pk, '{}', :digest)"),
                {"pk": pk, "digest": b"\x02" * 32},
            )
        migrate.downgrade(empty_database_url, "0015")
        engine.dispose()
        with engine.begin() as connection:
            assert [fk["referred_table"] for fk in inspect(connection).get_foreign_keys("audit_leaves")] == [
                "audit_events"
            ]
            assert connection.execute(text("SELECT seq, event_pk FROM audit_leaves")).all() == [(0, pk)]
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_leaves"))
    finally:
        engine.dispose()
