"""The consent ledger (append-only events) and its projection (current state per subject, purpose and scope)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class ConsentEvent(Base):
    """One consent act or state change. Never updated or deleted (database triggers refuse it)."""

    __tablename__ = "consent_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"), index=True)
    purpose_key: Mapped[str] = mapped_column(String(80))
    purpose_version: Mapped[int] = mapped_column(Integer)
    scope: Mapped[str] = mapped_column(String(120), default="")  # "", category:<k>, recipient:<k>, xb:<CC>
    event_type: Mapped[str] = mapped_column(String(16))  # given | refused | withdrawn | expired | renewed
    consent_type: Mapped[str | None] = mapped_column(String(16))
    lawful_basis: Mapped[str | None] = mapped_column(String(120))  # gdpr:<basis>,pipl:<basis>,ccpa:<basis>
    notice_id: Mapped[str | None] = mapped_column(String(80))
    notice_version: Mapped[str | None] = mapped_column(String(40))
    notice_sha256: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(16))  # subject | guardian | agent | system
    actor_ref: Mapped[str | None] = mapped_column(String(80))
    evidence_ref: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | gpc | import | system
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # indexed for the reads of a recent window (the dashboard's last 30 days) without a scan of the ledger
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    recorded_by: Mapped[str | None] = mapped_column(String(80))


class ConsentState(Base):
    """The fold of a subject's events for one purpose and scope: what is in force now."""

    __tablename__ = "consent_state"
    # the withdrawn states, for the retention rule that clears them after their evidence period (pages by subject)
    __table_args__ = (
        Index(
            "ix_consent_state_withdrawn",
            "subject_pk",
            "updated_at",
            postgresql_where=text("status = 'withdrawn'"),
            sqlite_where=text("status = 'withdrawn'"),
        ),
    )

    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"), primary_key=True)
    purpose_key: Mapped[str] = mapped_column(String(80), primary_key=True)
    scope: Mapped[str] = mapped_column(String(120), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))  # given | refused | withdrawn | expired
    purpose_version: Mapped[int] = mapped_column(Integer)
    consent_type: Mapped[str | None] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16))
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_event_pk: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ReceiptSigningKey(Base):
    """An Ed25519 key that signs consent receipts (JWS); public part published as a JWK, private part wrapped."""

    __tablename__ = "receipt_signing_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kid: Mapped[str] = mapped_column(String(32), unique=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64url, 32 bytes
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NoticeUsage(Base):
    """How often and when each privacy notice was shown (consents recorded under it), folded from the consent
    events up to ``NoticeUsageState.through_pk``; a reader adds the events after it (``notices_in_use``)."""

    __tablename__ = "consent_notice_usage"

    notice_id: Mapped[str] = mapped_column(String(80), primary_key=True)
    notice_version: Mapped[str] = mapped_column(String(40), primary_key=True)  # "" when none was given
    language: Mapped[str] = mapped_column(String(16), primary_key=True)
    notice_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    events: Mapped[int] = mapped_column(BigInteger)
    first_recorded: Mapped[datetime] = mapped_column(UTCDateTime())
    last_recorded: Mapped[datetime] = mapped_column(UTCDateTime())


class NoticeUsageState(Base):
    """One row: the consent events up to ``through_pk`` are counted in ``consent_notice_usage``."""

    __tablename__ = "consent_notice_usage_state"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    through_pk: Mapped[int] = mapped_column(BigInteger)
