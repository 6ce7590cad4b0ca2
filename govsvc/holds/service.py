"""Legal holds (reference R-HLD-01): over a subject (all or some categories), a data category (every subject) or
a dataset (a whole store). While a hold is active its data is never purged or erased and is restricted: the
subject's ``legal_hold`` flag, which the decision API turns into a ``legal_hold`` deny, follows the active
subject holds. Releasing a hold lets the pending retention rules and the erasures it kept back run again."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ValidationFailed
from govsvc.core.pii_guard import random_reference
from govsvc.dsr.erasure import ALL, HOLD_REASON, RetentionException
from govsvc.holds.models import LegalHold
from govsvc.subjects.models import Subject

SCOPES = ("subject", "category", "dataset")
HOLD_BASIS = "GDPR-17(3)(e); GDPR-18(1)(c); PIPL-47-para2; CCPA-1798.105(d)"


@dataclass(frozen=True)
class HoldInput:
    scope: str
    basis: str
    owner: str
    review_at: date
    subject: Subject | None = None
    categories: tuple[str, ...] = ()
    dataset: str | None = None
    known_categories: frozenset[str] | None = None  # the taxonomy's category keys (None: not checked)


def create_hold(session: Session, spec: HoldInput, *, actor: str) -> LegalHold:
    """Register an active hold (audited ``hold.created``); a subject hold sets the subject's flag at once."""
    if spec.scope not in SCOPES:
        raise ValidationFailed("Unknown scope.", errors=[{"field": "scope", "message": f"one of {', '.join(SCOPES)}"}])
    if spec.scope == "subject" and spec.subject is None:
        raise ValidationFailed(
            "A subject hold names its subject.", errors=[{"field": "subject", "message": "required"}]
        )
    if spec.scope == "category" and not spec.categories:
        raise ValidationFailed(
            "A category hold names its categories.", errors=[{"field": "categories", "message": "at least one"}]
        )
    if spec.scope == "dataset" and not spec.dataset:
        raise ValidationFailed(
            "A dataset hold names its dataset.",
            errors=[{"field": "dataset", "message": "vault, consent, dsr_exports, api_keys or source:<name>"}],
        )
    unknown = sorted(
        c for c in set(spec.categories) if spec.known_categories is not None and c not in spec.known_categories
    )
    if unknown:
        raise ValidationFailed(
            "A hold names unknown data categories.",
            errors=[{"field": "categories", "message": f"unknown {', '.join(map(repr, unknown))}; see /v1/taxonomy"}],
        )
    if spec.scope != "subject" and spec.subject is not None:
        raise ValidationFailed(
            "Only a subject hold names a subject.", errors=[{"field": "subject", "message": "not allowed"}]
        )
    if spec.scope != "dataset" and spec.dataset:
        raise ValidationFailed(
            "Only a dataset hold names a dataset.", errors=[{"field": "dataset", "message": "not allowed"}]
        )
    hold = LegalHold(
        hold_id=random_reference("hold_"),
        scope=spec.scope,
        subject_pk=spec.subject.pk if spec.subject is not None else None,
        categories=json.dumps(sorted(set(spec.categories))),
        dataset=spec.dataset,
        basis=spec.basis,
        owner=spec.owner,
        review_at=spec.review_at,
        status="active",
        created_at=utcnow(),
        created_by=actor,
    )
    session.add(hold)
    session.flush()
    if spec.subject is not None:
        sync_flag(session, spec.subject)
    record(
        session,
        "hold.created",
        subject_ref=spec.subject.subject_id if spec.subject is not None else None,
        object_ref=f"hold:{hold.hold_id}",
        data_categories=sorted(set(spec.categories)),
        details={"scope": spec.scope, "dataset": spec.dataset},
    )
    return hold


def get_hold(session: Session, hold_id: str, *, for_update: bool = False) -> LegalHold:
    query = select(LegalHold).where(LegalHold.hold_id == hold_id)
    if for_update:
        query = query.with_for_update()
    hold = session.scalar(query)
    if hold is None:
        raise NotFoundError("No such legal hold.")
    return hold


