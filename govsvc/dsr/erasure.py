"""What an erasure must keep: legal holds and legal retention (reference §6, R-HLD-01, R-RET-01).

``RetentionExceptions`` is the hook every erasure asks before it deletes anything. Phase 1 knows the subject's
``legal_hold`` flag and the retention rules of ``policies/dsr/erasure.yaml``. The legal holds (``govsvc/holds``)
and retention rules (``govsvc/retention``) of issue 8 plug in as further ``ExceptionSource`` callables passed to
``RetentionExceptions`` (see ``govsvc.dsr.domain``); nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session

from govsvc.consent.requirements import regimes_of
from govsvc.dsr.rules import DsrRules
from govsvc.subjects.models import Subject
from govsvc.subjects.service import jurisdictions_of
from govsvc.vault.models import VaultField

ALL = "*"
HOLD_REASON = {
    "en": "a legal hold (litigation or a regulator's request) requires us to keep the data",
    "zh": "因诉讼或监管要求，相关数据处于法律保全状态，须予保存",
}


@dataclass(frozen=True)
class RetentionException:
    """Data an erasure keeps: the categories (``*``: everything), why, and on what legal basis."""

    source: str  # legal_hold | retention_rule:<key> | (phase 2) hold:<id>, retention:<rule>
    categories: tuple[str, ...]
    reason_code: str
    reason: dict[str, str]
    legal_basis: str
    until: str | None = None  # ISO date, when known

    def covers(self, category: str) -> bool:
        return any(c == ALL or category == c or category.startswith(c + ".") for c in self.categories)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "categories": list(self.categories),
            "reason_code": self.reason_code,
            "reason": self.reason,
            "legal_basis": self.legal_basis,
            "until": self.until,
        }


ExceptionSource = Callable[[Session, Subject], Iterable[RetentionException]]


def legal_hold_flag(session: Session, subject: Subject) -> list[RetentionException]:
    """The subject's legal-hold flag: everything is kept (restricted) while it is set."""
    if not subject.legal_hold:
        return []
    return [
        RetentionException(
            source="legal_hold",
            categories=(ALL,),
            reason_code="legal_hold",
            reason=dict(HOLD_REASON),
            legal_basis="GDPR-17(3)(e); PIPL-47-para2; CCPA-1798.105(d)",
        )
    ]


def retention_rules(rules: DsrRules) -> ExceptionSource:
    """The legal retention rules of ``policies/dsr/erasure.yaml`` that apply to the subject's regimes."""

    def source(session: Session, subject: Subject) -> list[RetentionException]:
        regimes = regimes_of(jurisdictions_of(subject))
        return [
            RetentionException(
                source=f"retention_rule:{rule.key}",
                categories=rule.categories,
                reason_code=rule.key,
                reason=dict(rule.reason),
                legal_basis=rule.legal_basis,
            )
            for rule in rules.retention_rules
            if rule.regimes & regimes
        ]

    return source


class RetentionExceptions:
    """Asks every source what must be kept for a subject."""

    def __init__(self, sources: Sequence[ExceptionSource]) -> None:
        self.sources = list(sources)

    def add(self, source: ExceptionSource) -> None:
        """Register another source (phase 2: legal holds and retention rules of issue 8)."""
        self.sources.append(source)

    def for_subject(self, session: Session, subject: Subject) -> list[RetentionException]:
        found: list[RetentionException] = []
        for source in self.sources:
            found.extend(source(session, subject))
        return found


def kept_by(exceptions: Iterable[RetentionException], category: str) -> RetentionException | None:
    """The first exception that keeps data of ``category``, if any."""
    return next((e for e in exceptions if e.covers(category)), None)


def erasable_fields(rows: Iterable[VaultField], exceptions: Iterable[RetentionException]) -> list[str]:
    """The profile fields an erasure deletes now: those no exception keeps (all of them when none applies)."""
    exceptions = list(exceptions)
    return sorted(row.field for row in rows if kept_by(exceptions, row.category) is None)
