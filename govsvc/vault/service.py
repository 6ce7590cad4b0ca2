"""The customer profile vault (客户档案): fields classified by the taxonomy, sealed by level, read by obligation.

L2 and L3 values are sealed under the subject's data key (L3 always); L1 values are stored plain. Searchable
fields (e-mail, mobile, ID number) also get a keyed blind index over their normalised value. Every change keeps
the previous value, sealed, for rectification history. Erasure destroys the subject's data key (crypto-shredding).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import KeyDestroyed, NotFoundError, ServiceError, ValidationFailed
from govsvc.core.pii_guard import check_justification, random_reference
from govsvc.crypto import tokens
from govsvc.crypto.keys import KeyStore
from govsvc.crypto.models import CryptoKey, KeyRotation
from govsvc.crypto.service import FieldKeys
from govsvc.crypto.tokens import Ciphers
from govsvc.decisions.service import Decision, DecisionEngine, DecisionRequest
from govsvc.pii.masking import Masker, normalise_for_pseudonym
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.subjects.service import SubjectKey, normalise
from govsvc.taxonomy.service import Taxonomy
from govsvc.vault.models import VaultField, VaultFieldHistory

ENCRYPTED_LEVELS = frozenset({"L2", "L3"})
# field -> identifier kind whose normalisation the blind index uses (equality search)
SEARCHABLE_FIELDS = {"email": "email", "mobile": "phone", "id_number": "id_number", "passport_number": "id_number"}
MAX_VALUE_LENGTH = 4000
MAX_FIELDS = 100
# What a read needs of each field, in this order, with the key epoch in the same round trip: built once (no
# statement construction or cache key per read), columns rather than ORM objects (a read builds none).
_columns = VaultField.__table__.c
_READ_FIELDS = (
    select(
        _columns.field,
        _columns.category,
        _columns.level,
        _columns.value_plain,
        _columns.value_enc,
        _columns.version,
        _columns.updated_at,
        KeyStore.epoch_column().label("key_epoch"),
    )
    .where(_columns.subject_pk == bindparam("subject_pk"))
    .order_by(_columns.field)
)
_READ_NAMED_FIELDS = _READ_FIELDS.where(_columns.field.in_(bindparam("fields", expanding=True)))
# PostgreSQL (the hot path): the same, straight to the driver (constant text, prepared by psycopg after a few uses).
_PG_READ = (
    "SELECT field, category, level, value_plain, value_enc, version, updated_at, "
    "(SELECT epoch FROM crypto_state WHERE id = 1) FROM vault_fields WHERE subject_pk = %s{named} ORDER BY field"
)
_PG_READ_FIELDS, _PG_READ_NAMED_FIELDS = _PG_READ.format(named=""), _PG_READ.format(named=" AND field = ANY(%s)")


class _FieldRow(NamedTuple):
    field: str
    category: str
    level: str
    value_plain: str | None
    value_enc: bytes | None
    version: int
    updated_at: datetime
    key_epoch: int | None


def _read_fields(session: Session, subject_pk: int, fields: list[str] | None) -> list[_FieldRow]:
    """A subject's fields (all, or those named), ordered by field, with the key epoch; what this session changed
    is flushed first."""
    session.flush()  # a no-op when nothing is pending
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        if fields is None:
            return [_FieldRow(*row) for row in connection.execute(_READ_FIELDS, {"subject_pk": subject_pk})]
        named = {"subject_pk": subject_pk, "fields": fields}
        return [_FieldRow(*row) for row in connection.execute(_READ_NAMED_FIELDS, named)]
    cursor = connection.connection.cursor()
    try:
        if fields is None:
            cursor.execute(_PG_READ_FIELDS, [subject_pk])
        else:
            cursor.execute(_PG_READ_NAMED_FIELDS, [subject_pk, fields])
        rows = cursor.fetchall()
    finally:
        cursor.close()
    # updated_at as UTCDateTime reads it
    return [_FieldRow(*row[:6], row[6].astimezone(UTC), row[7]) for row in rows]  # type: ignore[misc]


@dataclass(frozen=True)
class FieldChange:
    field: str
    change: str  # created | replaced | deleted | unchanged


@dataclass(frozen=True)
class FieldView:
    """A field as one caller may see it: its value after the decision's obligation, and why."""

    value: str | None
    treatment: str  # show | mask:<profile> | tokenize | withhold
    reasons: list[str]
    decision_id: str
    category: str
    level: str
    version: int
    updated_at: datetime
    concealed: bool = False  # L3 plaintext the caller may see, presented masked until revealed with a reason


