"""Data-subject requests: the requests and their timeline, clock pauses, per-connector fulfilment runs, registered
webhook connectors, export bundles (encrypted, in chunks), OpenDSR status callbacks and the processor's signing key.

No personal value is stored here in the clear: subjects are referenced by key, verification keeps only its
method, outcome and a keyed hash of the evidence, and export bundles are encrypted under a key derived from their
one-time download token (which is stored hashed).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class DsrRequest(Base):
    """One data-subject request and its state."""

    __tablename__ = "dsr_requests"
    __table_args__ = (
        Index("ix_dsr_requests_subject_type", "subject_pk", "request_type"),
        Index("ix_dsr_requests_status_due", "status", "due_at"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(40), unique=True)
    subject_pk: Mapped[int | None] = mapped_column(ForeignKey("subjects.pk"))
    request_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24))
    jurisdictions: Mapped[str] = mapped_column(String(200))  # JSON list of regimes: ["gdpr", "pipl"]
    requester_kind: Mapped[str] = mapped_column(String(24), default="subject")
    requester_subject_pk: Mapped[int | None] = mapped_column(ForeignKey("subjects.pk"))  # a registered guardian
    authority_evidence_hash: Mapped[str | None] = mapped_column(String(64))  # proof of authority (keyed hash)
    channel: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16), default="api")  # api | opendsr | cli
    external_id: Mapped[str | None] = mapped_column(String(80), unique=True)  # OpenDSR subject_request_id
    language: Mapped[str] = mapped_column(String(8), default="en")
    parameters: Mapped[str | None] = mapped_column(Text)  # JSON: purposes, field names (never values)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_local_date: Mapped[str] = mapped_column(String(10))
    ack_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    max_extended_due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    governing_regime: Mapped[str] = mapped_column(String(16))
    schedule: Mapped[str] = mapped_column(Text)  # JSON: each regime's dates and notes
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    verification_level: Mapped[str] = mapped_column(String(16))
    verification_method: Mapped[str | None] = mapped_column(String(32))
    verification_outcome: Mapped[str | None] = mapped_column(String(16))
    verification_evidence_hash: Mapped[str | None] = mapped_column(String(64))
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    extended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    extension_reason: Mapped[str | None] = mapped_column(String(500))
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    assignee: Mapped[str | None] = mapped_column(String(80))
    outcome: Mapped[str | None] = mapped_column(Text)  # JSON: what fulfilment did, per connector, and reasons
    denial_reason: Mapped[str | None] = mapped_column(String(40))
    denial_legal_basis: Mapped[str | None] = mapped_column(String(120))
    repeat_count: Mapped[int] = mapped_column(Integer, default=0)  # same type by the same subject in 12 months
    overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ack_overdue_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str | None] = mapped_column(String(80))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DsrEvent(Base):
    """The request's timeline: status changes, notes, verification, extension, pauses, assignment, fulfilment."""

    __tablename__ = "dsr_events"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("dsr_requests.pk"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str | None] = mapped_column(String(24))
    actor: Mapped[str | None] = mapped_column(String(80))
    text: Mapped[str | None] = mapped_column(String(2000))  # reasons and notes (checked for personal data)
    details: Mapped[str | None] = mapped_column(Text)  # JSON


class DsrPause(Base):
    """A stop of the clock, where the profile allows it (waiting for identity or clarification)."""

    __tablename__ = "dsr_pauses"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("dsr_requests.pk"), index=True)
    reason: Mapped[str] = mapped_column(String(40))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DsrConnectorRun(Base):
    """What one connector did for one request: its status, attempts, counts and reasons."""

    __tablename__ = "dsr_connector_runs"
    __table_args__ = (UniqueConstraint("request_pk", "connector", "operation", name="uq_dsr_connector_runs_run"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("dsr_requests.pk"))
    connector: Mapped[str] = mapped_column(String(80))
    operation: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # pending | done | partial | failed | skipped
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    records: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: counts, kept categories and reasons, last error
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DsrWebhook(Base):
    """An app reached over HTTP for DSR fulfilment (HMAC-signed requests); its secret is stored wrapped."""

    __tablename__ = "dsr_webhooks"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector_id: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    url: Mapped[str] = mapped_column(String(500))
    secret_wrapped: Mapped[bytes] = mapped_column(LargeBinary)
    operations: Mapped[str] = mapped_column(String(200))  # JSON list: collect, erase, rectify, restrict, notify
    role: Mapped[str] = mapped_column(String(16))  # processor (holds data) | recipient (is told of changes)
    identifier_kinds: Mapped[str] = mapped_column(String(200))  # JSON list of identifier kinds sent to it
    max_attempts: Mapped[int] = mapped_column(Integer, default=4)
    timeout_seconds: Mapped[int] = mapped_column(Integer, default=10)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_failure_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(300))


class DsrExport(Base):
    """An access or portability bundle behind a one-time, expiring download link."""

    __tablename__ = "dsr_exports"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    export_id: Mapped[str] = mapped_column(String(40), unique=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("dsr_requests.pk"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    downloaded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    purged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    size_bytes: Mapped[int] = mapped_column(Integer, default=0)
    manifest: Mapped[str] = mapped_column(Text)  # JSON: counts per source, no values
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DsrExportChunk(Base):
    """One encrypted chunk of a bundle (AES-256-GCM, chunk index and finality bound as associated data)."""

    __tablename__ = "dsr_export_chunks"

    export_pk: Mapped[int] = mapped_column(ForeignKey("dsr_exports.pk"), primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class DsrCallback(Base):
    """An OpenDSR status callback waiting to be delivered (an outbox: retried with back-off until delivered)."""

    __tablename__ = "dsr_callbacks"
    __table_args__ = (Index("ix_dsr_callbacks_status_next", "status", "next_attempt_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_pk: Mapped[int] = mapped_column(ForeignKey("dsr_requests.pk"))
    url: Mapped[str] = mapped_column(String(500))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DsrProcessorKey(Base):
    """The OpenDSR processor's signing key (ECDSA P-256) and its certificate; the private key is stored wrapped."""

    __tablename__ = "dsr_processor_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    certificate_pem: Mapped[str] = mapped_column(Text)
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