def release_hold(session: Session, hold_id: str, *, actor: str) -> LegalHold:
    """Release an active hold (audited ``hold.released``); the subject's flag follows its remaining holds."""
    hold = get_hold(session, hold_id, for_update=True)
    if hold.status != "active":
        raise ConflictError("This hold was released already.")
    hold.status = "released"
    hold.released_at = utcnow()
    hold.released_by = actor
    session.flush()
    subject = session.get(Subject, hold.subject_pk) if hold.subject_pk is not None else None
    if subject is not None:
        sync_flag(session, subject)
    record(
        session,
        "hold.released",
        subject_ref=subject.subject_id if subject is not None else None,
        object_ref=f"hold:{hold.hold_id}",
        details={"scope": hold.scope, "dataset": hold.dataset},
    )
    return hold


def sync_flag(session: Session, subject: Subject) -> None:
    """The subject's ``legal_hold`` flag = it has an active subject hold."""
    held = (
        session.scalar(
            select(LegalHold.pk)
            .where(LegalHold.subject_pk == subject.pk, LegalHold.status == "active", LegalHold.scope == "subject")
            .limit(1)
        )
        is not None
    )
    if subject.legal_hold != held:
        subject.legal_hold = held
        subject.updated_at = utcnow()
        session.flush()


def categories_of(hold: LegalHold) -> tuple[str, ...]:
    return tuple(json.loads(hold.categories)) or (ALL,)


def active_holds(session: Session) -> list[LegalHold]:
    return list(session.scalars(select(LegalHold).where(LegalHold.status == "active").order_by(LegalHold.pk)))


@dataclass(frozen=True)
class HoldIndex:
    """The active holds, arranged for a purge: per subject, per category, per dataset."""

    by_subject: dict[int, tuple[str, ...]]
    categories: tuple[str, ...]
    datasets: frozenset[str]

    def dataset_held(self, store: str) -> bool:
        return store in self.datasets

    def category_held(self, categories: Iterable[str | None]) -> bool:
        return any(_overlaps(self.categories, c) for c in categories)

    def subject_held(self, subject_pk: int, categories: Iterable[str | None]) -> bool:
        held = self.by_subject.get(subject_pk)
        return held is not None and any(_overlaps(held, c) for c in categories)


def _overlaps(held: Iterable[str], category: str | None) -> bool:
    for h in held:
        if h == ALL or category is None or category == "*":
            return True
        if category == h or category.startswith(h + ".") or h.startswith(category + "."):
            return True
    return False


def hold_index(session: Session) -> HoldIndex:
    by_subject: dict[int, tuple[str, ...]] = {}
    categories: list[str] = []
    datasets: set[str] = set()
    for hold in active_holds(session):
        if hold.scope == "subject" and hold.subject_pk is not None:
            by_subject[hold.subject_pk] = by_subject.get(hold.subject_pk, ()) + categories_of(hold)
        elif hold.scope == "category":
            categories.extend(categories_of(hold))
        elif hold.scope == "dataset" and hold.dataset:
            datasets.add(hold.dataset)
    return HoldIndex(by_subject, tuple(categories), frozenset(datasets))


def hold_exceptions(session: Session, subject: Subject) -> list[RetentionException]:
    """What the active holds keep of a subject's data (a ``RetentionExceptions`` source for DSR erasure)."""
    found = []
    for hold in active_holds(session):
        if hold.scope == "subject" and hold.subject_pk != subject.pk:
            continue
        if hold.scope == "dataset" and hold.dataset != "vault":
            continue
        found.append(
            RetentionException(
                source=f"hold:{hold.hold_id}",
                categories=categories_of(hold) if hold.scope != "dataset" else (ALL,),
                reason_code="legal_hold",
                reason=dict(HOLD_REASON),
                legal_basis=HOLD_BASIS,
                until=hold.review_at.isoformat(),
            )
        )
    return found
