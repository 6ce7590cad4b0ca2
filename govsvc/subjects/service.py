"""Data subjects: one person recognised across systems and channels by any of their identifiers.

Identifier values are normalised (e-mail lower-cased, phone numbers in E.164), then stored only as a keyed HMAC
blind index (for lookup) and AES-256-GCM ciphertext bound to the subject and identifier kind.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

import phonenumbers
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.crypto.service import FieldKeys
from govsvc.subjects.models import Subject, SubjectIdentifier

IDENTIFIER_KINDS = frozenset(
    {"crm_id", "email", "phone", "wechat_openid", "wechat_unionid", "member_no", "id_number", "device_id", "external"}
)
_SUBJECT_ID_RE = re.compile(r"^sub_[a-z2-7]{16}$")
_SYSTEM_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$|^$")
_JURISDICTION_RE = re.compile(r"^(pipl|ccpa|gdpr(:[a-z]{2})?)$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
DEFAULT_PHONE_REGION = "CN"


@dataclass(frozen=True)
class IdentifierInput:
    kind: str
    value: str
    system: str = ""


BIRTH_DATE = "birth_date"  # what a birth date is bound to when sealed


def new_subject_id() -> str:
    return "sub_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def normalise(kind: str, value: str) -> str:
    """The canonical form of an identifier value; ValidationFailed when it cannot be one."""
    value = value.strip()
    if kind not in IDENTIFIER_KINDS:
        raise ValidationFailed(
            "Unknown identifier kind.",
            errors=[{"field": "kind", "message": f"one of {', '.join(sorted(IDENTIFIER_KINDS))}"}],
        )
    if not value or len(value) > 200:
        raise ValidationFailed("Invalid identifier.", errors=[{"field": "value", "message": "1-200 characters"}])
    if kind == "email":
        local, at, domain = value.partition("@")
        if not at or not local or "." not in domain:
            raise ValidationFailed("Invalid e-mail address.", errors=[{"field": "value", "message": "not an e-mail"}])
        return f"{local}@{domain.lower()}".lower()
    if kind == "phone":
        try:
            number = phonenumbers.parse(value, DEFAULT_PHONE_REGION)
        except phonenumbers.NumberParseException:
            number = None
        if number is None or not phonenumbers.is_possible_number(number):
            raise ValidationFailed(
                "Invalid phone number.", errors=[{"field": "value", "message": "not a phone number"}]
            )
        return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if kind == "id_number":
        return value.replace(" ", "").upper()
    return value


def _index(keys: FieldKeys, identifier: IdentifierInput) -> tuple[str, str]:
    if not _SYSTEM_RE.match(identifier.system):
        raise ValidationFailed(
            "Invalid system.", errors=[{"field": "system", "message": "lower-case letters, digits, '.', '_', '-'"}]
        )
    normalised = normalise(identifier.kind, identifier.value)
    return normalised, keys.blind_index(identifier.kind, identifier.system, normalised)


def validate_jurisdictions(values: Iterable[str], known: Iterable[str]) -> list[str]:
    """``pipl``, ``ccpa``, ``gdpr`` or ``gdpr:<member state>``; at least one."""
    values = list(dict.fromkeys(values))
    known = set(known)
    bad = [v for v in values if not _JURISDICTION_RE.match(v) or v.split(":")[0] not in known]
    if bad or not values:
        raise ValidationFailed(
            "Invalid jurisdictions.",
            errors=[{"field": "jurisdictions", "message": "one or more of pipl, ccpa, gdpr, gdpr:<member state>"}],
        )
    return values


def _find_by_identifier(session: Session, kind: str, system: str, blind_index: str) -> Subject | None:
    return session.scalar(
        select(Subject)
        .join(SubjectIdentifier, SubjectIdentifier.subject_pk == Subject.pk)
        .where(
            SubjectIdentifier.kind == kind,
            SubjectIdentifier.system == system,
            SubjectIdentifier.blind_index == blind_index,
        )
    )


def _attach(session: Session, keys: FieldKeys, subject: Subject, identifier: IdentifierInput) -> None:
    normalised, blind_index = _index(keys, identifier)
    owner = _find_by_identifier(session, identifier.kind, identifier.system, blind_index)
    if owner is not None:
        if owner.pk == subject.pk:
            return
        raise ConflictError(
            f"This {identifier.kind} identifier already belongs to another subject.", subject_id=owner.subject_id
        )
    name = identifier_name(identifier.kind, identifier.system)
    session.add(
        SubjectIdentifier(
            subject_pk=subject.pk,
            kind=identifier.kind,
            system=identifier.system,
            blind_index=blind_index,
            value_enc=keys.seal(session, subject.subject_id, name, normalised),
            created_at=utcnow(),
        )
    )
    session.flush()


def create_subject(
    session: Session,
    keys: FieldKeys,
    *,
    identifiers: list[IdentifierInput],
    jurisdictions: list[str],
    known_jurisdictions: Iterable[str],
    birth_date: date | None = None,
    guardian: Subject | None = None,
) -> Subject:
    """A new subject with its identifiers; ConflictError (naming the owner) if an identifier is taken."""
    if birth_date is not None and birth_date > date.today():
        raise ValidationFailed("Invalid birth date.", errors=[{"field": "birth_date", "message": "in the future"}])
    subject = Subject(
        subject_id=new_subject_id(),
        jurisdictions=json.dumps(validate_jurisdictions(jurisdictions, known_jurisdictions)),
        guardian_pk=guardian.pk if guardian else None,
        created_at=utcnow(),
        updated_at=utcnow(),
    )
    session.add(subject)
    session.flush()
    if birth_date is not None:
        subject.birth_date_enc = keys.seal(session, subject.subject_id, BIRTH_DATE, birth_date.isoformat())
    for identifier in identifiers:
        _attach(session, keys, subject, identifier)
    return subject


def add_identifier(session: Session, keys: FieldKeys, subject: Subject, identifier: IdentifierInput) -> None:
    _attach(session, keys, subject, identifier)
    subject.updated_at = utcnow()


def update_subject(
    session: Session,
    keys: FieldKeys,
    subject: Subject,
    changes: Mapping[str, Any],
    known_jurisdictions: Iterable[str],
) -> Subject:
    """Change jurisdictions, birth date or guardian."""
    if "jurisdictions" in changes:
        subject.jurisdictions = json.dumps(validate_jurisdictions(changes["jurisdictions"], known_jurisdictions))
    if "birth_date" in changes:
        birth_date = changes["birth_date"]
        subject.birth_date_enc = (
            keys.seal(session, subject.subject_id, BIRTH_DATE, birth_date.isoformat()) if birth_date else None
        )
    if "guardian" in changes:
        guardian = changes["guardian"]
        if guardian is not None and guardian.pk == subject.pk:
            raise ValidationFailed(
                "A subject cannot be its own guardian.", errors=[{"field": "guardian", "message": "self"}]
            )
        subject.guardian_pk = guardian.pk if guardian else None
    subject.updated_at = utcnow()
    session.flush()
    return subject


class SubjectKey(NamedTuple):
    """A subject's internal and public ids: all a read of its data needs, without loading the ORM object."""

    pk: int
    subject_id: str


