"""The admin UI's tables: signed-in sessions, sign-in attempts (rate limiting and lockout) and user preferences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class AdminSession(Base):
    """A signed-in browser session. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "admin_sessions"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(80), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # absolute limit, however active
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # signed out, or ended by an expiry


class AdminLoginAttempt(Base):
    """One sign-in attempt: keyed hashes of the username typed and of the address, never the text itself
    (a password typed into the username field must not be kept)."""

    __tablename__ = "admin_login_attempts"
    __table_args__ = (
        Index("ix_admin_login_attempts_username_at", "username_hash", "at"),
        Index("ix_admin_login_attempts_ip_at", "ip_hash", "at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username_hash: Mapped[str] = mapped_column(String(64))
    ip_hash: Mapped[str | None] = mapped_column(String(64))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    counted: Mapped[bool] = mapped_column(Boolean)  # False: refused while locked, without checking the password
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)  # the day-old prune


class AdminPreference(Base):
    """What an admin user chose for the UI: language and time zone."""

    __tablename__ = "admin_preferences"

    username: Mapped[str] = mapped_column(String(80), primary_key=True)
    language: Mapped[str] = mapped_column(String(16))
    time_zone: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
