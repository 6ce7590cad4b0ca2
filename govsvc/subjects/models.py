"""Data subjects and their identifiers across systems and channels (stored as blind indexes and ciphertext)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class Subject(Base):
    """A person, known by a pseudonymous ``subject_id``; no identifying value is stored in the clear."""

    __tablename__ = "subjects"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_id: Mapped[str] = mapped_column(String(40), unique=True)
    jurisdictions: Mapped[str] = mapped_column(String(200))  # JSON list: ["pipl", "gdpr:de", "ccpa"]
    birth_date_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    guardian_pk: Mapped[int | None] = mapped_column(ForeignKey("subjects.pk"))
    restricted: Mapped[bool] = mapped_column(Boolean, default=False)  # processing restricted (GDPR Art 18)
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class SubjectIdentifier(Base):
    """One identifier of a subject in one system (CRM id, e-mail, phone, WeChat open id...)."""

    __tablename__ = "subject_identifiers"
    # blind_index leads: lookups (one or a batch) search by it; kind and system complete the identity.
    __table_args__ = (UniqueConstraint("blind_index", "kind", "system", name="uq_subject_identifiers_lookup"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    system: Mapped[str] = mapped_column(String(64), default="")
    blind_index: Mapped[str] = mapped_column(String(64))
    value_enc: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
