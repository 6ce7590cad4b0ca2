"""The one audit API of the service: ``record()`` an event, and query what was recorded.

``record`` adds the event to the caller's transaction, so an event exists exactly when the change it describes
was committed, and an acknowledged request's events are durable. The sequencer (``govsvc.audit.sequencer``)
later gives each event its sequence number and places it in the Merkle tree.

Events never hold raw personal data: subjects are pseudonymous references and IP addresses are keyed hashes.
``record`` refuses any field that looks like an e-mail address, a phone number, an identity or card number.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, and_, event, insert, inspect, select
from sqlalchemy.orm import Session

from audit.canonical import check_canonical_value
from govsvc.audit.models import AuditCheckpoint, AuditEvent, AuditLeaf
from govsvc.core.db import AUTOCOMMIT_SESSION, Database, LazySession, utcnow
from govsvc.core.errors import NotFoundError
from govsvc.core.pii_guard import pii_kind

OUTCOMES = frozenset({"success", "failure", "denied", "allow", "deny", "error"})
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_TOKEN_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,79}$")


class AuditPIIError(ValueError):
    """A field of an audit event looks like raw personal data; pseudonymise it first."""


@dataclass(frozen=True)
class AuditContext:
    """Who is acting, set by the HTTP layer (or a job) for the events recorded while it acts."""

    principal_id: str | None = None
    role: str | None = None
    client_id: str | None = None
    ip_hash: str | None = None
    request_id: str | None = None


SYSTEM_CONTEXT = AuditContext(principal_id="system", role="system")
_current_context: contextvars.ContextVar[AuditContext] = contextvars.ContextVar(
    "govsvc_audit_context", default=SYSTEM_CONTEXT
)


def set_context(context: AuditContext) -> contextvars.Token[AuditContext]:
    """Make ``context`` the actor of events recorded in this thread/task until reset."""
    return _current_context.set(context)


def reset_context(token: contextvars.Token[AuditContext]) -> None:
    _current_context.reset(token)


def current_context() -> AuditContext:
    return _current_context.get()


def hash_ip(ip_address: str | None, key: bytes) -> str | None:
    """A keyed, non-reversible reference to an IP address (HMAC-SHA256, 128 bits)."""
    if not ip_address:
        return None
    return hmac.new(key, ip_address.encode(), hashlib.sha256).hexdigest()[:32]


def ip_hash_key(secret_key: str) -> bytes:
    """The IP-hashing key, derived from the service secret (never the secret itself)."""
    return hmac.new(secret_key.encode(), b"govsvc audit ip hash v1", hashlib.sha256).digest()


def _check_no_pii(name: str, value: str) -> None:
    kind = pii_kind(value)
    if kind is not None:
        raise AuditPIIError(f"audit field {name!r} looks like a raw {kind}; record a pseudonymous reference")


def _check_details(value: Any, path: str) -> None:
    if isinstance(value, str):
        _check_no_pii(path, value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"audit details keys must be strings ({path})")
            _check_no_pii(f"{path}.{key}", key)
            _check_details(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_details(item, f"{path}[{index}]")
    elif isinstance(value, float):
        raise ValueError(f"audit details hold no floats ({path}); use integers or strings")
    elif value is not None and not isinstance(value, bool | int):
        raise ValueError(f"unsupported audit details value at {path}: {type(value).__name__}")


def record(
    session: Session,
    action: str,
    *,
    outcome: str = "success",
    subject_ref: str | None = None,
    object_ref: str | None = None,
    purpose: str | None = None,
    data_categories: Sequence[str] = (),
    reason_code: str | None = None,
    details: Mapping[str, Any] | None = None,
    context: AuditContext | None = None,
    time: datetime | None = None,
    keep_on_failure: bool = False,
) -> str:
    """Record an audit event in the caller's transaction; returns its event id.

    ``action`` is a dotted name (``consent.withdrawn``); ``subject_ref`` a pseudonymous subject id.
    ``keep_on_failure``: the event must exist even when the request that recorded it fails (a refusal, such as a
    ``policy.deny``): if the request's transaction is rolled back, the request layer writes it in a transaction
    of its own (``write_kept_events``).
    Raises ValueError (AuditPIIError) for malformed events or anything resembling raw personal data.
    """
    context = context or current_context()
    if not _ACTION_RE.match(action) or len(action) > 80:
        raise ValueError(f"audit action must be a dotted lower-case name, not {action!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome must be one of {sorted(OUTCOMES)}")
    for name, value in (("purpose", purpose), ("reason_code", reason_code)):
        if value is not None and not _TOKEN_RE.match(value):
            raise ValueError(f"audit {name} must be a short lower-case token, not {value!r}")
    categories = list(data_categories)
    for category in categories:
        if not _TOKEN_RE.match(category):
            raise ValueError(f"audit data category must be a lower-case token, not {category!r}")
    for name, value in (
        ("subject_ref", subject_ref),
        ("object_ref", object_ref),
        ("actor.principal", context.principal_id),
        ("request_id", context.request_id),
    ):
        if value is not None:
            _check_no_pii(name, value)
    if subject_ref is not None and len(subject_ref) > 128:
        raise ValueError("audit subject_ref is longer than 128 characters")
    if object_ref is not None and len(object_ref) > 200:
        raise ValueError("audit object_ref is longer than 200 characters")
    if details:
        _check_details(details, "details")
    event_id = random_id()
    row = {
        "event_id": event_id,
        "time": time or utcnow(),
        "actor_principal": context.principal_id,
        "actor_role": context.role,
        "actor_client": context.client_id,
        "actor_ip_hash": context.ip_hash,
        "action": action,
        "subject_ref": subject_ref,
        "object_ref": object_ref,
        "purpose": purpose,
        "data_categories": _categories_json(tuple(categories)) if categories else None,
        "outcome": outcome,
        "reason_code": reason_code,
        "request_id": context.request_id,
        "details": _details_json(details) if details else None,
    }
    if type(session) is LazySession and session.audit_rows is not None:
        session.audit_rows.append(row)  # the view writes them itself (write_rows), before it answers
        return event_id
    _pending_rows(session).append(row)
    if keep_on_failure:
        session.info.setdefault(_KEPT_EVENTS, []).append(row)
    return event_id


def random_id() -> str:
    """A random (version 4) UUID as 32 hex digits, as ``uuid.uuid4().hex`` but without building a UUID object.

    The bytes come from ``os.urandom`` in blocks of 256 ids per thread (one system call per block instead of one
    per id: decisions draw one id each)."""
    pool = _random_pool.__dict__
    block, offset = pool.get("block", b""), pool.get("offset", 0)
    if offset >= len(block):
        block, offset = os.urandom(16 * 256), 0
        pool["block"] = block
    pool["offset"] = offset + 16
    raw = bytearray(block[offset : offset + 16])
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


_random_pool = threading.local()
# a forked child must not hand out the ids its parent's thread had drawn in advance
os.register_at_fork(after_in_child=lambda: _random_pool.__dict__.clear())


@functools.lru_cache(maxsize=1024)
def _categories_json(categories: tuple[str, ...]) -> str:
    return json.dumps(list(categories))


def _details_json(details: Mapping[str, Any]) -> str:
    """Sorted keys, compact, ASCII only (non-ASCII escaped): what ``json.dumps(sort_keys=True, separators=(",",
    ":"))`` writes; orjson writes the same bytes when the text is ASCII, and is several times faster."""
    encoded = orjson.dumps(details, option=orjson.OPT_SORT_KEYS)
    if encoded.isascii():
        return encoded.decode()
    return json.dumps(details, sort_keys=True, separators=(",", ":"))


_KEPT_EVENTS = "govsvc.audit.kept_on_failure"


def discard_kept_events(session: Session) -> None:
    """The request committed: its kept events are in the log with the rest."""
    session.info.pop(_KEPT_EVENTS, None)


def write_kept_events(session: Session, database: Database) -> int:
    """After ``session``'s transaction was rolled back (or never committed), write the events recorded with
    ``keep_on_failure`` in a transaction of their own; returns how many. Events an autocommit session already
    wrote are not written twice."""
    rows = session.info.pop(_KEPT_EVENTS, None)
    if not rows:
        return 0
    with database.transaction() as own:
        own.execute(insert(AuditEvent.__table__), rows)
    return len(rows)


# Events are written at the session's next flush (autoflush before a query, an explicit flush, the commit), as
# they would be with session.add(AuditEvent(...)), but as one executemany INSERT without RETURNING: nothing needs
# their primary keys, and the ORM's per-object work and batched INSERT ... RETURNING cost several times more.
# One pending AuditEvent without attributes marks the session dirty (so that flushes happen) and ties the rows
# to the transaction or savepoint they were recorded in: when that is rolled back, the ORM expunges the marker,
# and its rows are dropped with it. The marker itself is never inserted.
_PENDING_EVENTS = "govsvc.audit.pending_events"


def _pending_rows(session: Session) -> list[dict[str, Any]]:
    pending = session.info.get(_PENDING_EVENTS)
    if pending is None or not inspect(pending[0]).pending:  # none yet, or rolled back with their transaction
        marker = AuditEvent()
        session.add(marker)
        pending = session.info[_PENDING_EVENTS] = (marker, [])
    return pending[1]


def write_pending(session: Session) -> None:
    """Write the events recorded so far in ``session`` now, as one INSERT, rather than at its next flush: for a hot
    view on an autocommit session (decisions), whose response then needs no ORM flush or commit at all."""
    if session.info.get(_PENDING_EVENTS) is not None:
        _insert_pending_events(session, None, None)


def write_rows(database: Database, rows: list[dict[str, Any]], session: Session | None = None) -> None:
    """Write the events a hot view collected outside its session (``LazySession(direct_audit=True)``), now, as one
    INSERT that commits by itself: on the connection of the view's session if it opened an autocommit one, else
    as a prepared statement on one of the database's libpq connections (``Database.direct``). No ORM session is
    involved (a decision answered from the cache opens none), and the events are on record whatever the request
    does next. PostgreSQL only. Raises ``psycopg.OperationalError`` if the connection was lost (the events were
    then not written: the view must not answer as if they were)."""
    if not rows:
        return
    if session is not None and session.info.get(AUTOCOMMIT_SESSION):
        _insert_rows_pg(session.connection().connection, rows)
        return
    if database.direct is None:
        raise RuntimeError("write_rows needs PostgreSQL; record in the session instead")
    database.direct.execute(_PG_INSERT_NAME, _PG_INSERT_PREPARED, [orjson.dumps(rows)])


def _insert_rows_pg(dbapi_connection: Any, rows: list[dict[str, Any]]) -> None:
    """One statement, one round trip, whatever the number of events: the rows as one JSON array."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_PG_INSERT, [orjson.dumps(rows).decode()])
    finally:
        cursor.close()


