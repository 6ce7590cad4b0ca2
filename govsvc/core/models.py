"""Tables shared by every domain: stored responses of idempotent requests, leases of the periodic jobs, the
leases of the instances whose caches follow the database (``govsvc.core.coherence``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class IdempotencyRecord(Base):
    """The response of a creating POST, replayed when the same principal repeats its Idempotency-Key."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("principal_id", "idempotency_key", name="uq_idempotency_principal_key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    principal_id: Mapped[str] = mapped_column(String(80))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[str] = mapped_column(Text)
    response_location: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class JobLease(Base):
    """One periodic job: when it may next run. Every instance's scheduler fires it, and only the one whose
    conditional update moves ``due_at`` forward runs it, so it runs once per period across instances."""

    __tablename__ = "job_leases"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime())
    holder: Mapped[str | None] = mapped_column(String(120))
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    runs: Mapped[int] = mapped_column(Integer, default=0)


class CacheLease(Base):
    """One serving instance that caches what decisions read (PostgreSQL): until ``expires_at`` it promises to have
    applied every invalidation up to barrier ``acked_seq`` before answering from its cache. A writer waits until
    every unexpired lease has acknowledged its barrier; an instance that cannot renew stops using its cache."""

    __tablename__ = "cache_leases"

    instance_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    acked_seq: Mapped[int] = mapped_column(BigInteger, default=0)
