"""Erasing part of a subject's profile while the rest must be kept (a legal hold or a legal retention period).

The data key stays (the kept fields need it); everything else an erasure removes goes now: the erased fields,
every earlier value (rectification history), the identifiers other than the CRM id and the birth date. A DSR erasure
does this, and a replay of the deletion ledger after a restore does it again.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete
from sqlalchemy.orm import Session

from govsvc.core.db import utcnow
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.vault.models import VaultField, VaultFieldHistory

KEPT_IDENTIFIER = "crm_id"  # the key the kept records are found by


def erase_fields(session: Session, subject: Subject, fields: Collection[str]) -> dict[str, int]:
    """Erase ``fields`` of ``subject``'s profile (and its history, identifiers and birth date); restrict the rest.
    Returns counts (names only)."""
    deleted = 0
    if fields:
        deleted = session.execute(
            delete(VaultField).where(VaultField.subject_pk == subject.pk, VaultField.field.in_(sorted(fields)))
        ).rowcount
    history = session.execute(delete(VaultFieldHistory).where(VaultFieldHistory.subject_pk == subject.pk)).rowcount
    identifiers = session.execute(
        delete(SubjectIdentifier).where(
            SubjectIdentifier.subject_pk == subject.pk, SubjectIdentifier.kind != KEPT_IDENTIFIER
        )
    ).rowcount
    subject.birth_date_enc = None
    subject.restricted = True
    subject.updated_at = utcnow()
    session.flush()
    return {
        "fields_deleted": int(deleted or 0),
        "history_deleted": int(history or 0),
        "identifiers_removed": int(identifiers or 0),
    }