@event.listens_for(Session, "before_flush")
def _insert_pending_events(session: Session, _flush_context: Any, objects: Sequence[Any] | None) -> None:
    pending = session.info.get(_PENDING_EVENTS)
    if pending is None:
        return
    marker, rows = pending
    if objects is not None and not any(obj is marker for obj in objects):
        return  # a flush of other objects only
    del session.info[_PENDING_EVENTS]
    if not inspect(marker).pending:
        return  # rolled back (with its transaction or savepoint) or expunged before any flush
    session.expunge(marker)
    connection = session.connection()
    kept = session.info.get(_KEPT_EVENTS)
    if kept and session.info.get(AUTOCOMMIT_SESSION):  # committed by the INSERT itself: nothing left to keep
        written = {id(row) for row in rows}
        session.info[_KEPT_EVENTS] = [row for row in kept if id(row) not in written]
    if connection.dialect.name == "postgresql":  # the hot path: straight to the driver, no statement compilation
        _insert_rows_pg(connection.connection, rows)
    else:
        connection.execute(insert(AuditEvent.__table__), rows)


# The columns record() fills, in the order of the PostgreSQL statement (its datetimes are UTC-aware already).
_ROW_COLUMNS = (
    "event_id",
    "time",
    "actor_principal",
    "actor_role",
    "actor_client",
    "actor_ip_hash",
    "action",
    "subject_ref",
    "object_ref",
    "purpose",
    "data_categories",
    "outcome",
    "reason_code",
    "request_id",
    "details",
)
# Constant SQL (prepared by psycopg after a few uses): the rows arrive as one JSON array of objects, in order.
_PG_INSERT_TEMPLATE = (
    f"INSERT INTO audit_events ({', '.join(_ROW_COLUMNS)}) SELECT {', '.join(_ROW_COLUMNS)} "  # noqa: S608
    "FROM json_to_recordset({rows}::json) AS r("
    + ", ".join(f"{column} {'timestamptz' if column == 'time' else 'text'}" for column in _ROW_COLUMNS)
    + ")"
)
_PG_INSERT = _PG_INSERT_TEMPLATE.replace("{rows}", "%s")  # psycopg's placeholder
# the same statement, for DirectStatements (libpq's placeholder), prepared once per connection under this name
_PG_INSERT_PREPARED = _PG_INSERT_TEMPLATE.replace("{rows}", "$1").encode()
_PG_INSERT_NAME = b"govsvc_audit_insert"


