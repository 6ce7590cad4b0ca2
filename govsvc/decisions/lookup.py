"""Loading what a decision needs about its subjects in one round trip: the subject row, every consent state,
and the policy and taxonomy versions in force.

On PostgreSQL an instance keeps what it read in a ``SubjectCache`` (``govsvc.decisions.cache``) that writes
invalidate on every instance before they return, and reads only what is not there.

This is the hottest query of the service, so it bypasses the ORM and SQLAlchemy's result machinery and runs on
the request's own DBAPI connection (psycopg prepares it after a few executions). Reading the consent states in
the same query as the subject is what makes a withdrawal effective for the very next decision on every instance.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from govsvc.decisions.cache import SubjectCache

CHUNK = 1000  # a whole batch in one round trip
# Every query returns at least one row (the head): the versions in force, and whether the caller's API key is
# still unrevoked, so that a decision needs no other round trip. Then one row per consent state of each subject.
# Last, the categories under an active category-wide legal hold (JSON lists joined by "|"; usually none) and the
# key epoch, which moves when any data key is destroyed (the engine then forgets the birth dates it decrypted).
_HEAD = """SELECT (SELECT version FROM policy_state WHERE id = 1), (SELECT max(version) FROM taxonomy_versions),
    (SELECT count(*) FROM api_clients WHERE client_id = {mark} AND revoked_at IS NULL), x.*,
    (SELECT {concat}(categories, '|') FROM legal_holds WHERE status = 'active' AND scope = 'category'),
    (SELECT epoch FROM crypto_state WHERE id = 1)
FROM (SELECT 1 AS one) head LEFT JOIN ({subjects}) x ON 1 = 1"""
_CONCAT = {"?": "group_concat", "%s": "string_agg"}  # SQLite, PostgreSQL
_COLUMNS = """s.pk, s.subject_id, s.jurisdictions, s.birth_date_enc, s.restricted, s.legal_hold,
    c.purpose_key, c.scope, c.status, c.purpose_version, c.consent_type, c.actor, c.source, c.valid_until"""
# Constant SQL: only the number of placeholders varies at run time, never a value.
_BY_SUBJECT_ID = f"""SELECT {_COLUMNS}, s.subject_id AS key_subject_id
FROM subjects s LEFT JOIN consent_state c ON c.subject_pk = s.pk
WHERE s.subject_id IN ({{marks}})"""  # noqa: S608
_BY_IDENTIFIER = f"""SELECT {_COLUMNS}, i.kind, i.system, i.blind_index
FROM subject_identifiers i JOIN subjects s ON s.pk = i.subject_pk LEFT JOIN consent_state c ON c.subject_pk = s.pk
WHERE i.blind_index IN ({{marks}})"""  # noqa: S608
_NOTHING = "SELECT 1 AS empty_row WHERE 1 = 0"
_KEY_AT = 17  # the lookup key's columns start here


class ConsentView(NamedTuple):
    """One consent state as a decision reads it (``SubjectView.consent``)."""

    status: str
    purpose_version: int
    consent_type: str | None
    actor: str
    source: str
    valid_until: datetime | None


# A consent state as a SubjectView keeps it: a plain tuple in ConsentView's field order, so that the decision cache
# can keep a subject's states as tuples the garbage collector does not track (see govsvc.decisions.cache.Stored).
StoredConsent = tuple[str, int, "str | None", str, str, "datetime | None"]


@dataclass(slots=True)
class SubjectView:
    """A subject as a decision sees it (slots: made for every subject a decision reads, from the database or the
    decision cache)."""

    pk: int
    subject_id: str
    jurisdictions: tuple[str, ...]
    birth_date_enc: bytes | None
    restricted: bool
    legal_hold: bool
    states: dict[tuple[str, str], StoredConsent] = field(default_factory=dict)  # by (purpose key, scope)
    age: int | None = None

    def consent(self, purpose_key: str, scope: str = "") -> ConsentView | None:
        """The subject's consent state for this purpose and scope ("" for the purpose itself), if any."""
        stored = self.states.get((purpose_key, scope))
        return None if stored is None else ConsentView._make(stored)


