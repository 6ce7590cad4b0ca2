"""The sequencer: the single writer that places recorded events in the Merkle tree and signs checkpoints.

Requests only INSERT their events (no hash chain to wait on). The sequencer, in batches, gives each pending
event the next sequence number, stores its canonical JSON and leaf hash, stores every complete subtree hash
(so proofs are a handful of primary-key reads), and signs a C2SP checkpoint at most every few seconds while
events arrive. Several processes may run a sequencer: a PostgreSQL advisory lock (SQLite: the write lock) lets
one integrate at a time, and each re-reads the tree size inside its transaction, so none double-counts.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque, namedtuple
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import BigInteger, Integer, Select, and_, bindparam, exists, func, insert, or_, select
from sqlalchemy.orm import Session

from audit.merkle import EMPTY_ROOT, leaf_hash, node_hash
from audit.note import sign_checkpoint
from govsvc.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf, AuditTreeNode
from govsvc.audit.service import CLOCK_MARGIN_SECONDS, canonical_event_json
from govsvc.audit.signing import SignerCache
from govsvc.core.db import Database, utcnow

logger = logging.getLogger("govsvc.audit.sequencer")
ADVISORY_LOCK_KEY = 0x676F7673  # "govs"
# Event ids are allocated at INSERT but become visible at COMMIT, so on PostgreSQL an event can appear after
# higher ids were placed ("straggler"). New events are found above the highest placed id; stragglers by a sweep
# of the ids below it, every few seconds, down to the highest placed id of STRAGGLER_WINDOW_SECONDS ago (a
# transaction open longer than that is beyond any request timeout). The first sweep after start covers all ids;
# once it has read them all, the floor comes from the log itself (``_startup_floor``), so that the sweeps of a
# process's first minute do not read the whole table again (a third of a second per sweep at 1,000,000 events).
STRAGGLER_WINDOW_SECONDS = 60.0
SWEEP_EVERY_SECONDS = 5.0
# A sequencer that finds events placed by another process since it last looked leaves the work to that one and
# looks again after this long (jittered): one process sequences, instead of each process in turn paying a
# batch's fixed cost (a transaction, the lock, re-reading the frontier the other moved). If the other stops, the
# tree stops growing while events wait, and the first to look takes over.
FOLLOW_SECONDS = 1.0


# the newest event id, and the newest one placed in the tree (both from an index)
_NEWEST_IDS = select(
    select(func.max(AuditEvent.id)).scalar_subquery(), select(func.max(AuditLeaf.event_pk)).scalar_subquery()
)


def _not_placed(event_id: Any, low: Any, high: Any = None) -> Any:
    """No leaf places the event, the leaves searched only in the id range (low, high]: the planner then reads that
    range of the leaves' unique index. Unbounded (``event_pk = id`` alone), it chose a hash anti-join over every
    leaf, or a sequential scan of every event, and a batch's read grew with the log (20 ms at 40,000 events)."""
    bounds = [AuditLeaf.event_pk > low] + ([AuditLeaf.event_pk <= high] if high is not None else [])
    return ~exists().where(AuditLeaf.event_pk == event_id, *bounds)


_EVENTS = AuditEvent.__table__
_HIGHEST_PLACED = bindparam("highest_placed", type_=BigInteger)
_FLOOR = bindparam("floor", type_=BigInteger)
_LIMIT = bindparam("limit", type_=Integer)


def _fresh_events_statement() -> Select[Any]:
    first = select(_EVENTS).where(_EVENTS.c.id > _HIGHEST_PLACED).order_by(_EVENTS.c.id).limit(_LIMIT).subquery()
    return select(first).where(_not_placed(first.c.id, _HIGHEST_PLACED)).order_by(first.c.id)