def field_decisions(
    engine: DecisionEngine,
    session: Session,
    subject_id: str,
    fields: list[str],
    *,
    purpose: str,
    role: str,
    principal_id: str,
) -> dict[str, Decision]:
    """One read decision per field (all in one round trip, audited as one event per outcome); the first invalid
    request's error is raised."""
    outcomes = engine.decide_each(
        session,
        [
            DecisionRequest(
                subject={"subject_id": subject_id},
                action="read",
                purpose=purpose,
                roles=(role,),
                principal_id=principal_id,
                fields=(field,),
            )
            for field in fields
        ],
        grouped_audit=True,
    )
    for outcome in outcomes:
        if isinstance(outcome, ServiceError):
            raise outcome
    return dict(zip(fields, outcomes, strict=True))  # type: ignore[arg-type]


def treatment_of(decision: Decision, field: str) -> str:
    """The obligation a decision puts on a field; ``withhold`` when it denies."""
    return decision.obligations.get(field, "withhold") if decision.allowed else "withhold"


def audit_plaintext(
    session: Session,
    subject_id: str,
    *,
    purpose: str,
    categories: list[str],
    fields: list[str],
    justification: str | None,
    via: str,
) -> None:
    """The ``data.unmasked`` event of a plaintext read: what, for which purpose, and why; never the values."""
    record(
        session,
        "data.unmasked",
        subject_ref=subject_id,
        purpose=purpose,
        data_categories=sorted(set(categories)),
        details={"fields": sorted(fields), "justification": justification, "via": via},
    )


