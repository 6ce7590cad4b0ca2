"""Erasing a subject's profile: all of it by crypto-shredding (``shred_profile``), or part of it while the rest must
be kept (``erase_fields``: a legal hold or a legal retention period).

For a partial erasure the data key stays (the kept fields need it); everything else an erasure removes goes now:
the erased fields, every earlier value (rectification history), the identifiers other than the CRM id and the birth
date. A DSR erasure does this, and a replay of the deletion ledger after a restore does it again.
"""

from __future__ import annotations

from collections.abc import Collection

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError
from govsvc.dsr.erasure import erasable_fields
from govsvc.holds.service import hold_exceptions
from govsvc.retention.models import DeletionTombstone
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.vault.models import VaultField, VaultFieldHistory
from govsvc.vault.service import Vault, delete_history

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


def shred_profile(session: Session, vault: Vault, subject: Subject, *, run_id: str) -> dict[str, int]:
    """Erase ``subject``'s whole profile by crypto-shredding (its data keys destroyed, so no copy of its ciphertext
    can be read again), with the ``key.destroyed`` audit event.

    Refused (ConflictError) while a legal hold keeps any of its fields. The deletion ledger gets a tombstone first, so
    that a backup restored later is shredded again by ``govsvc retention replay-ledger``.
    """
    holds = hold_exceptions(session, subject)
    if holds:
        rows = session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk)).all()
        if len(erasable_fields(rows, holds)) < len(rows) or subject.legal_hold:
            raise ConflictError(
                "A legal hold keeps this subject's data: release the hold, or erase through a data-subject "
                "request, which erases what the hold does not keep.",
                holds=sorted(hold.source.removeprefix("hold:") for hold in holds),
            )
    session.add(
        DeletionTombstone(
            subject_key=subject.subject_id,
            store="vault",
            deleted_before=utcnow(),
            action="crypto_shred",
            run_id=run_id,
            recorded_at=utcnow(),
        )
    )
    result = vault.shred(session, subject, via="vault_api")
    delete_history(session, subject)
    return result
