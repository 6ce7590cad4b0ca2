"""Loading what a decision needs about its subjects in one round trip: the subject row, every consent state,
and the policy and taxonomy versions in force.

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
from typing import Any

from sqlalchemy.orm import Session

CHUNK = 500
_COLUMNS = """s.pk, s.subject_id, s.jurisdictions, s.birth_date_enc, s.restricted, s.legal_hold,
    (SELECT version FROM policy_state WHERE id = 1), (SELECT max(version) FROM taxonomy_versions),
    c.purpose_key, c.scope, c.status, c.purpose_version, c.consent_type, c.actor, c.source, c.valid_until"""
# Constant SQL: only the number of placeholders varies at run time, never a value.
_BY_SUBJECT_ID = f"""SELECT {_COLUMNS}, s.subject_id
FROM subjects s LEFT JOIN consent_state c ON c.subject_pk = s.pk
WHERE s.subject_id IN ({{marks}})"""  # noqa: S608
_BY_IDENTIFIER = f"""SELECT {_COLUMNS}, i.kind, i.system, i.blind_index
FROM subject_identifiers i JOIN subjects s ON s.pk = i.subject_pk LEFT JOIN consent_state c ON c.subject_pk = s.pk
WHERE i.blind_index IN ({{marks}})"""  # noqa: S608


@dataclass(frozen=True)
class ConsentView:
    status: str
    purpose_version: int
    consent_type: str | None
    actor: str
    source: str
    valid_until: datetime | None


@dataclass
class SubjectView:
    """A subject as a decision sees it."""

    pk: int
    subject_id: str
    jurisdictions: tuple[str, ...]
    birth_date_enc: bytes | None
    restricted: bool
    legal_hold: bool
    states: dict[tuple[str, str], ConsentView] = field(default_factory=dict)
    age: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """Subjects found (by lookup key) and the versions in force when they were read."""

    subjects: dict[tuple[str, ...], SubjectView]
    policy_version: int | None
    taxonomy_version: int | None


@functools.lru_cache(maxsize=256)
def _jurisdictions(text: str) -> tuple[str, ...]:
    return tuple(json.loads(text))


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _run(session: Session, template: str, values: Sequence[str]) -> list[tuple[Any, ...]]:
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    raw = connection.connection
    cursor = raw.cursor()
    try:
        cursor.execute(template.format(marks=", ".join([mark] * len(values))), list(values))
        return list(cursor.fetchall())
    finally:
        cursor.close()


def load(session: Session, subject_ids: Iterable[str], identifiers: Iterable[tuple[str, str, str]]) -> Snapshot:
    """Subjects by id (key ``(subject_id,)``) and by identifier (key ``(kind, system, blind_index)``)."""
    found: dict[tuple[str, ...], SubjectView] = {}
    by_pk: dict[int, SubjectView] = {}
    versions: tuple[Any, Any] = (None, None)
    ids = sorted(set(subject_ids))
    wanted = set(identifiers)
    indexes = sorted({blind_index for _kind, _system, blind_index in wanted})
    for template, values in ((_BY_SUBJECT_ID, ids), (_BY_IDENTIFIER, indexes)):
        for offset in range(0, len(values), CHUNK):
            for row in _run(session, template, values[offset : offset + CHUNK]):
                key = tuple(row[16:])
                if template is _BY_IDENTIFIER and key not in wanted:
                    continue  # same blind index, other kind or system
                view = by_pk.get(row[0])
                if view is None:
                    birth = bytes(row[3]) if row[3] is not None else None
                    view = SubjectView(row[0], row[1], _jurisdictions(row[2]), birth, bool(row[4]), bool(row[5]))
                    by_pk[row[0]] = view
                found[key] = view
                versions = (row[6], row[7])
                if row[8] is not None:
                    view.states[(row[8], row[9])] = ConsentView(
                        row[10], row[11], row[12], row[13], row[14], _aware(row[15])
                    )
    return Snapshot(found, versions[0], versions[1])