class Vault:
    def __init__(self, keys: KeyStore, index_keys: FieldKeys, masker: Masker) -> None:
        self.keys = keys
        self.index_keys = index_keys
        self.masker = masker

    # -- writing -----------------------------------------------------------------------------------------------

    def _classify(self, taxonomy: Taxonomy, values: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
        errors = []
        classified: dict[str, tuple[str, str]] = {}
        if len(values) > MAX_FIELDS:
            raise ValidationFailed("Too many fields.", errors=[{"field": "fields", "message": f"at most {MAX_FIELDS}"}])
        for name, value in values.items():
            category = taxonomy.fields.get(name)
            if category is None:
                errors.append({"field": f"fields.{name}", "message": "unknown field; see GET /v1/taxonomy (fields)"})
            elif value is not None and (not isinstance(value, str) or not 1 <= len(value) <= MAX_VALUE_LENGTH):
                errors.append({"field": f"fields.{name}", "message": f"a string of 1 to {MAX_VALUE_LENGTH} characters"})
            else:
                classified[name] = (category, taxonomy.level(category))
        if errors:
            raise ValidationFailed("The profile has invalid fields; see errors.", errors=errors)
        return classified

    def _blind_index(self, field: str, value: str) -> str | None:
        kind = SEARCHABLE_FIELDS.get(field)
        if kind is None:
            return None
        return self.index_keys.blind_index("vault", field, normalise(kind, value))

    def write(
        self,
        session: Session,
        taxonomy: Taxonomy,
        subject: Subject,
        values: Mapping[str, Any],
        *,
        actor: str,
        justification: str | None = None,
        replace_all: bool = False,
    ) -> list[FieldChange]:
        """Set fields (a value of None deletes one); ``replace_all`` also deletes the fields not given."""
        classified = self._classify(taxonomy, values)
        current = {
            row.field: row for row in session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk))
        }
        changes: list[FieldChange] = []
        targets = dict(values)
        if replace_all:
            targets |= {name: None for name in current if name not in values}
        now = utcnow()
        sealing: list[Ciphers] = []  # the subject's active data key, looked up once, when first needed

        def seal(name: str, value: str) -> bytes:
            if not sealing:
                sealing.append(self.keys.subject_ciphers(session, subject.subject_id, create=True))
            return self.keys.seal_with(sealing[0], subject.subject_id, name, value)

        for name in sorted(targets):
            value = targets[name]
            row = current.get(name)
            if row is not None:
                old = self._open(session, subject, row)
                if value == old:
                    changes.append(FieldChange(name, "unchanged"))
                    continue
                self._keep_history(
                    session, subject, row, seal, old, "deleted" if value is None else "replaced", actor, justification
                )
                if value is None:
                    session.delete(row)
                    changes.append(FieldChange(name, "deleted"))
                    continue
                row.version += 1
            elif value is None:
                continue
            else:
                category, level = classified[name]
                row = VaultField(subject_pk=subject.pk, field=name, category=category, level=level, version=1)
                session.add(row)
            category, level = classified[name]
            row.category, row.level = category, level
            if level in ENCRYPTED_LEVELS:
                row.value_enc = seal(name, value)
                row.key_version = sealing[0].version
                row.value_plain = None
            else:
                row.value_plain, row.value_enc, row.key_version = value, None, None
            row.blind_index = self._blind_index(name, value)
            row.updated_at, row.updated_by = now, actor
            changes.append(FieldChange(name, "replaced" if row.version > 1 else "created"))
        session.flush()
        return changes

    def _keep_history(
        self,
        session: Session,
        subject: Subject,
        row: VaultField,
        seal: Callable[[str, str], bytes],
        old: str,
        change: str,
        actor: str,
        justification: str | None,
    ) -> None:
        sealed = seal(_history_name(row.field, row.version), old)
        session.add(
            VaultFieldHistory(
                subject_pk=subject.pk,
                field=row.field,
                version=row.version,
                value_enc=sealed,
                key_version=tokens.parse_header(sealed).key_version,
                change=change,
                justification=justification,
                changed_at=utcnow(),
                changed_by=actor,
            )
        )

    # -- reading -----------------------------------------------------------------------------------------------

    def _open(self, session: Session, subject: Subject, row: VaultField) -> str:
        return self._open_value(session, subject.subject_id, row.field, row.value_plain, row.value_enc)

    def _open_value(
        self, session: Session, subject_id: str, field: str, value_plain: str | None, value_enc: bytes | None
    ) -> str:
        if value_enc is None:
            if value_plain is None:
                raise KeyDestroyed("This subject was erased by crypto-shredding; its profile cannot be read.")
            return value_plain
        return self.keys.open(session, subject_id, field, value_enc)

    def open_all(self, session: Session, subject: Subject) -> dict[str, str]:
        """Every current value in plaintext, for the service's own use (re-encryption checks, subject access)."""
        rows = session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk))
        return {row.field: self._open(session, subject, row) for row in rows}

    def read_for_purpose(
        self,
        session: Session,
        engine: DecisionEngine,
        subject: Subject | SubjectKey,
        *,
        purpose: str,
        role: str,
        principal_id: str,
        justification: str | None,
        fields: Collection[str] | None = None,
        conceal_plaintext: str | None = None,
    ) -> dict[str, FieldView]:
        """Every field (or the ``fields`` named) as ``role`` may see it for ``purpose``; L3 plaintext needs a
        justification and is audited.

        ``conceal_plaintext`` (a ``mask:<profile>`` treatment) presents the L3 fields the decisions would show in
        plaintext under that treatment instead, marked ``concealed``: a first view that needs no justification
        and unmasks nothing (the admin UI's, whose "reveal" then reads one field with a justification).
        """
        rows = _read_fields(session, subject.pk, None if fields is None else list(fields))
        if rows:
            self.keys.sync(session, read_epoch=rows[0].key_epoch)
        # A decision and its obligation depend on the field's category only: one decision per category.
        asked = {row.category: row.field for row in reversed(rows)}  # category -> the first of its fields
        by_field = field_decisions(
            engine,
            session,
            subject.subject_id,
            list(asked.values()),
            purpose=purpose,
            role=role,
            principal_id=principal_id,
        )
        decisions = {row.field: by_field[asked[row.category]] for row in rows}
        treatments = {row.field: treatment_of(decisions[row.field], asked[row.category]) for row in rows}
        concealed = set()
        if conceal_plaintext is not None:
            concealed = {row.field for row in rows if row.level == "L3" and treatments[row.field] == "show"}
            treatments |= dict.fromkeys(concealed, conceal_plaintext)
        shown_l3 = [row for row in rows if row.level == "L3" and treatments[row.field] == "show"]
        justification = check_justification(justification, required=bool(shown_l3))
        reasons = {id(decision): sorted({reason.code for reason in decision.reasons}) for decision in by_field.values()}
        views = {}
        for field, category, level, value_plain, value_enc, version, updated_at, _epoch in rows:
            decision = decisions[field]
            treatment = treatments[field]
            value = (
                self._open_value(session, subject.subject_id, field, value_plain, value_enc)
                if treatment != "withhold"
                else None
            )
            views[field] = FieldView(
                value=self.present(field, category, value, treatment),
                treatment=treatment,
                reasons=list(reasons[id(decision)]),
                decision_id=decision.decision_id,
                category=category,
                level=level,
                version=version,
                updated_at=updated_at,
                concealed=field in concealed,
            )
        if shown_l3:
            audit_plaintext(
                session,
                subject.subject_id,
                purpose=purpose,
                categories=[row.category for row in shown_l3],
                fields=[row.field for row in shown_l3],
                justification=justification,
                via="vault",
            )
        return views

    def history(self, session: Session, subject: Subject, *, justification: str) -> list[dict[str, Any]]:
        """Every previous value, opened (rectification history); audited as ``data.unmasked``."""
        justification = check_justification(justification, required=True)
        entries = list(self.iter_history(session, subject))
        if entries:
            audit_plaintext(
                session,
                subject.subject_id,
                purpose="vault.history",
                categories=[],
                fields=sorted({entry["field"] for entry in entries}),
                justification=justification,
                via="vault.history",
            )
        return entries

    def iter_history(self, session: Session, subject: Subject, *, chunk: int = 1000) -> Iterator[dict[str, Any]]:
        """Every previous value, opened, oldest first, read ``chunk`` rows at a time (bounded memory). The caller
        audits the plaintext read."""
        after = 0
        while True:
            rows = session.scalars(
                select(VaultFieldHistory)
                .where(VaultFieldHistory.subject_pk == subject.pk, VaultFieldHistory.pk > after)
                .order_by(VaultFieldHistory.pk)
                .limit(chunk)
            ).all()
            for row in rows:
                yield {
                    "field": row.field,
                    "version": row.version,
                    "change": row.change,
                    "value": self.keys.open(
                        session, subject.subject_id, _history_name(row.field, row.version), row.value_enc
                    )
                    if row.value_enc is not None
                    else None,
                    "justification": row.justification,
                    "changed_at": row.changed_at,
                    "changed_by": row.changed_by,
                }
            if len(rows) < chunk:
                return
            after = rows[-1].pk
            for row in rows:
                session.expunge(row)

    def search(self, session: Session, field: str, value: str) -> list[str]:
        """Subject ids whose ``field`` equals ``value`` (after normalisation), by blind index."""
        if field not in SEARCHABLE_FIELDS:
            raise ValidationFailed(
                "This field is not searchable.",
                errors=[{"field": "field", "message": f"one of {', '.join(sorted(SEARCHABLE_FIELDS))}"}],
            )
        index = self._blind_index(field, value)
        query = (
            select(Subject.subject_id)
            .join(VaultField, VaultField.subject_pk == Subject.pk)
            .where(VaultField.field == field, VaultField.blind_index == index)
            .order_by(Subject.subject_id)
        )
        return list(session.scalars(query))

    def present(self, field: str, category: str, value: str | None, treatment: str) -> str | None:
        """A value under one obligation: show, ``mask:<profile>`` (the masking rules of policies/masking.yaml: the
        category's fixed window, or less when the profile says so), tokenize (the keyed pseudonym the PII API
        gives the same value) or withhold."""
        if value is None or treatment == "withhold":
            return None
        if treatment == "show":
            return value
        if treatment == "tokenize":
            return self._pseudonym(category, value)
        rules = self.masker.rules
        profile = treatment.partition(":")[2] or "default"
        operator = rules.operator(profile, category) if profile in rules.profiles else "mask"
        return self.masker.replace_value(operator, category, value, label=field)

    def _pseudonym(self, category: str, value: str) -> str:
        return "tok_" + self.masker.keys.pseudonym(category, normalise_for_pseudonym(category, value))

    # -- erasure -----------------------------------------------------------------------------------------------

    def shred(self, session: Session, subject: Subject, *, via: str, **context: str) -> dict[str, int]:
        """Crypto-shred a subject: destroy its data keys, erase plain values, every blind index, the identifiers
        and the birth date; audited as ``key.destroyed`` (``via`` and ``context`` in its details) when it erased
        anything, so shredding an already shredded subject again records nothing. The field history stays,
        sealed under the destroyed key (``delete_history`` removes it).

        Returns counts: ``fields`` (the profile's fields), and what was still there to erase."""
        readable = session.scalar(
            select(func.count())
            .select_from(VaultField)
            .where(
                VaultField.subject_pk == subject.pk,
                or_(VaultField.value_plain.is_not(None), VaultField.blind_index.is_not(None)),
            )
        )
        destroyed = self.keys.destroy_subject_keys(session, subject.subject_id)
        fields = session.execute(
            update(VaultField)
            .where(VaultField.subject_pk == subject.pk)
            .values(value_plain=None, blind_index=None, updated_at=utcnow())
        ).rowcount
        identifiers = session.execute(
            delete(SubjectIdentifier).where(SubjectIdentifier.subject_pk == subject.pk)
        ).rowcount
        subject.birth_date_enc = None
        session.flush()
        result = {
            "key_versions_destroyed": destroyed,
            "fields": int(fields or 0),
            "values_erased": int(readable or 0),
            "identifiers_removed": int(identifiers or 0),
        }
        if shred_erased_anything(result):
            record(
                session,
                "key.destroyed",
                subject_ref=subject.subject_id,
                object_ref=f"key:subject:{subject.subject_id}",
                details={**result, "via": via, **context},
            )
        return result


