"""Stored versions of the masking rules (``policies/masking.yaml``): every change is a new row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class MaskingVersion(Base):
    """The masking rules (entities, windows, profiles, roles) as YAML text, at one version."""

    __tablename__ = "masking_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)  # the YAML as written, comments included
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
    comment: Mapped[str | None] = mapped_column(String(500))
