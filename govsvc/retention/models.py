"""Retention: stored rule versions, runs (dry runs and purges) with their chunk journal, leases, subject events
that start retention clocks, the insert-only deletion ledger, and APScheduler's job store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Index, Integer, LargeBinary, String, Text, Unicode
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow


class RetentionPolicyVersion(Base):
    """The retention rules (``policies/retention.yaml``) as YAML text, at one version."""

    __tablename__ = "retention_policy_versions"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    document: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(80))
    comment: Mapped[str | None] = mapped_column(String(500))


class RetentionRun(Base):
    """One dry run or execution of one rule: counts, exclusions, samples (pseudonymous), errors, progress."""

    __tablename__ = "retention_runs"
    __table_args__ = (Index("ix_retention_runs_rule_started", "rule_key", "started_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(40), unique=True)
    rule_key: Mapped[str] = mapped_column(String(80))
    policy_version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))  # dry_run | execute
    status: Mapped[str] = mapped_column(String(16))  # running | completed | failed
    store: Mapped[str] = mapped_column(String(120))
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime())  # data older than this (or events before it) is due
    dry_run_id: Mapped[str | None] = mapped_column(String(40))  # the approved dry run an execution follows
    approved_by: Mapped[str | None] = mapped_column(String(80))  # dry runs: who approved the execution
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON {category or action: n}
    exclusions: Mapped[str] = mapped_column(Text, default="{}")  # JSON {reason: n}
    samples: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of pseudonymous ids
    errors: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of messages (no values)
    cursor: Mapped[str | None] = mapped_column(String(200))  # resume point (last key processed)
    requested_by: Mapped[str] = mapped_column(String(80))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    duration_ms: Mapped[int | None] = mapped_column(Integer)


class RetentionChunk(Base):
    """The journal of an execution: a chunk is planned (its keys stored) before its rows are deleted in the
    target and marked done after, so a crash between the two is finished on resume without counting twice."""

    __tablename__ = "retention_chunks"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_pk: Mapped[int] = mapped_column(ForeignKey("retention_runs.pk"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    keys: Mapped[str] = mapped_column(Text)  # JSON list of the target's row keys in this chunk
    planned: Mapped[int] = mapped_column(Integer)
    done: Mapped[int | None] = mapped_column(Integer)  # rows acted on; NULL while pending
    status: Mapped[str] = mapped_column(String(16))  # pending | done
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RetentionLease(Base):
    """Who runs a purge now: one row per rule; a holder keeps it by renewing before ``expires_at``."""

    __tablename__ = "retention_leases"

    name: Mapped[str] = mapped_column(String(120), primary_key=True)
    holder: Mapped[str] = mapped_column(String(80))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class RetentionEvent(Base):
    """A subject event that starts a retention clock: contract_end, purpose_completed, account_cancelled."""

    __tablename__ = "retention_events"
    __table_args__ = (Index("ix_retention_events_trigger_at", "trigger", "occurred_at"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_pk: Mapped[int] = mapped_column(ForeignKey("subjects.pk"), index=True)
    trigger: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str | None] = mapped_column(String(120))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    recorded_by: Mapped[str] = mapped_column(String(80))


class DeletionTombstone(Base):
    """The deletion ledger (insert-only): a pseudonymous subject key, the store, and the time before which its
    data there was deleted. A restore from backup replays it (``govsvc retention replay-ledger``)."""

    __tablename__ = "deletion_ledger"
    __table_args__ = (Index("ix_deletion_ledger_store_key", "store", "subject_key"),)

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_key: Mapped[str] = mapped_column(String(80))  # keyed hash (external sources) or subject id
    store: Mapped[str] = mapped_column(String(120))  # vault | source:<name> | ...
    deleted_before: Mapped[datetime] = mapped_column(UTCDateTime())  # rows older than this were deleted
    action: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[str | None] = mapped_column(String(40), index=True)  # a run's tombstones, when it resumes
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # JSON, for deletions of part of a subject's data: {"categories": [...]} (a rule's) or {"fields": [...]} (the
    # profile fields an erasure deleted while a hold or legal retention kept the rest). Names only, never values.
    detail: Mapped[str | None] = mapped_column(Text)


class SchedulerJobRow(Base):
    """APScheduler's ``SQLAlchemyJobStore`` table (same shape), created by the migrations, not at run time."""

    __tablename__ = "apscheduler_jobs"

    id: Mapped[str] = mapped_column(Unicode(191), primary_key=True)
    next_run_time: Mapped[float | None] = mapped_column(Float(25), index=True)
    job_state: Mapped[bytes] = mapped_column(LargeBinary)