_SHRED_ERASURES = ("key_versions_destroyed", "values_erased", "identifiers_removed")


def delete_history(session: Session, subject: Subject) -> int:
    """Delete every earlier value of a subject's fields (after a shred: values no key opens any more)."""
    deleted = session.execute(delete(VaultFieldHistory).where(VaultFieldHistory.subject_pk == subject.pk)).rowcount
    return int(deleted or 0)


def shred_erased_anything(result: Mapping[str, int]) -> bool:
    """Whether a shred (``Vault.shred``'s counts) found anything still readable to erase."""
    return any(result[name] for name in _SHRED_ERASURES)


def _history_name(field: str, version: int) -> str:
    """What a history value is bound to (its own AAD, so it cannot pass for the current value)."""
    return f"history:{field}:{version}"


# -- data-key rotation: re-encrypt every sealed value, in chunks, resumable -----------------------------------------


def start_rotation(session: Session, keys: KeyStore, *, subject: Subject | None, actor: str) -> KeyRotation:
    """A new data key version for one subject or every subject with a key; values are re-encrypted by
    ``run_rotation``."""
    if subject is not None:
        subject_ids = [subject.subject_id]
        keys.subject_ciphers(session, subject.subject_id, create=True)
    else:
        subject_ids = [
            key_id.split(":", 1)[1]
            for key_id in session.scalars(
                select(CryptoKey.key_id).where(CryptoKey.kind == "subject", CryptoKey.status == "active")
            )
        ]
    keys.start_subject_rotations(session, subject_ids)
    rotation = KeyRotation(
        rotation_id=random_reference("rot_"),
        scope=f"subject:{subject.subject_id}" if subject is not None else "all",
        status="running",
        last_pk=0,
        history_last_pk=0,
        values_done=0,
        started_by=actor,
        started_at=utcnow(),
    )
    session.add(rotation)
    session.flush()
    return rotation