@dataclass(frozen=True)
class Snapshot:
    """Subjects found (by lookup key) and what was in force when they were read."""

    subjects: dict[tuple[str, ...], SubjectView]
    policy_version: int | None
    taxonomy_version: int | None
    credential_valid: bool | None = None  # whether the client's key was unrevoked (None: no client given)
    held_categories: frozenset[str] = frozenset()  # under an active category-wide legal hold
    key_epoch: int = 0  # crypto_state.epoch: moves whenever a data key is destroyed


@functools.lru_cache(maxsize=256)
def _jurisdictions(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@functools.lru_cache(maxsize=64)
def _held(text: str | None) -> frozenset[str]:
    if not text:
        return frozenset()
    return frozenset(category for part in text.split("|") for category in json.loads(part))


@functools.lru_cache(maxsize=64)
def _statement(subjects: str, count: int, mark: str) -> str:
    return _HEAD.format(mark=mark, concat=_CONCAT[mark], subjects=subjects.format(marks=", ".join([mark] * count)))


# PostgreSQL, many subjects (batches): one array parameter instead of a placeholder per value, so the statement
# text never varies and psycopg parses it once (``IN`` with hundreds of placeholders is re-parsed by the driver on
# every call). A few subjects keep ``IN``: its prepared generic plan is as good as a custom one, whereas ``= ANY``'s
# row estimate makes PostgreSQL re-plan it on every execution, which costs more than the query.
# The array is joined through ``unnest`` rather than filtered with ``= ANY``: the planner then probes the unique
# index once per value (nested loop, a few ms for 1,000 subjects) instead of choosing a parallel sequential scan of
# the identifiers and subjects with a hash join, which costs several times more and takes both cores.
_PG_ARRAY_JOINS = {
    _BY_SUBJECT_ID: (
        "FROM subjects s LEFT JOIN consent_state c ON c.subject_pk = s.pk\nWHERE s.subject_id IN ({marks})",
        "FROM unnest(%s::text[]) AS k(value) JOIN subjects s ON s.subject_id = k.value "
        "LEFT JOIN consent_state c ON c.subject_pk = s.pk",
    ),
    _BY_IDENTIFIER: (
        "FROM subject_identifiers i JOIN subjects s ON s.pk = i.subject_pk LEFT JOIN consent_state c ON c.subject_pk "
        "= s.pk\nWHERE i.blind_index IN ({marks})",
        "FROM unnest(%s::text[]) AS k(value) JOIN subject_identifiers i ON i.blind_index = k.value "
        "JOIN subjects s ON s.pk = i.subject_pk LEFT JOIN consent_state c ON c.subject_pk = s.pk",
    ),
}
_PG_STATEMENTS = {
    template: _HEAD.format(mark="%s", concat=_CONCAT["%s"], subjects=template.replace(*_PG_ARRAY_JOINS[template]))
    for template in (_BY_SUBJECT_ID, _BY_IDENTIFIER)
}
assert all("unnest" in statement for statement in _PG_STATEMENTS.values())  # each replace matched
_PG_FEW = 16


_CURSOR = "govsvc.decisions.cursor"  # a DBAPI connection's own reusable cursor for this query (PostgreSQL)


def _run(session: Session, subjects: str, client_id: str | None, values: Sequence[str]) -> list[tuple[Any, ...]]:
    connection = session.connection()
    if connection.dialect.paramstyle == "qmark":  # SQLite
        cursor = connection.connection.cursor()
        try:
            cursor.execute(_statement(subjects, len(values), "?"), [client_id, *values])
            return list(cursor.fetchall())
        finally:
            cursor.close()
    # PostgreSQL: one cursor per pooled DBAPI connection, kept in the pool's per-connection info and reused (a new
    # psycopg cursor per decision costs about a third of the driver's work for the query)
    pooled = connection.connection
    cursor = pooled.info.get(_CURSOR)
    if cursor is None or cursor.closed or cursor.connection is not pooled.dbapi_connection:
        cursor = pooled.info[_CURSOR] = pooled.dbapi_connection.cursor()  # type: ignore[union-attr]
    statement, parameters = (
        (_statement(subjects, len(values), "%s"), [client_id, *values])
        if len(values) <= _PG_FEW
        else (_PG_STATEMENTS[subjects], [client_id, list(values)])
    )
    cursor.execute(statement, parameters)
    return cursor.fetchall()


def load(
    session: Session,
    subject_ids: Iterable[str],
    identifiers: Iterable[tuple[str, str, str]],
    *,
    client_id: str | None = None,
    cache: SubjectCache | None = None,
) -> Snapshot:
    """Subjects by id (key ``(subject_id,)``) and by identifier (key ``(kind, system, blind_index)``), and whether
    ``client_id``'s key is unrevoked; at least one round trip, one more per 1,000 subjects, unless ``cache`` (when
    its coherence lease holds) has them all; it then keeps what was read."""
    generation = cache.generation() if cache is not None else None
    if cache is None or generation is None:
        return _read(session, subject_ids, identifiers, client_id=client_id)
    keys: list[tuple[str, ...]] = [(subject_id,) for subject_id in subject_ids]
    keys += identifiers
    found, missing, whole = cache.lookup(keys, client_id)
    if whole is not None:
        return whole
    read = _read(
        session,
        [key[0] for key in missing if len(key) == 1],
        [key for key in missing if len(key) == 3],  # type: ignore[misc]
        client_id=client_id,
    )
    cache.fill(generation, read, client_id)
    if not found:
        return read
    found.update(read.subjects)
    return Snapshot(
        found, read.policy_version, read.taxonomy_version, read.credential_valid, read.held_categories, read.key_epoch
    )


def _read(
    session: Session,
    subject_ids: Iterable[str],
    identifiers: Iterable[tuple[str, str, str]],
    *,
    client_id: str | None = None,
) -> Snapshot:
    """``load`` from the database."""
    found: dict[tuple[str, ...], SubjectView] = {}
    by_pk: dict[int, SubjectView] = {}
    ids = sorted(set(subject_ids))
    wanted = set(identifiers)
    indexes = sorted({blind_index for _kind, _system, blind_index in wanted})
    queries = [
        (template, values[offset : offset + CHUNK])
        for template, values in ((_BY_SUBJECT_ID, ids), (_BY_IDENTIFIER, indexes))
        for offset in range(0, len(values), CHUNK)
    ] or [(_NOTHING, [])]
    head: tuple[Any, ...] = (None, None, None)
    held: str | None = None
    for template, values in queries:
        by_identifier = template is _BY_IDENTIFIER
        view: SubjectView | None = None
        last_key: tuple[str, ...] | None = None
        for row in _run(session, template, client_id, values):
            head, held = row, row[-2]
            pk = row[3]
            if pk is None:
                continue  # the head row alone: nothing found
            # a subject's rows (one per consent state) arrive one after the other: its key is read once
            key = tuple(row[_KEY_AT:-2]) if by_identifier else (row[_KEY_AT],)
            if key != last_key:
                last_key = key
                if by_identifier and key not in wanted:
                    view = None
                    continue  # same blind index, other kind or system
                view = by_pk.get(pk)
                if view is None:
                    birth = bytes(row[6]) if row[6] is not None else None
                    view = SubjectView(pk, row[4], _jurisdictions(row[5]), birth, bool(row[7]), bool(row[8]))
                    by_pk[pk] = view
                found[key] = view
            elif view is None:
                continue  # more rows of a subject found under another kind or system
            if row[9] is not None:
                valid_until = row[16]
                view.states[(row[9], row[10])] = (
                    tuple(row[11:17])  # a plain tuple (see StoredConsent)
                    if valid_until is None or getattr(valid_until, "tzinfo", None) is not None
                    else (row[11], row[12], row[13], row[14], row[15], _aware(valid_until))
                )
    credential = None if client_id is None else bool(head[2])
    key_epoch = int(head[-1] or 0) if len(head) > 3 else 0  # the head of an empty query has no epoch column
    return Snapshot(found, head[0], head[1], credential, _held(held), key_epoch)
