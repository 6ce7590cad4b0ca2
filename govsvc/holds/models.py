"""Legal holds: litigation or regulator holds over a subject, data categories or a dataset."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class LegalHold(Base):
    """A hold: while ``active``, the data in its scope is never purged or erased and is restricted."""

    __tablename__ = "legal_holds"
    __table_args__ = (Index("ix_legal_holds_status_scope", "status", "scope"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hold_id: Mapped[str] = mapped_column(String(40), unique=True)
    scope: Mapped[str] = mapped_column(String(16))  # subject | category | dataset
    subject_pk: Mapped[int | None] = mapped_column(ForeignKey("subjects.pk"), index=True)
    categories: Mapped[str] = mapped_column(Text, default="[]")  # JSON list; empty with a subject = everything
    dataset: Mapped[str | None] = mapped_column(String(120))  # a store: vault | source:<name> | dsr_exports ...
    basis: Mapped[str] = mapped_column(String(500))
    owner: Mapped[str] = mapped_column(String(120))
    review_at: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # active | released
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    released_by: Mapped[str | None] = mapped_column(String(80))