def run_rotation(
    database: Database,
    keys: KeyStore,
    rotation_id: str,
    *,
    chunk: int = 1000,
    max_chunks: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> KeyRotation:
    """Re-encrypt sealed values under each subject's active key, ``chunk`` rows per transaction. Progress is
    committed with each chunk, so a crash loses at most one chunk's work and a rerun continues where it stopped.
    ``max_chunks`` stops early (as a crash would)."""
    chunks = 0
    for table, cursor_column in ((VaultField, "last_pk"), (VaultFieldHistory, "history_last_pk")):
        while max_chunks is None or chunks < max_chunks:
            with database.transaction() as session:
                rotation = _rotation(session, rotation_id)
                if rotation.status == "done":
                    return rotation
                done = _reencrypt_chunk(session, keys, rotation, table, cursor_column, chunk)
            chunks += 1
            if on_chunk is not None:
                on_chunk(done)
            if done < chunk:
                break
        else:
            with database.transaction() as session:
                return _rotation(session, rotation_id)
    with database.transaction() as session:
        rotation = _rotation(session, rotation_id)
        keys.retire_rotated(session, None if rotation.scope == "all" else rotation.scope)
        rotation.status = "done"
        rotation.finished_at = utcnow()
    with database.transaction() as session:
        return _rotation(session, rotation_id)


def get_rotation(session: Session, rotation_id: str) -> KeyRotation:
    """A rotation by id; NotFoundError if unknown."""
    return _rotation(session, rotation_id)


def _rotation(session: Session, rotation_id: str) -> KeyRotation:
    rotation = session.scalar(select(KeyRotation).where(KeyRotation.rotation_id == rotation_id))
    if rotation is None:
        raise NotFoundError(f"No key rotation {rotation_id!r}.")
    return rotation


def _reencrypt_chunk(
    session: Session, keys: KeyStore, rotation: KeyRotation, table: Any, cursor_column: str, size: int
) -> int:
    after = getattr(rotation, cursor_column)
    # The chunk's rows first (an ordered scan of the primary key from the cursor, however large the table), then
    # their subjects: a join before the LIMIT lets the planner scan and sort the whole table for every chunk.
    chunk = select(table.pk, table.subject_pk, table.field, table.version, table.value_enc).where(
        table.pk > after, table.value_enc.is_not(None)
    )
    if rotation.scope != "all":
        scoped = select(Subject.pk).where(Subject.subject_id == rotation.scope.split(":", 1)[1]).scalar_subquery()
        chunk = chunk.where(table.subject_pk == scoped)
    rows_of = chunk.order_by(table.pk).limit(size).subquery()
    query = (
        select(rows_of.c.pk, rows_of.c.field, rows_of.c.version, rows_of.c.value_enc, Subject.subject_id)
        .join(Subject, Subject.pk == rows_of.c.subject_pk)
        .order_by(rows_of.c.pk)
    )
    rows = session.execute(query).all()
    active = keys.preload(session, sorted({row[4] for row in rows}))  # every key of the chunk: one query
    history = table is VaultFieldHistory
    tenant = keys.tenant
    pks: list[int] = []
    sealed_values: list[bytes] = []
    versions: list[int] = []
    for pk, field, row_version, token, subject_id in rows:
        current = active.get(subject_id)
        if current is None:
            continue  # crypto-shredded: its ciphertext stays unreadable, nothing to re-encrypt
        if token.startswith(current.gcm_header) or token.startswith(current.siv_header):
            continue  # already under the active version (a rerun after a crash)
        old = keys.cached_for_token(session, token)  # preloaded: found by the token's header, nothing parsed
        header = None
        if old is None or old.subject_id != subject_id:
            header = tokens.parse_header(token)
            if header.key_version == current.version:
                continue
            old = keys.subject_ciphers(session, subject_id, header.key_version)
        bound = tokens.context(tenant, subject_id, _history_name(field, row_version) if history else field)
        pks.append(pk)
        sealed_values.append(tokens.seal(current, tokens.open_sealed(old, token, bound, header), bound))
        versions.append(current.version)
    if pks:
        _write_resealed(session, table.__table__, pks, sealed_values, versions)
    if rows:
        setattr(rotation, cursor_column, rows[-1][0])
    rotation.values_done += len(pks)
    return len(rows)


def _write_resealed(session: Session, table: Any, pks: list[int], values: list[bytes], versions: list[int]) -> None:
    """The re-encrypted values of a chunk: on PostgreSQL one UPDATE of every row from arrays (one statement for
    the server to plan and run, not one per row); elsewhere one executemany."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        cursor = connection.connection.cursor()
        try:
            cursor.execute(_PG_RESEAL[table.name], [pks, values, versions, min(pks), max(pks)])
        finally:
            cursor.close()
        return
    connection.execute(
        update(table).where(table.c.pk == bindparam("b_pk")),
        [
            {"b_pk": pk, "value_enc": value, "key_version": version}
            for pk, value, version in zip(pks, values, versions, strict=True)
        ],
    )


_PG_RESEAL = {
    table.name: (
        f"UPDATE {table.name} AS t SET value_enc = u.value_enc, key_version = u.key_version "  # noqa: S608
        "FROM unnest(%b::int[], %b::bytea[], %b::int[]) AS u(pk, value_enc, key_version) "
        "WHERE t.pk = u.pk AND t.pk BETWEEN %b AND %b"  # the chunk's range: an index range scan, never the table
    )
    for table in (VaultField.__table__, VaultFieldHistory.__table__)
}
