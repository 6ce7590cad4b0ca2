"""Database engine, declarative base and the request-scoped session.

One code path for SQLite (embedded default) and PostgreSQL. SQLite gets WAL, foreign keys, a busy timeout and
explicit ``BEGIN`` handling so that transactions and savepoints behave as on PostgreSQL; write requests take the
write lock up front (``BEGIN IMMEDIATE``) so concurrent writers wait instead of failing on a stale snapshot.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from flask import current_app, g, has_request_context
from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from govsvc.core.coherence import Coherence
from govsvc.core.direct import DirectStatements

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLITE_IMMEDIATE_OPTION = "govsvc_sqlite_immediate"
F = TypeVar("F", bound=Callable[..., Any])


class Base(DeclarativeBase):
    """Declarative base of every govsvc table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both backends (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    """The current time, UTC-aware."""
    return datetime.now(UTC)


def make_engine(
    url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 5, isolation_level: str | None = None
) -> Engine:
    """Create an engine for SQLite or PostgreSQL with the service's connection settings (``isolation_level``:
    PostgreSQL only, e.g. ``AUTOCOMMIT`` for a pool whose connections never open a transaction)."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        _configure_sqlite(engine, sqlite_synchronous)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    # No pre-ping (a round trip per checkout): a connection broken by a database restart fails its request with
    # a 503 and is discarded by the pool, and the next request gets a fresh one. A database that does not answer
    # fails a new connection after 5 s and a pool checkout after 5 s, instead of holding requests.
    options: dict[str, Any] = {"isolation_level": isolation_level} if isolation_level else {}
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=5, connect_args={"connect_timeout": 5}, **options
    )


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, emit BEGIN (needed for correct SAVEPOINT behaviour).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get(SQLITE_IMMEDIATE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The engine and session factory of one app."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 5) -> None:
        self.url = url
        self.engine = make_engine(url, sqlite_synchronous=sqlite_synchronous, pool_size=pool_size)
        self.session_factory = sessionmaker(bind=self.engine, expire_on_commit=False)
        # PostgreSQL: a pool of connections that stay in autocommit mode, for the views whose statements each
        # commit by themselves (a decision's lookup and its audit events), so that no connection switches modes
        # (and back when returned) per request.
        self.autocommit_engine: Engine | None = None
        self.autocommit_sessions: sessionmaker[Session] | None = None
        # PostgreSQL: libpq connections for a hot path's one prepared, self-committing statement (a refusal's
        # audit event, when the decision came from the cache and opened no session)
        self.direct: DirectStatements | None = None
        if self.engine.dialect.name == "postgresql":
            self.autocommit_engine = make_engine(url, pool_size=pool_size, isolation_level="AUTOCOMMIT")
            self.autocommit_sessions = sessionmaker(bind=self.autocommit_engine, expire_on_commit=False)
            self.direct = DirectStatements(
                self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            )
        # PostgreSQL: every writer waits, after its commit, until no instance's cache holds what it replaced
        # (``settle``); whether this instance caches anything is up to its decision engine.
        self.coherence: Coherence | None = None
        if self.autocommit_engine is not None:
            self.coherence = Coherence(self.autocommit_engine)
            self.coherence.watch(self.engine)
            self.coherence.watch(self.autocommit_engine)

    def settle(self) -> None:
        """After a commit: wait until every instance dropped what this thread's writes replaced (PostgreSQL)."""
        if self.coherence is not None:
            self.coherence.settle()

    def discard_writes(self) -> None:
        """This thread's writes were rolled back: no barrier is needed for them."""
        if self.coherence is not None:
            self.coherence.discard()

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def new_autocommit_session(self) -> Session:
        """PostgreSQL: a session whose statements each commit by themselves (no BEGIN/COMMIT round trips; see
        ``autocommit``). SQLite, which has no such pool: a write session, committed as usual."""
        if self.autocommit_sessions is None:
            return self.new_session(write=True)
        session = self.autocommit_sessions()
        session.info[AUTOCOMMIT_SESSION] = True
        return session

    def new_session(self, *, write: bool = False) -> Session:
        """A new session; ``write=True`` takes SQLite's write lock at the first statement."""
        session = self.session_factory()
        if write and self.is_sqlite:
            session.connection(execution_options={SQLITE_IMMEDIATE_OPTION: True})
        return session

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A session committed on success and rolled back on any error (CLI, jobs)."""
        session = self.new_session(write=write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            self.discard_writes()
            self._write_kept_events(session)
            raise
        finally:
            session.close()
        self.settle()

    def _write_kept_events(self, session: Session) -> None:
        """The refusals audited with ``keep_on_failure`` in a transaction that failed, in one of their own."""
        from govsvc.audit.service import write_kept_events

        try:
            write_kept_events(session, self)
        except SQLAlchemyError:
            logging.getLogger("govsvc.db").exception("refusal audit events of a failed transaction were not written")

    def dispose(self) -> None:
        if self.coherence is not None:
            self.coherence.stop()
        self.engine.dispose()
        if self.autocommit_engine is not None:
            self.autocommit_engine.dispose()
        if self.direct is not None:
            self.direct.close()


def get_db() -> Database:
    """The current app's Database."""
    return current_app.extensions["govsvc.db"]


_AUTOCOMMIT_ATTR = "_govsvc_autocommit"
AUTOCOMMIT_SESSION = "govsvc.autocommit"  # session.info flag: each statement commits by itself


def autocommit(view: F) -> F:
    """Run this view's statements without a wrapping transaction on PostgreSQL (no BEGIN/COMMIT round trips).

    Only for views whose writes are single, self-contained statements (a decision and its audit event): each
    statement commits by itself. SQLite keeps its transaction (it costs no round trip there).
    """
    setattr(view, _AUTOCOMMIT_ATTR, True)
    return view


_RECORDS_ATTR = "_govsvc_records_on_read"


def records_on_read(view: F) -> F:
    """Mark a GET view that writes (audit events of the reads it makes): on SQLite its transaction takes the write
    lock at its first statement, as a POST's does, instead of upgrading a read snapshot at commit, which fails
    when another writer (the audit sequencer) has committed in between."""
    setattr(view, _RECORDS_ATTR, True)
    return view


def _view_marked(attr: str) -> bool:
    from flask import current_app, request

    return _marked(current_app.view_functions.get(request.endpoint or ""), attr)


@functools.lru_cache(maxsize=4096)  # per view function and mark: read on every request
def _marked(view: Any, attr: str) -> bool:
    while view is not None:
        if getattr(view, attr, False):
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def _wants_autocommit() -> bool:
    return _view_marked(_AUTOCOMMIT_ATTR)


def get_session() -> Session:
    """The request's session: one transaction per request, committed by the app if the response succeeds."""
    if not has_request_context():
        raise RuntimeError("get_session() is for requests; use Database.transaction() elsewhere")
    session = g.get("db_session")
    if session is None:
        from flask import request

        database = get_db()
        write = request.method not in ("GET", "HEAD", "OPTIONS") or _view_marked(_RECORDS_ATTR)
        if database.autocommit_sessions is not None and _wants_autocommit():
            session = database.new_autocommit_session()
        else:
            session = database.new_session(write=write)
        g.db_session = session
    return session


class LazySession:
    """Stands for the request's session and opens it (``get_session``) at first use, so a view that may need no
    database at all (a decision answered from the decision cache) opens no session and checks out no connection.

    ``direct_audit=True``: the audit events recorded through it are collected in ``audit_rows`` instead of the
    session, for the view to write itself (``govsvc.audit.service.write_rows``): recording an event then opens no
    session either."""

    __slots__ = ("audit_rows", "opened")

    def __init__(self, *, direct_audit: bool = False) -> None:
        self.opened: Session | None = None
        self.audit_rows: list[dict[str, Any]] | None = [] if direct_audit else None

    def __getattr__(self, name: str) -> Any:
        if self.opened is None:
            self.opened = get_session()
        return getattr(self.opened, name)
