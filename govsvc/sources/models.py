"""External SQL sources: tables in other databases that hold personal data govsvc purges and reaches for DSRs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class ExternalSource(Base):
    """One table of an external PostgreSQL or SQLite database; its connection URL is stored wrapped."""

    __tablename__ = "external_sources"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url_wrapped: Mapped[bytes] = mapped_column(LargeBinary)  # AES-256-GCM under a key derived from the secret
    dialect: Mapped[str] = mapped_column(String(16))  # postgresql | sqlite (never the URL itself)
    table_name: Mapped[str] = mapped_column(String(128))
    key_column: Mapped[str] = mapped_column(String(64))  # the row's primary key (chunking, resume)
    subject_column: Mapped[str] = mapped_column(String(64))
    subject_kind: Mapped[str] = mapped_column(String(32))  # the identifier kind its values are (crm_id, email)
    subject_system: Mapped[str] = mapped_column(String(64), default="")
    timestamp_column: Mapped[str] = mapped_column(String(64))
    columns: Mapped[str] = mapped_column(Text)  # JSON {column: data category}
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