def format_time(value: datetime) -> str:
    """UTC ISO 8601 with microseconds and ``Z``: the one textual form of audit times."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(row: AuditEvent, seq: int, *, loads: Callable[[str], Any] = json.loads) -> dict[str, Any]:
    """The event as committed to the tree (its leaf is SHA-256(0x00 || canonical JSON of this)); ``loads`` parses
    the stored categories and details."""
    return {
        "seq": seq,
        "event_id": row.event_id,
        "time": format_time(row.time),
        "actor": {
            "principal": row.actor_principal,
            "role": row.actor_role,
            "client": row.actor_client,
            "ip_hash": row.actor_ip_hash,
        },
        "action": row.action,
        "subject_ref": row.subject_ref,
        "object_ref": row.object_ref,
        "purpose": row.purpose,
        "data_categories": loads(row.data_categories) if row.data_categories else [],
        "outcome": row.outcome,
        "reason_code": row.reason_code,
        "request_id": row.request_id,
        "details": loads(row.details) if row.details else {},
    }


def canonical_event_json(row: AuditEvent, seq: int) -> bytes:
    """``canonical_json(canonical_event(row, seq))``, the same bytes, about three times faster: what the sequencer
    computes for every event. orjson with sorted keys writes exactly what ``canonical_json`` writes (UTF-8, no
    ASCII escaping, the same escapes) for the values ``canonical_json`` accepts; ``check_canonical_value`` is
    applied where other values could come from (the stored details and categories, the sequence number)."""
    event = canonical_event(row, seq, loads=orjson.loads)
    check_canonical_value([seq, event["data_categories"], event["details"]])
    try:
        return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as error:  # a string that is not valid Unicode, as canonical_json would say
        raise ValueError(f"string is not valid Unicode: {error}") from error


@dataclass
class EventFilter:
    """Criteria of an auditor's search; every given criterion must hold."""

    time_from: datetime | None = None
    time_to: datetime | None = None
    actor: str | None = None
    subject: str | None = None
    action: str | None = None  # exact, or a prefix ending in ".*" (consent.*)
    outcome: str | None = None
    seq_from: int | None = None
    seq_to: int | None = None

    @property
    def is_seq_range_only(self) -> bool:
        """True when nothing but a sequence range is asked (the export can then use a range proof)."""
        return not any((self.time_from, self.time_to, self.actor, self.subject, self.action, self.outcome))

    def as_dict(self) -> dict[str, Any]:
        values = {
            "time_from": format_time(self.time_from) if self.time_from else None,
            "time_to": format_time(self.time_to) if self.time_to else None,
            "actor": self.actor,
            "subject": self.subject,
            "action": self.action,
            "outcome": self.outcome,
            "seq_from": self.seq_from,
            "seq_to": self.seq_to,
        }
        return {key: value for key, value in values.items() if value is not None}


