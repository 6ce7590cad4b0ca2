"""An external database of the test's backend (an SQLite file, or a database in the test PostgreSQL cluster) with a
CRM table of orders: the kind of store retention purges and DSRs reach."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from govsvc.core.db import utcnow

_numbers = itertools.count(1)


@dataclass
class ExternalDb:
    backend: str
    url: str
    engine: Engine
    path: Path | None = None  # SQLite file

    def execute(self, statement: str, parameters: Any = None) -> Any:
        with self.engine.begin() as connection:
            return connection.execute(text(statement), parameters or {})

    def scalar(self, statement: str, parameters: Any = None) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(text(statement), parameters or {}).scalar()

    def add_orders(self, rows: Iterable[tuple[int, str, int]], table: str = "crm_orders") -> None:
        """(id, customer id, age in days) rows."""
        now = utcnow()
        values = [
            {
                "id": key,
                "customer": customer,
                "email": f"{customer.lower()}@example.com",
                "amount": key * 10,
                "note": f"order {key}",
                "created_at": _stamp(self.backend, now - timedelta(days=age)),
            }
            for key, customer, age in rows
        ]
        with self.engine.begin() as connection:
            connection.execute(
                text(
                    f"INSERT INTO {table} (id, customer_id, email, amount, note, created_at) "
                    "VALUES (:id, :customer, :email, :amount, :note, :created_at)"
                ),
                values,
            )

    def count(self, table: str = "crm_orders", where: str = "1=1") -> int:
        return int(self.scalar(f"SELECT count(*) FROM {table} WHERE {where}"))


def _stamp(backend: str, moment: datetime) -> Any:
    return moment.replace(tzinfo=None) if backend == "sqlite" else moment


def create_orders_table(db: ExternalDb, table: str = "crm_orders") -> None:
    stamp = "TIMESTAMP" if db.backend == "sqlite" else "TIMESTAMP WITH TIME ZONE"
    db.execute(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, customer_id VARCHAR(64) NOT NULL, email VARCHAR(200), "
        f"amount INTEGER, note VARCHAR(200), created_at {stamp} NOT NULL)"
    )
    db.execute(f"CREATE INDEX ix_{table}_customer ON {table} (customer_id)")


@pytest.fixture
def external_db(database, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ExternalDb]:
    if database.backend == "sqlite":
        path = tmp_path / "crm.db"
        url = f"sqlite:///{path}"
        db = ExternalDb("sqlite", url, create_engine(url), path)
        create_orders_table(db)
        yield db
        db.engine.dispose()
        return
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"crm_{next(_numbers)}"
    cluster.admin_execute(f"CREATE DATABASE {name}")
    url = cluster.url(name)
    db = ExternalDb("postgresql", url, create_engine(url))
    create_orders_table(db)
    yield db
    db.engine.dispose()
    cluster.admin_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def source_body(db: ExternalDb, name: str = "crm_orders", table: str = "crm_orders") -> dict[str, Any]:
    return {
        "name": name,
        "url": db.url,
        "table": table,
        "key_column": "id",
        "subject_column": "customer_id",
        "subject_kind": "crm_id",
        "subject_system": "crm",
        "timestamp_column": "created_at",
        "columns": {
            "customer_id": "user.crm.customer_id",
            "email": "user.contact.email",
            "amount": "user.financial",
            "note": "user.behavior.purchase_history",
        },
    }
