"""PostgreSQL connections for one self-committing prepared statement on a hot path, at the libpq level.

A decision answered from the cache that denies must write its audit event before it answers: one INSERT. Through
the SQLAlchemy pool and a psycopg cursor that costs the request thread about 40 µs of CPU more than the round
trip itself (pool checkout and reset, cursor, psycopg's query machinery and its non-blocking wait loop, which can
give up and take back the GIL several times). Here the statement is prepared once per connection and run with
one blocking ``PQexecPrepared``: the thread releases the GIL once, while it waits for the answer.

Connections are in autocommit mode (libpq's default: no BEGIN is ever sent), kept in a free list that grows to
the number of threads that use it at once, and opened lazily in each process (a forked child never uses, nor
closes, its parent's).
"""

from __future__ import annotations

import contextlib
import os
import threading

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

_INHERITED: list[object] = []  # a forked child's copies of its parent's connections: never used nor finished


class _Connection:
    __slots__ = ("pgconn", "prepared")

    def __init__(self, pgconn: pq.abc.PGconn) -> None:
        self.pgconn = pgconn
        self.prepared: set[bytes] = set()


class DirectStatements:
    """Run named statements, each prepared on first use per connection, in autocommit mode."""

    def __init__(self, conninfo: str, *, connect_timeout: int = 5, application_name: str = "govsvc-direct") -> None:
        self._conninfo = make_conninfo(
            conninfo, connect_timeout=connect_timeout, application_name=application_name
        ).encode()
        self._free: list[_Connection] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._closed = False

    def execute(self, name: bytes, sql: bytes, params: list[bytes | None]) -> None:
        """Run the statement ``sql`` (parameters ``$1``...) known as ``name``; it commits by itself.

        Raises a ``psycopg`` error as a cursor would (its ``sqlstate`` class: ``psycopg.OperationalError`` for a
        lost connection, which is then closed rather than used again)."""
        connection = self._take()
        try:
            pgconn = connection.pgconn
            if name not in connection.prepared:
                _check(pgconn, pgconn.prepare(name, sql))
                connection.prepared.add(name)
            _check(pgconn, pgconn.exec_prepared(name, params))
        except BaseException:
            pgconn = connection.pgconn
            if pgconn.status != pq.ConnStatus.OK or pgconn.transaction_status != pq.TransactionStatus.IDLE:
                pgconn.finish()  # lost, or in a state we do not reset: the next call opens another connection
            else:
                self._give_back(connection)  # a statement error (a constraint, say): the connection is sound
            raise
        self._give_back(connection)

    def close(self) -> None:
        """Close every idle connection (those in use are closed when handed back)."""
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        if os.getpid() == self._pid:
            for connection in free:
                connection.pgconn.finish()

    @property
    def idle_connections(self) -> int:
        """How many connections wait in the free list (for tests and diagnostics)."""
        return len(self._free) if os.getpid() == self._pid else 0

    def _take(self) -> _Connection:
        if os.getpid() != self._pid:
            self._after_fork()
        try:
            return self._free.pop()  # atomic under the GIL
        except IndexError:
            return self._connect()

    def _give_back(self, connection: _Connection) -> None:
        if self._closed or os.getpid() != self._pid:
            connection.pgconn.finish()
            return
        self._free.append(connection)

    def _connect(self) -> _Connection:
        pgconn = pq.PGconn.connect(self._conninfo)  # blocking; libpq releases the GIL while it waits
        if pgconn.status != pq.ConnStatus.OK:
            message = pgconn.error_message.decode("utf-8", "replace").strip()
            pgconn.finish()
            raise psycopg.OperationalError(f"connection failed: {message}")
        return _Connection(pgconn)

    def _after_fork(self) -> None:
        with self._lock:
            if os.getpid() == self._pid:
                return
            _INHERITED.extend(self._free)  # finishing them would end the parent's sessions on the shared sockets
            self._free = []
            self._pid = os.getpid()


def _check(pgconn: pq.abc.PGconn, result: pq.abc.PGresult) -> None:
    """Raise the psycopg error a failed result stands for."""
    if result.status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
        return
    message = (result.error_message or pgconn.error_message).decode("utf-8", "replace").strip()
    if pgconn.status != pq.ConnStatus.OK:
        raise psycopg.OperationalError(message or "the connection was lost")
    sqlstate = result.error_field(pq.DiagnosticField.SQLSTATE)
    error_class: type[psycopg.Error] = psycopg.DatabaseError
    if sqlstate:
        with contextlib.suppress(KeyError):  # a code this psycopg does not know: a plain DatabaseError
            error_class = psycopg.errors.lookup(sqlstate.decode())
    raise error_class(message)