# a pending event's columns, in the order both selects below return them (the table's)
PendingEvent = namedtuple("PendingEvent", [column.key for column in _EVENTS.columns])  # type: ignore[misc]
# Built once: constructing these selects (a subquery's column collection) cost a batch more CPU than running them.
_FRESH_EVENTS = _fresh_events_statement()
_STRAGGLER_EVENTS = (
    select(_EVENTS)
    .where(_EVENTS.c.id > _FLOOR, _EVENTS.c.id <= _HIGHEST_PLACED, _not_placed(_EVENTS.c.id, _FLOOR, _HIGHEST_PLACED))
    .order_by(_EVENTS.c.id)
    .limit(_LIMIT)
)
_TAKE_LOCK = select(func.pg_try_advisory_xact_lock(ADVISORY_LOCK_KEY))
# the tree's size (highest sequence number + 1) and the size its latest checkpoint signed, in one round trip
_SIZES = select(
    select(func.max(AuditLeaf.seq)).scalar_subquery(), select(func.max(AuditCheckpoint.tree_size)).scalar_subquery()
)
_HIGHEST_PLACED_ID = select(func.max(AuditLeaf.event_pk))
# A batch's leaves and nodes in one statement, each table's rows as one JSON array (hashes in hex): a round trip
# instead of a COPY per table, and little client CPU (psycopg dumps Python lists as arrays element by element).
_PG_INSERT_PLACED = (
    "WITH leaves AS (INSERT INTO audit_leaves (seq, event_pk, event_json, leaf_hash) "
    "SELECT r.seq, r.event_pk, r.event_json, decode(r.leaf_hash, 'hex') FROM json_to_recordset(%s::json) "
    "AS r(seq bigint, event_pk bigint, event_json text, leaf_hash text)) "
    "INSERT INTO audit_tree_nodes (level, node_index, hash) "
    "SELECT r.level, r.node_index, decode(r.hash, 'hex') FROM json_to_recordset(%s::json) "
    "AS r(level smallint, node_index bigint, hash text)"
)


def fresh_events(highest_placed: int, limit: int) -> Select[Any]:
    """The first ``limit`` events above the highest placed id (none of which can be placed yet: the NOT EXISTS
    only guards that), oldest first: the events are taken by the primary key before the check, so the read is
    ``limit`` rows however long the log or the backlog."""
    return _FRESH_EVENTS.params(highest_placed=highest_placed, limit=limit)


def straggler_events(floor: int, highest_placed: int, limit: int) -> Select[Any]:
    """Events in (floor, highest placed] that no leaf places yet, oldest first: a read of that id range of the
    events and of the leaves, not of either table."""
    return _STRAGGLER_EVENTS.params(floor=floor, highest_placed=highest_placed, limit=limit)


@dataclass(frozen=True)
class Node:
    """A complete aligned subtree: 2**level leaves starting at index * 2**level."""

    level: int
    index: int
    hash: bytes


