"""Caches that follow the database on every instance (PostgreSQL): leases, invalidations and write barriers.

A decision must see the consent given or withdrawn a moment before, through any instance. Reading it from the
database every time costs a round trip per decision; this module lets an instance answer from memory instead,
without giving up that guarantee:

- **Invalidations.** Triggers on the tables decisions read send a notification on ``govsvc_cache`` when they
  change (migration 0015). Each instance has a listener thread (its own connection, ``LISTEN``) that drops what
  they name from its caches.
- **Leases.** Each instance holds a row in ``cache_leases``, renewed every ``lease_seconds / 6``. It answers from
  its caches only while its lease is valid by its own clock, which runs out before the database's ``expires_at``
  (it counts from before the renewal was sent). A listener that stops (lost connection, stalled process) thus
  stops its instance's caches before any writer stops waiting for it; once it renews again, it starts empty.
- **Barriers.** A thread that changed any of those tables calls ``settle()`` after committing: it sends a
  notification ``b<n>`` (``n`` from a sequence) and waits until every unexpired lease has acknowledged ``n`` or a
  later barrier. Notifications arrive in commit order, so an instance that saw ``b<n>`` had already applied the
  writer's invalidations: when the write returns, no instance answers from what it replaced.

The cost falls on writes (one round trip and the listeners' reaction, about a millisecond, or up to a lease when
an instance vanishes without releasing its lease); reads of cached subjects cost no round trip at all.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine, event

logger = logging.getLogger("govsvc.coherence")

CHANNEL = "govsvc_cache"
# The tables whose changes the triggers announce (a write to one of them needs a barrier before it returns).
WATCHED_TABLES = frozenset(
    {
        "subjects",
        "subject_identifiers",
        "consent_state",
        "policy_state",
        "taxonomy_versions",
        "legal_holds",
        "crypto_state",
        "api_clients",
    }
)
_BARRIER = f"SELECT pg_notify('{CHANNEL}', 'b' || n), n FROM (SELECT nextval('cache_barrier_seq') AS n) s"  # noqa: S608
_WRITE = re.compile(r'^\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM|TRUNCATE(?:\s+TABLE)?)\s+"?(\w+)', re.IGNORECASE)

Invalidate = Callable[[frozenset[int] | None], None]  # the subjects' pks that changed; None: everything


@functools.lru_cache(maxsize=2048)
def writes_watched_table(statement: str) -> bool:
    """Whether this SQL statement changes a table that decisions read (by its first words)."""
    match = _WRITE.match(statement)
    return match is not None and match.group(1).lower() in WATCHED_TABLES


def parse(payload: str) -> tuple[str, frozenset[int] | None, int]:
    """``("subjects", pks, 0)``, ``("all", None, 0)`` or ``("barrier", None, n)``; anything else means all."""
    if payload.startswith("b") and payload[1:].isdigit():
        return "barrier", None, int(payload[1:])
    if payload.startswith("s"):
        try:
            return "subjects", frozenset(int(part) for part in payload[1:].split(",")), 0
        except ValueError:
            pass
    return "all", None, 0


class Coherence:
    """One instance's lease and listener, and the barrier its writers wait on; one per Database (PostgreSQL)."""

    def __init__(self, writer: Engine, *, lease_seconds: float = 3.0) -> None:
        self.writer = writer  # an AUTOCOMMIT engine: barriers and their waits
        self.lease_seconds = lease_seconds
        self.renew_seconds = lease_seconds / 6
        self.instance_id = ""  # set when this process starts its listener (a forked worker is another instance)
        self.generation = 0  # moves with every invalidation applied (see ``changed_since``)
        self._valid_until = 0.0  # time.monotonic() until which the caches may answer
        self._listeners: list[Invalidate] = []
        self._lock = threading.Lock()
        self._pending = threading.local()  # per thread: wrote a watched table since its last settle()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._stopping = threading.Event()
        self._conninfo = writer.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.acked_seq = 0

    # -- the instance's side: listening, renewing -----------------------------------------------------------------

    def subscribe(self, listener: Invalidate) -> None:
        """Call ``listener`` with each invalidation this instance applies (from the listener thread)."""
        self._listeners.append(listener)

    def serving(self) -> bool:
        """Whether caches may answer now (the lease is valid); starts the listener in this process if needed."""
        if self._pid != os.getpid():
            self._start()
        return time.monotonic() < self._valid_until

    def changed_since(self, generation: int) -> bool:
        """Whether any invalidation was applied (or the lease lapsed) since ``generation`` was read."""
        return self.generation != generation

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()  # a forked worker starts its own thread; the parent's is not inherited
            self.instance_id = f"{os.uname().nodename[:30]}:{self._pid}:{secrets.token_hex(4)}"
            self._valid_until = 0.0
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name="govsvc-coherence", daemon=True)
            self._thread.start()
            _running.add(self)

    def _connect(self) -> Any:
        """A connection of the listener's own (not from the pools: it is held for the life of the instance)."""
        return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                self._serve()
                backoff = 0.2
            except Exception as error:
                self._lapse()
                if self._stopping.is_set():
                    return
                logger.warning("cache coherence listener lost (%s); decisions read the database", type(error).__name__)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _serve(self) -> None:
        listen, lease = self._connect(), self._connect()
        try:
            listen.execute(f"LISTEN {CHANNEL}")
            # Everything committed before LISTEN is in the database, and the caches are empty: every barrier
            # handed out so far can be acknowledged.
            self._lapse()
            sent = time.monotonic()
            (self.acked_seq,) = lease.execute(
                "INSERT INTO cache_leases (instance_id, expires_at, acked_seq) "
                "VALUES (%s, now() + make_interval(secs => %s), "
                "(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM cache_barrier_seq)) "
                "ON CONFLICT (instance_id) DO UPDATE SET expires_at = excluded.expires_at, "
                "acked_seq = excluded.acked_seq RETURNING acked_seq",
                [self.instance_id, self.lease_seconds],
            ).fetchone()
            lease.execute(
                "DELETE FROM cache_leases WHERE expires_at < now() - interval '1 hour'"
            )  # instances long gone
            self._valid_until = sent + self.lease_seconds - self.renew_seconds
            renew_at = sent + self.renew_seconds
            while not self._stopping.is_set():
                barrier = 0
                wait = min(max(renew_at - time.monotonic(), 0.0), 0.1)  # 0.1: a stop() is noticed quickly
                for notify in listen.notifies(timeout=wait, stop_after=1):
                    kind, pks, number = parse(notify.payload)
                    if kind == "barrier":
                        barrier = max(barrier, number)
                    else:
                        self._invalidate(pks)
                now = time.monotonic()
                if barrier or now >= renew_at:
                    lapsed = now >= self._valid_until
                    if lapsed:  # a writer may have stopped waiting for us: nothing cached can be trusted
                        self._invalidate(None)
                    self._renew(lease, max(barrier, self.acked_seq))
                    renew_at = time.monotonic() + self.renew_seconds if now >= renew_at else renew_at
        finally:
            for connection in (listen, lease):
                with contextlib.suppress(Exception):  # closing a broken connection
                    connection.close()

    def _renew(self, lease: Any, acked: int) -> None:
        sent = time.monotonic()
        updated = lease.execute(
            "UPDATE cache_leases SET expires_at = now() + make_interval(secs => %s), "
            "acked_seq = greatest(acked_seq, %s) WHERE instance_id = %s",
            [self.lease_seconds, acked, self.instance_id],
        ).rowcount
        if updated != 1:
            raise LookupError("this instance's cache lease was removed")
        self.acked_seq = acked
        self._valid_until = sent + self.lease_seconds - self.renew_seconds

    def _invalidate(self, pks: frozenset[int] | None) -> None:
        self.generation += 1  # first: a cache fill read before this point is refused from now on
        for listener in self._listeners:
            listener(pks)

    def _lapse(self) -> None:
        self._valid_until = 0.0
        self._invalidate(None)

    def stop(self) -> None:
        """Stop answering from caches, stop the listener and give up the lease (others stop waiting for it)."""
        self._valid_until = 0.0
        self._stopping.set()
        thread = self._thread
        if thread is not None and self._pid == os.getpid():
            thread.join(timeout=self.lease_seconds)
            try:
                with self.writer.connect() as connection:
                    connection.exec_driver_sql(
                        "DELETE FROM cache_leases WHERE instance_id = %(id)s", {"id": self.instance_id}
                    )
            except Exception:
                logger.info("cache lease not released; it expires in %s s", self.lease_seconds)
        self._thread = None
        self._pid = 0
        _running.discard(self)

    # -- the writer's side ----------------------------------------------------------------------------------------

    def watch(self, engine: Engine) -> None:
        """Note, per thread, every statement through ``engine`` that changes a watched table."""
        event.listen(engine, "before_cursor_execute", self._before_execute)

    def _before_execute(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if writes_watched_table(statement):
            self._pending.dirty = True

    def wrote(self) -> None:
        """Note a write made outside SQLAlchemy's statements (raw DBAPI cursors) to a watched table."""
        self._pending.dirty = True

    def discard(self) -> None:
        """Forget this thread's writes (they were rolled back)."""
        self._pending.dirty = False

    def settle(self) -> None:
        """After this thread committed changes to watched tables: wait until no instance can answer from what they
        replaced. A no-op when the thread wrote none since its last call."""
        if not getattr(self._pending, "dirty", False):
            return
        self._pending.dirty = False
        try:
            self._barrier()
        except Exception as error:
            logger.warning("write barrier failed (%s): instances apply the change as notified", type(error).__name__)

    def _barrier(self) -> None:
        deadline = time.monotonic() + 2 * self.lease_seconds
        with self.writer.connect() as connection:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(_BARRIER)
                number = cursor.fetchone()[1]
                pause = 0.0005
                while True:
                    cursor.execute(
                        "SELECT count(*) FROM cache_leases WHERE expires_at > now() AND acked_seq < %s", [number]
                    )
                    if cursor.fetchone()[0] == 0:
                        return
                    if time.monotonic() > deadline:  # cannot happen unless clocks jump: leases expire before
                        logger.warning("write barrier %s not acknowledged in time", number)
                        return
                    time.sleep(pause)
                    pause = min(pause * 2, 0.01)
            finally:
                cursor.close()


_running: weakref.WeakSet[Coherence] = weakref.WeakSet()


@atexit.register
def _release_leases() -> None:
    """A process that exits gives up its leases, so writers do not wait for them to expire."""
    for coherence in list(_running):
        coherence.stop()