# Checkpoints carry the signing instance's clock and events the recording instance's: the two may differ by this.
CLOCK_MARGIN_SECONDS = 60.0


def seq_floor(session: Session, time_from: datetime | None) -> int:
    """The tree size of the newest checkpoint signed more than CLOCK_MARGIN_SECONDS before ``time_from``: every
    event below it was recorded, committed and placed before that checkpoint was signed, so none has a time at or
    after ``time_from``. A time-bounded search starts there, instead of reading the log from its first leaf (the
    planner walks the leaves in sequence order and cannot know that times rise with it). 0 when none is that old."""
    if time_from is None:
        return 0
    try:
        cutoff = time_from - timedelta(seconds=CLOCK_MARGIN_SECONDS)
    except OverflowError:  # within a minute of 0001-01-01: no checkpoint is older
        return 0
    size = session.scalar(
        select(AuditCheckpoint.tree_size)
        .where(AuditCheckpoint.created_at < cutoff)
        .order_by(AuditCheckpoint.created_at.desc())
        .limit(1)
    )
    return int(size or 0)


def _apply_filter(query: Select[Any], criteria: EventFilter) -> Select[Any]:
    conditions = []
    if criteria.time_from is not None:
        conditions.append(AuditEvent.time >= criteria.time_from)
    if criteria.time_to is not None:
        conditions.append(AuditEvent.time < criteria.time_to)
    if criteria.actor is not None:
        conditions.append(AuditEvent.actor_principal == criteria.actor)
    if criteria.subject is not None:
        conditions.append(AuditEvent.subject_ref == criteria.subject)
    if criteria.action is not None:
        if criteria.action.endswith(".*"):
            conditions.append(AuditEvent.action.startswith(criteria.action[:-1], autoescape=True))
        else:
            conditions.append(AuditEvent.action == criteria.action)
    if criteria.outcome is not None:
        conditions.append(AuditEvent.outcome == criteria.outcome)
    if criteria.seq_from is not None:
        conditions.append(AuditLeaf.seq >= criteria.seq_from)
    if criteria.seq_to is not None:
        conditions.append(AuditLeaf.seq < criteria.seq_to)
    return query.where(and_(*conditions)) if conditions else query