def frontier_nodes(size: int) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees that make up a tree of ``size`` leaves, left to right."""
    nodes = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            nodes.append((level, start >> level))
            start += 1 << level
    return nodes


def fetch_nodes(session: Session, wanted: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """Hashes of the given (level, index) nodes: level 0 from the leaves, higher levels from the node table."""
    found: dict[tuple[int, int], bytes] = {}
    leaves = [index for level, index in wanted if level == 0]
    inner = [(level, index) for level, index in wanted if level > 0]
    for offset in range(0, len(leaves), 500):
        chunk = leaves[offset : offset + 500]
        for seq, digest in session.execute(
            select(AuditLeaf.seq, AuditLeaf.leaf_hash).where(AuditLeaf.seq.in_(chunk))
        ).all():
            found[(0, seq)] = bytes(digest)
    for offset in range(0, len(inner), 500):
        by_level: dict[int, list[int]] = {}
        for level, index in inner[offset : offset + 500]:
            by_level.setdefault(level, []).append(index)
        params: dict[str, object] = {}
        for number, (level, indexes) in enumerate(by_level.items()):
            params[f"level{number}"], params[f"indexes{number}"] = level, indexes
        rows = session.execute(_nodes_query(len(by_level)), params).all()
        for level, index, digest in rows:
            found[(level, index)] = bytes(digest)
    missing = [node for node in wanted if node not in found]
    if missing:
        raise RuntimeError(f"audit tree nodes missing from storage: {missing[:5]}")
    return found


@lru_cache(maxsize=128)
def _nodes_query(levels: int) -> Select[tuple[int, int, bytes]]:
    """Nodes of ``levels`` levels: one "level = ? AND node_index IN (...)" per level, OR-ed.

    Both databases answer it from the primary key (SQLite scans the whole table for a row-value
    ``(level, node_index) IN (VALUES ...)``), and the statement is built once per number of levels.
    """
    return select(AuditTreeNode.level, AuditTreeNode.node_index, AuditTreeNode.hash).where(
        or_(
            *(
                and_(
                    AuditTreeNode.level == bindparam(f"level{number}"),
                    AuditTreeNode.node_index.in_(bindparam(f"indexes{number}", expanding=True)),
                )
                for number in range(levels)
            )
        )
    )


def tree_size(session: Session) -> int:
    """Leaves in the tree (sequence numbers are 0 .. size-1)."""
    highest = session.scalar(select(func.max(AuditLeaf.seq)))
    return 0 if highest is None else int(highest) + 1


def root_of(frontier: list[Node]) -> bytes:
    """The RFC 6962 root of a tree given its frontier (the right-to-left fold of its perfect subtrees)."""
    if not frontier:
        return EMPTY_ROOT
    root = frontier[-1].hash
    for node in reversed(frontier[:-1]):
        root = node_hash(node.hash, root)
    return root


class Sequencer:
    """Integrates pending events; ``run_once`` is one batch, ``start`` runs it in a daemon thread."""

    def __init__(
        self,
        database: Database,
        secret_key: str,
        origin: str,
        *,
        checkpoint_seconds: float = 2.0,
        batch_size: int = 5000,
        interval_seconds: float = 0.2,
    ) -> None:
        self.database = database
        self.origin = origin
        self.checkpoint_seconds = checkpoint_seconds
        self.batch_size = batch_size
        self.interval_seconds = interval_seconds
        self.signers = SignerCache(secret_key)
        self._size = -1
        self._frontier: list[Node] = []
        self._last_checkpoint = 0.0
        self._watermarks: deque[tuple[float, int]] = deque()
        self._floor = 0
        self._startup_floor_found = False  # set once a complete sweep from id 0 has given the floor a value
        self._next_floor: int | None = None  # found in the transaction under way: adopted once it commits
        self._highest_pk = 0
        self._last_sweep = float("-inf")
        self._signed = True  # the tree as this sequencer last left it is covered by a checkpoint
        self._last_placed = 0  # events its last batch placed: more are likely pending, so no read first
        self._seen_placed: int | None = None  # the highest placed event id as of this sequencer's last look
        self.following = False  # its last look found another sequencer at work
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- integration -------------------------------------------------------------------------------------------

    def _take_lock(self, session: Session) -> bool:
        if self.database.is_sqlite:
            return True  # the write transaction (BEGIN IMMEDIATE) already excludes other writers
        return bool(session.execute(_TAKE_LOCK).scalar())

    def _sync_frontier(self, session: Session, size: int) -> None:
        if size == self._size:
            return  # nobody else integrated since our last batch
        wanted = frontier_nodes(size)
        hashes = fetch_nodes(session, wanted)
        self._frontier = [Node(level, index, hashes[(level, index)]) for level, index in wanted]
        self._size = size
        self._highest_pk = int(session.scalar(_HIGHEST_PLACED_ID) or 0)

    def _pending(self, session: Session, *, sweep: bool) -> list[PendingEvent]:
        """Pending events as named tuples (the columns ``canonical_event_json`` reads; no ORM instances to build,
        and reading a field of a named tuple costs a tenth of reading it from a result row)."""
        events: list[PendingEvent] = []
        now = time.monotonic()
        if sweep or now - self._last_sweep >= SWEEP_EVERY_SECONDS:
            self._last_sweep = now
            window = {"floor": self._floor, "highest_placed": self._highest_pk, "limit": self.batch_size}
            events = [PendingEvent._make(row) for row in session.execute(_STRAGGLER_EVENTS, window)]
            if not self._startup_floor_found and len(events) < self.batch_size:  # every id up to the highest read
                self._next_floor = self._startup_floor(session)
        room = self.batch_size - len(events)
        if room > 0:
            window = {"highest_placed": self._highest_pk, "limit": room}
            events += [PendingEvent._make(row) for row in session.execute(_FRESH_EVENTS, window)]
        return events

    def _startup_floor(self, session: Session) -> int:
        """A floor for the sweeps after the first: the id of the last event placed before the latest checkpoint
        signed more than STRAGGLER_WINDOW_SECONDS (and a clock margin) ago, or 0. Every id up to it was allocated
        before that event committed, by a transaction that has ended since: the complete sweep that precedes this
        call found whichever of them were committed and left unplaced (by a sequencer that died, say)."""
        cutoff = utcnow() - timedelta(seconds=STRAGGLER_WINDOW_SECONDS + CLOCK_MARGIN_SECONDS)
        size = session.scalar(
            select(AuditCheckpoint.tree_size)
            .where(AuditCheckpoint.created_at <= cutoff)
            .order_by(AuditCheckpoint.created_at.desc())
            .limit(1)
        )
        if not size:
            return 0
        return int(session.scalar(select(AuditLeaf.event_pk).where(AuditLeaf.seq == size - 1)) or 0)

    def _advance_floor(self) -> None:
        if self._next_floor is not None:
            self._floor = max(self._floor, self._next_floor)
            self._startup_floor_found, self._next_floor = True, None
        now = time.monotonic()
        self._watermarks.append((now, self._highest_pk))
        while self._watermarks and now - self._watermarks[0][0] > STRAGGLER_WINDOW_SECONDS:
            self._floor = max(self._floor, self._watermarks.popleft()[1])

    def _nothing_to_do(self) -> bool:
        """True when this sequencer should not run a batch now: another one placed events since it last looked
        (``following``; that one also sweeps), or a batch would place nothing and sign nothing (no event above the
        highest placed one, no sweep due, the tree as this sequencer left it signed). One read on a plain
        connection instead of the batch's write transaction (advisory lock and five queries), which an idle
        sequencer would otherwise pay five times a second in every process. Not read after a batch that placed
        events (a busy log)."""
        if self._last_placed or not self._signed:
            return False
        with self.database.engine.connect() as connection:
            newest_event, newest_placed = connection.execute(_NEWEST_IDS).one()
        seen, self._seen_placed = self._seen_placed, newest_placed
        self.following = seen is not None and newest_placed is not None and newest_placed > seen
        if self.following:
            return True
        if time.monotonic() - self._last_sweep >= SWEEP_EVERY_SECONDS:
            return False
        return newest_event is None or (newest_placed is not None and newest_event <= newest_placed)

    def run_once(self, *, force_checkpoint: bool = False, sweep: bool = False) -> int:
        """Integrate one batch of pending events; returns how many were placed.

        ``sweep`` also looks for stragglers now (otherwise every few seconds).
        """
        if not (force_checkpoint or sweep) and self._nothing_to_do():
            return 0
        with self._lock, self.database.transaction(write=True) as session:
            self._next_floor = None  # one found by a transaction that failed: its sweep placed nothing
            if not self._take_lock(session):
                self.following = True  # another sequencer holds the lock: it is at work
                return 0
            highest_seq, signed_size = session.execute(_SIZES).one()
            size = 0 if highest_seq is None else int(highest_seq) + 1
            self._sync_frontier(session, size)
            events = self._pending(session, sweep=sweep)
            leaves, nodes = [], []
            frontier = list(self._frontier)
            for offset, event in enumerate(events):
                seq = size + offset
                body = canonical_event_json(event, seq)
                digest = leaf_hash(body)
                leaves.append({"seq": seq, "event_pk": event.id, "event_json": body.decode(), "leaf_hash": digest})
                frontier.append(Node(0, seq, digest))
                while len(frontier) >= 2 and frontier[-1].level == frontier[-2].level:
                    right, left = frontier.pop(), frontier.pop()
                    merged = Node(left.level + 1, left.index >> 1, node_hash(left.hash, right.hash))
                    nodes.append({"level": merged.level, "node_index": merged.index, "hash": merged.hash})
                    frontier.append(merged)
                self._highest_pk = max(self._highest_pk, event.id)
            self._insert(session, leaves, nodes)
            new_size = size + len(leaves)
            signed = self._maybe_checkpoint(session, new_size, frontier, signed_size, force=force_checkpoint)
        # committed: adopt the new state
        self._frontier, self._size, self._signed, self._last_placed = frontier, new_size, signed, len(leaves)
        self._seen_placed, self.following = self._highest_pk, False
        self._advance_floor()
        return len(leaves)

    def _insert(self, session: Session, leaves: list[dict[str, Any]], nodes: list[dict[str, Any]]) -> None:
        """INSERT the batch's leaves and nodes; on PostgreSQL in one statement, each table's rows as one JSON array
        (an executemany there sends and processes a statement a row; a COPY per table cost two round trips and
        twice the client CPU)."""
        if not leaves:
            return
        if self.database.engine.dialect.name != "postgresql":
            session.execute(insert(AuditLeaf.__table__), leaves)
            if nodes:
                session.execute(insert(AuditTreeNode.__table__), nodes)
            return
        hex_leaves = [{**leaf, "leaf_hash": leaf["leaf_hash"].hex()} for leaf in leaves]
        hex_nodes = [{**node, "hash": node["hash"].hex()} for node in nodes]
        cursor = session.connection().connection.driver_connection.cursor()
        with cursor:
            cursor.execute(_PG_INSERT_PLACED, [orjson.dumps(hex_leaves).decode(), orjson.dumps(hex_nodes).decode()])

    def _maybe_checkpoint(
        self, session: Session, size: int, frontier: list[Node], latest: int | None, *, force: bool
    ) -> bool:
        """Sign a checkpoint of the tree at ``size`` if none covers it (``latest``: the size the latest checkpoint
        signed, read under the lock) and one is due (or forced); returns whether the tree at ``size`` is then
        covered by a checkpoint."""
        if size == 0:
            return True
        if latest is not None and latest >= size:
            return True
        due = time.monotonic() - self._last_checkpoint >= self.checkpoint_seconds
        if not (force or due):
            return False
        root = root_of(frontier)
        signer = self.signers.signer(session)
        note = sign_checkpoint(self.origin, size, root, signer.skey)
        session.add(
            AuditCheckpoint(tree_size=size, root_hash=root, note=note, key_name=signer.name, created_at=utcnow())
        )
        self._last_checkpoint = time.monotonic()
        return True

    def drain(self, *, checkpoint: bool = True) -> int:
        """Integrate everything pending now (and sign a checkpoint of the result); for tests, CLI and shutdown."""
        total = 0
        while True:
            placed = self.run_once(force_checkpoint=checkpoint, sweep=total == 0)
            total += placed
            if placed < self.batch_size:
                return total

    # -- background thread -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="govsvc-audit-sequencer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                placed = self.run_once()
                failures = 0
            except Exception:  # keep sequencing after a transient failure (database restart...)
                failures += 1
                if failures == 1 or failures % 20 == 0:  # log the first failure, then now and then, not 5 a second
                    logger.exception("audit sequencer batch failed (%d in a row)", failures)
                placed = 0
            if placed < self.batch_size:
                self._stop.wait(self._delay(failures))

    def _delay(self, failures: int) -> float:
        """Seconds until the next batch: backing off while failing (0.2 s, 0.4 s ... up to 5 s), longer while
        another sequencer is at work (jittered, so that two followers do not look, and take over, in step)."""
        if failures:
            return min(self.interval_seconds * 2 ** min(failures, 5), 5.0)
        if self.following:
            return FOLLOW_SECONDS * random.uniform(0.75, 1.25)
        return self.interval_seconds
