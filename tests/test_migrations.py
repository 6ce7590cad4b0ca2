"""Alembic migrations apply from empty, round-trip, and match the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

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