def search(
    session: Session, criteria: EventFilter, *, after_seq: int | None = None, limit: int = 100
) -> list[tuple[AuditLeaf, AuditEvent]]:
    """Sequenced events matching the criteria, in sequence order (``limit + 1`` rows at most)."""
    query = select(AuditLeaf, AuditEvent).join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
    query = _apply_filter(query, criteria)
    # a cursor continues after a page that already started at the floor: only a first page looks it up
    first = seq_floor(session, criteria.time_from) if after_seq is None else after_seq + 1
    if first:
        query = query.where(AuditLeaf.seq >= first)
    return list(session.execute(query.order_by(AuditLeaf.seq).limit(limit + 1)).all())


def iter_leaves(session: Session, criteria: EventFilter, *, chunk: int = 2000) -> Iterable[AuditLeaf]:
    """Every matching leaf in sequence order, fetched in chunks (bounded memory)."""
    floor = seq_floor(session, criteria.time_from)
    after: int | None = floor - 1 if floor else None
    while True:
        query = select(AuditLeaf).join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
        query = _apply_filter(query, criteria)
        if after is not None:
            query = query.where(AuditLeaf.seq > after)
        rows = list(session.scalars(query.order_by(AuditLeaf.seq).limit(chunk)))
        yield from rows
        if len(rows) < chunk:
            return
        after = rows[-1].seq
        session.expunge_all()


def latest_event(session: Session, action: str) -> AuditEvent | None:
    """The newest recorded event of an action (sequenced or not yet), e.g. the last ``audit.verified``."""
    return session.scalar(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id.desc()).limit(1))


def get_event(session: Session, seq: int) -> tuple[AuditLeaf, AuditEvent]:
    row = session.execute(
        select(AuditLeaf, AuditEvent).join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk).where(AuditLeaf.seq == seq)
    ).first()
    if row is None:
        raise NotFoundError(f"No audit event has sequence number {seq} (it may not be sequenced yet).")
    return row[0], row[1]