_subjects = Subject.__table__.c
_SUBJECT_KEY = select(_subjects.pk, _subjects.subject_id).where(_subjects.subject_id == bindparam("subject_id"))


def get_subject_key(session: Session, subject_id: str) -> SubjectKey:
    """The ids of a subject (one prebuilt statement, no ORM object: the hot read paths); NotFoundError otherwise."""
    row = (
        session.connection().execute(_SUBJECT_KEY, {"subject_id": subject_id}).first()
        if _SUBJECT_ID_RE.match(subject_id)
        else None
    )
    if row is None:
        raise NotFoundError("No such subject.")
    return SubjectKey(row[0], row[1])


def get_subject(session: Session, subject_id: str) -> Subject:
    subject = (
        session.scalar(select(Subject).where(Subject.subject_id == subject_id))
        if _SUBJECT_ID_RE.match(subject_id)
        else None
    )
    if subject is None:
        raise NotFoundError("No such subject.")
    return subject


def resolve(session: Session, keys: FieldKeys, reference: Mapping[str, Any]) -> Subject:
    """A subject from ``{"subject_id": ...}`` or ``{"kind", "value", "system"?}``; NotFoundError otherwise."""
    if reference.get("subject_id"):
        return get_subject(session, str(reference["subject_id"]))
    identifier = IdentifierInput(
        str(reference.get("kind", "")), str(reference.get("value", "")), str(reference.get("system") or "")
    )
    _normalised, blind_index = _index(keys, identifier)
    subject = _find_by_identifier(session, identifier.kind, identifier.system, blind_index)
    if subject is None:
        raise NotFoundError(f"No subject has that {identifier.kind} identifier.")
    return subject


