"""The customer profile vault: a subject's fields, classified by data category, encrypted by level."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class VaultField(Base):
    """The current value of one profile field: plain (L1) or a token sealed under the subject's data key."""

    __tablename__ = "vault_fields"
    __table_args__ = (
        UniqueConstraint("subject_pk", "field", name="uq_vault_fields_subject_field"),
        Index("ix_vault_fields_blind_index", "field", "blind_index"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"))
    field: Mapped[str] = mapped_column(String(80))
    category: Mapped[str] = mapped_column(String(120))
    level: Mapped[str] = mapped_column(String(4))
    value_plain: Mapped[str | None] = mapped_column(Text)
    value_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_version: Mapped[int | None] = mapped_column(Integer)
    blind_index: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(80))


class VaultFieldHistory(Base):
    """A previous value of a field (rectification history), always sealed under the subject's data key."""

    __tablename__ = "vault_field_history"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"), index=True)
    field: Mapped[str] = mapped_column(String(80))
    version: Mapped[int] = mapped_column(Integer)
    value_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    key_version: Mapped[int | None] = mapped_column(Integer)
    change: Mapped[str] = mapped_column(String(16))  # replaced | deleted
    justification: Mapped[str | None] = mapped_column(String(500))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    changed_by: Mapped[str | None] = mapped_column(String(80))
