"""Stored keys (always wrapped) and the progress of data-key rotations."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class CryptoKey(Base):
    """One version of a tenant key (wrapped by a root key) or of a subject's data key (wrapped by a tenant key).

    ``wrapped`` is emptied when the key is destroyed (crypto-shredding) or retired after a rotation finished.
    """

    __tablename__ = "crypto_keys"
    __table_args__ = (UniqueConstraint("key_id", "version", name="uq_crypto_keys_version"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(80))  # tenant:<name> | subject:<subject_id>
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))  # tenant | subject
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    wrapped_by: Mapped[str | None] = mapped_column(String(100))  # root:<provider>:<version> | tenant:<name>:<version>
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | retiring | retired | destroyed
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class KeyRotation(Base):
    """A data-key rotation: re-encrypts every vault value in primary-key order; ``last_pk`` makes it resumable."""

    __tablename__ = "key_rotations"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    rotation_id: Mapped[str] = mapped_column(String(40), unique=True)
    scope: Mapped[str] = mapped_column(String(80))  # all | subject:<subject_id>
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | done
    last_pk: Mapped[int] = mapped_column(Integer, default=0)
    history_last_pk: Mapped[int] = mapped_column(Integer, default=0)
    values_done: Mapped[int] = mapped_column(Integer, default=0)
    started_by: Mapped[str | None] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class CryptoState(Base):
    """A single row: the key epoch, bumped whenever a data key is destroyed. Each instance compares it with the
    epoch its key cache was filled under (once per request) and empties the cache when it moved, so a key shredded
    through one instance never opens anything on another."""

    __tablename__ = "crypto_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