def find_by_any_identifier(
    session: Session, keys: FieldKeys, value: str, *, kind: str | None = None, system: str = ""
) -> list[tuple[Subject, str]]:
    """Subjects recognised by ``value``: a subject id, or an identifier of ``kind`` (every kind the value can be
    when None) in ``system``. Returns (subject, what matched) pairs; ValidationFailed when ``kind`` is given and the
    value cannot be one."""
    value = value.strip()
    if _SUBJECT_ID_RE.match(value):
        subject = session.scalar(select(Subject).where(Subject.subject_id == value))
        return [(subject, "subject_id")] if subject is not None else []
    found: dict[int, tuple[Subject, str]] = {}
    for candidate in [kind] if kind else sorted(IDENTIFIER_KINDS):
        try:
            _normalised, blind_index = _index(keys, IdentifierInput(candidate, value, system))
        except ValidationFailed:
            if kind:
                raise
            continue  # the value cannot be an identifier of this kind
        subject = _find_by_identifier(session, candidate, system, blind_index)
        if subject is not None and subject.pk not in found:
            found[subject.pk] = (subject, candidate)
    return list(found.values())


def identifier_kinds(session: Session, subject: Subject) -> list[dict[str, str]]:
    rows = session.execute(
        select(SubjectIdentifier.kind, SubjectIdentifier.system)
        .where(SubjectIdentifier.subject_pk == subject.pk)
        .order_by(SubjectIdentifier.pk)
    ).all()
    return [{"kind": kind, "system": system} for kind, system in rows]


def birth_date_of(session: Session, keys: FieldKeys, subject: Subject) -> date | None:
    if subject.birth_date_enc is None:
        return None
    return date.fromisoformat(keys.open(session, subject.subject_id, BIRTH_DATE, subject.birth_date_enc))


def identifier_name(kind: str, system: str) -> str:
    """What an identifier value is bound to (with its subject) when sealed."""
    return f"identifier:{kind}:{system}"


def reseal_legacy_values(session: Session, keys: FieldKeys) -> int:
    """Re-seal identifier values and birth dates written before data keys existed (under a key derived from the
    secret) under each subject's data key, so that crypto-shredding reaches them. Idempotent; run by init."""
    count = 0
    for identifier, subject_id in session.execute(
        select(SubjectIdentifier, Subject.subject_id).join(Subject, Subject.pk == SubjectIdentifier.subject_pk)
    ).all():
        if not keys.is_sealed_for(subject_id, identifier.value_enc):
            value = keys.open_legacy(identifier.value_enc, f"{subject_id}|{identifier.kind}|{identifier.system}")
            identifier.value_enc = keys.seal(
                session, subject_id, identifier_name(identifier.kind, identifier.system), value
            )
            count += 1
    for subject in session.scalars(select(Subject).where(Subject.birth_date_enc.is_not(None))):
        if not keys.is_sealed_for(subject.subject_id, subject.birth_date_enc):
            value = keys.open_legacy(subject.birth_date_enc, f"{subject.subject_id}|birth_date")
            subject.birth_date_enc = keys.seal(session, subject.subject_id, BIRTH_DATE, value)
            count += 1
    session.flush()
    return count


def age_on(birth_date: date | None, day: date) -> int | None:
    if birth_date is None:
        return None
    return day.year - birth_date.year - ((day.month, day.day) < (birth_date.month, birth_date.day))


def jurisdictions_of(subject: Subject) -> list[str]:
    return json.loads(subject.jurisdictions)
