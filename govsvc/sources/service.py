"""Registered external SQL sources (PostgreSQL or SQLite): registration (the connection URL is stored wrapped
under a key derived from the service secret), the table's shape checked by reflection, and the statements the
retention purge and DSR connectors use: keyset-paged reads, chunked deletes and updates by primary key (one
short transaction per chunk, row locks only, never a table lock)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ARRAY, ColumnElement, MetaData, Table, any_, bindparam, create_engine, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ServiceError, ValidationFailed
from govsvc.core.pii_guard import random_reference
from govsvc.crypto.service import KeyWrapper
from govsvc.sources.models import ExternalSource
from govsvc.subjects.service import IDENTIFIER_KINDS

URL_LABEL = "govsvc external source url v1"
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}(\.[A-Za-z_][A-Za-z0-9_]{0,62})?$")


class SourceUnavailable(ServiceError):
    """The external database cannot be reached or its table does not have the registered shape."""

    slug = "service-unavailable"


@dataclass(frozen=True)
class SourceConfig:
    source_id: str
    name: str
    url: str
    dialect: str
    table_name: str
    key_column: str
    subject_column: str
    subject_kind: str
    subject_system: str
    timestamp_column: str
    columns: Mapping[str, str]  # column -> data category

    @property
    def store(self) -> str:
        return f"source:{self.name}"

    def categories(self) -> list[str]:
        return sorted(set(self.columns.values()))


class Sources:
    """The registered sources of one app, and a cache of engines to reach them."""

    def __init__(self, secret_key: str) -> None:
        self.wrapper = KeyWrapper(secret_key, URL_LABEL)
        self._engines: dict[str, Engine] = {}
        self._tables: dict[str, Table] = {}
        self._lock = threading.Lock()

    # -- registration -------------------------------------------------------------------------------------------

    def register(self, session: Session, body: Mapping[str, Any], *, actor: str) -> ExternalSource:
        """Check the URL, the table and its columns (by reflection), then store the source (URL wrapped)."""
        name = body["name"]
        if not _NAME_RE.match(name):
            raise ValidationFailed("Invalid name.", errors=[{"field": "name", "message": "a-z, 0-9, '_', '-'; 1-64"}])
        if session.scalar(select(ExternalSource.pk).where(ExternalSource.name == name)) is not None:
            raise ConflictError("A source with this name exists.")
        dialect = _dialect_of(body["url"])
        if body["subject_kind"] not in IDENTIFIER_KINDS:
            raise ValidationFailed(
                "Unknown identifier kind.",
                errors=[{"field": "subject_kind", "message": f"one of {', '.join(sorted(IDENTIFIER_KINDS))}"}],
            )
        columns: dict[str, str] = dict(body["columns"])
        for field_name in ("table", "key_column", "subject_column", "timestamp_column"):
            if not _IDENT_RE.match(body[field_name]):
                raise ValidationFailed(
                    "Invalid identifier.", errors=[{"field": field_name, "message": "a SQL identifier"}]
                )
        for column in columns:
            if not _IDENT_RE.match(column):
                raise ValidationFailed("Invalid column.", errors=[{"field": "columns", "message": f"{column!r}"}])
        if not columns:
            raise ValidationFailed(
                "Name the personal data columns.", errors=[{"field": "columns", "message": "{column: category}"}]
            )
        source_id = random_reference("src_")
        config = SourceConfig(
            source_id=source_id,
            name=name,
            url=body["url"],
            dialect=dialect,
            table_name=body["table"],
            key_column=body["key_column"],
            subject_column=body["subject_column"],
            subject_kind=body["subject_kind"],
            subject_system=body.get("subject_system") or "",
            timestamp_column=body["timestamp_column"],
            columns=columns,
        )
        self._check_shape(config)
        row = ExternalSource(
            source_id=source_id,
            name=name,
            url_wrapped=self.wrapper.wrap(config.url, source_id),
            dialect=dialect,
            table_name=config.table_name,
            key_column=config.key_column,
            subject_column=config.subject_column,
            subject_kind=config.subject_kind,
            subject_system=config.subject_system,
            timestamp_column=config.timestamp_column,
            columns=json.dumps(columns, sort_keys=True),
            enabled=True,
            created_at=utcnow(),
            created_by=actor,
        )
        session.add(row)
        session.flush()
        return row

    def _check_shape(self, config: SourceConfig) -> None:
        try:
            table = self.table(config)
        except SourceUnavailable as error:
            raise ValidationFailed(
                "The source cannot be reached or has no such table.",
                errors=[{"field": "table", "message": error.detail}],
            ) from None
        names = set(table.c.keys())
        needed = {config.key_column, config.subject_column, config.timestamp_column, *config.columns}
        missing = sorted(needed - names)
        if missing:
            self.forget(config.source_id)
            raise ValidationFailed(
                "The table lacks registered columns.",
                errors=[{"field": "columns", "message": f"missing: {', '.join(missing)}"}],
            )

    def configs(self, session: Session, *, enabled_only: bool = True) -> list[SourceConfig]:
        query = select(ExternalSource).order_by(ExternalSource.pk)
        if enabled_only:
            query = query.where(ExternalSource.enabled.is_(True))
        return [self.config_of(row) for row in session.scalars(query)]

    def by_name(self, session: Session, name: str) -> SourceConfig:
        row = session.scalar(
            select(ExternalSource).where(ExternalSource.name == name, ExternalSource.enabled.is_(True))
        )
        if row is None:
            raise NotFoundError(f"No enabled source named {name!r}.")
        return self.config_of(row)

    def config_of(self, row: ExternalSource) -> SourceConfig:
        return SourceConfig(
            source_id=row.source_id,
            name=row.name,
            url=self.wrapper.unwrap(row.url_wrapped, row.source_id),
            dialect=row.dialect,
            table_name=row.table_name,
            key_column=row.key_column,
            subject_column=row.subject_column,
            subject_kind=row.subject_kind,
            subject_system=row.subject_system,
            timestamp_column=row.timestamp_column,
            columns=json.loads(row.columns),
        )

    def disable(self, session: Session, source_id: str) -> ExternalSource:
        row = session.scalar(select(ExternalSource).where(ExternalSource.source_id == source_id))
        if row is None:
            raise NotFoundError("No such source.")
        row.enabled = False
        self.forget(source_id)
        return row

    # -- connections --------------------------------------------------------------------------------------------

    def engine(self, config: SourceConfig) -> Engine:
        with self._lock:
            engine = self._engines.get(config.source_id)
            if engine is None:
                url = config.url
                if url.startswith("postgresql://"):
                    url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
                if config.dialect == "sqlite":
                    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
                else:
                    engine = create_engine(url, pool_size=2, max_overflow=2)
                self._engines[config.source_id] = engine
            return engine

    def table(self, config: SourceConfig) -> Table:
        with self._lock:
            table = self._tables.get(config.source_id)
        if table is not None:
            return table
        schema, _, name = config.table_name.rpartition(".")
        try:
            table = Table(name, MetaData(), schema=schema or None, autoload_with=self.engine(config))
        except NoSuchTableError:
            raise SourceUnavailable(f"no table {config.table_name}") from None
        except SQLAlchemyError as error:
            raise SourceUnavailable(f"cannot reach the source ({type(error).__name__})") from None
        with self._lock:
            self._tables[config.source_id] = table
        return table

    def forget(self, source_id: str) -> None:
        with self._lock:
            engine = self._engines.pop(source_id, None)
            self._tables.pop(source_id, None)
        if engine is not None:
            engine.dispose()

    def dispose(self) -> None:
        for source_id in list(self._engines):
            self.forget(source_id)

    # -- statements ---------------------------------------------------------------------------------------------

    def page(
        self,
        config: SourceConfig,
        *,
        before: datetime | None,
        after: Any,
        limit: int,
        subjects: Sequence[str] | None = None,
    ) -> list[tuple[Any, str | None, datetime | None]]:
        """Up to ``limit`` rows (key, subject value, timestamp) older than ``before`` with a key above ``after``,
        in key order (keyset paging on the primary key: an index range, no table scan per chunk)."""
        table = self.table(config)
        key, subject, stamp = (
            table.c[config.key_column],
            table.c[config.subject_column],
            table.c[config.timestamp_column],
        )
        query = select(key, subject, stamp).order_by(key).limit(limit)
        if before is not None:
            query = query.where(stamp < _naive_if_sqlite(config, before))
        if after is not None:
            query = query.where(key > after)
        if subjects is not None:
            query = query.where(one_of(subject, list(subjects), config.dialect))
        with self.engine(config).connect() as connection:
            return list(connection.execute(query).all())

    def delete_keys(self, config: SourceConfig, keys: Sequence[Any], *, before: datetime | None) -> int:
        """Delete the rows with these keys (still older than ``before``) in one transaction; rows deleted."""
        if not keys:
            return 0
        table = self.table(config)
        statement = table.delete().where(one_of(table.c[config.key_column], keys, config.dialect))
        if before is not None:
            statement = statement.where(table.c[config.timestamp_column] < _naive_if_sqlite(config, before))
        with self.engine(config).begin() as connection:
            return int(connection.execute(statement).rowcount or 0)

    def update_rows(self, config: SourceConfig, changes: Sequence[tuple[Any, Mapping[str, Any]]]) -> int:
        """Apply per-row column changes (anonymization) in one transaction; rows updated."""
        if not changes:
            return 0
        table = self.table(config)
        key = table.c[config.key_column]
        done = 0
        with self.engine(config).begin() as connection:
            for row_key, values in changes:
                done += int(connection.execute(table.update().where(key == row_key).values(**values)).rowcount or 0)
        return done

    def rows_of(
        self, config: SourceConfig, values: Iterable[str], *, columns: Sequence[str] | None = None, limit: int = 1000
    ) -> Iterable[dict[str, Any]]:
        """A subject's rows (keyset-paged), as mappings of the registered columns."""
        table = self.table(config)
        wanted = [config.key_column, config.timestamp_column, *(columns or list(config.columns))]
        selected = [table.c[name] for name in dict.fromkeys(wanted)]
        key = table.c[config.key_column]
        values = list(values)
        if not values:
            return
        after = None
        while True:
            query = select(*selected).where(table.c[config.subject_column].in_(values)).order_by(key).limit(limit)
            if after is not None:
                query = query.where(key > after)
            with self.engine(config).connect() as connection:
                rows = [dict(r._mapping) for r in connection.execute(query)]
            yield from rows
            if len(rows) < limit:
                return
            after = rows[-1][config.key_column]

    def delete_subject_rows(self, config: SourceConfig, values: Sequence[str], *, chunk: int = 1000) -> int:
        """Delete every row of these subject values, ``chunk`` rows per transaction; rows deleted."""
        table = self.table(config)
        key = table.c[config.key_column]
        total = 0
        while True:
            with self.engine(config).begin() as connection:
                keys = [
                    r[0]
                    for r in connection.execute(
                        select(key).where(table.c[config.subject_column].in_(list(values))).order_by(key).limit(chunk)
                    )
                ]
                if not keys:
                    return total
                total += int(connection.execute(table.delete().where(key.in_(keys))).rowcount or 0)

    def healthy(self, config: SourceConfig) -> bool:
        try:
            with self.engine(config).connect() as connection:
                connection.execute(select(1))
            return True
        except SQLAlchemyError:
            return False


def one_of(column: Any, values: Sequence[Any], dialect: str) -> ColumnElement[bool]:
    """``column IN values``; on PostgreSQL as ``= ANY(array)``: one parameter, however many values."""
    if dialect == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(list(values))


def _dialect_of(url: str) -> str:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValidationFailed(
            "Invalid connection URL.", errors=[{"field": "url", "message": "a database URL"}]
        ) from None
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ValidationFailed(
            "Unsupported database.", errors=[{"field": "url", "message": "postgresql:// or sqlite:/// only"}]
        )
    return backend


def _naive_if_sqlite(config: SourceConfig, moment: datetime) -> datetime:
    """SQLite stores timestamps as naive text: compare against naive UTC there."""
    if config.dialect == "sqlite":
        from datetime import UTC

        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def column_categories(config: SourceConfig) -> dict[str, str]:
    return dict(config.columns)
