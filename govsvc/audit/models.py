"""The audit log's tables: events, the Merkle tree over them, signed checkpoints, and signing keys.

``audit_events``, ``audit_leaves``, ``audit_tree_nodes`` and ``audit_checkpoints`` are append-only: database
triggers (see the migration) reject UPDATE and DELETE on both SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from govsvc.core.db import Base, UTCDateTime, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY, so BIGINT becomes INTEGER there.
BigId = BigInteger().with_variant(Integer(), "sqlite")
APPEND_ONLY_TABLES = ("audit_events", "audit_leaves", "audit_tree_nodes", "audit_checkpoints")


class AuditEvent(Base):
    """One recorded event, as written by the request that caused it (sequence number assigned later)."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_principal: Mapped[str | None] = mapped_column(String(80), index=True)
    actor_role: Mapped[str | None] = mapped_column(String(64))
    actor_client: Mapped[str | None] = mapped_column(String(40))
    actor_ip_hash: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(80), index=True)
    subject_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    object_ref: Mapped[str | None] = mapped_column(String(200))
    purpose: Mapped[str | None] = mapped_column(String(80))
    data_categories: Mapped[str | None] = mapped_column(Text)  # JSON array
    outcome: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str | None] = mapped_column(String(80))
    request_id: Mapped[str | None] = mapped_column(String(128))
    details: Mapped[str | None] = mapped_column(Text)  # JSON object


class AuditLeaf(Base):
    """The sequencer's placement of an event in the log: its sequence number, the canonical JSON of the
    event as committed to the tree (what exports carry verbatim) and its leaf hash."""

    __tablename__ = "audit_leaves"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # audit_events.id, without a foreign key (migration 0016): the sequencer places only events it has just read,
    # and events are never deleted; the check cost a row lock on the event per leaf
    event_pk: Mapped[int] = mapped_column(BigInteger, unique=True)
    event_json: Mapped[str] = mapped_column(Text)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditTreeNode(Base):
    """The hash of a complete, aligned subtree of 2**level leaves starting at leaf node_index * 2**level."""

    __tablename__ = "audit_tree_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    node_index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class AuditCheckpoint(Base):
    """A signed checkpoint (C2SP signed note) of the tree at one size."""

    __tablename__ = "audit_checkpoints"

    tree_size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    key_name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)


class AuditSigningKey(Base):
    """A checkpoint signing key: public key in the clear, private key wrapped (AES-256-GCM) by the service key."""

    __tablename__ = "audit_signing_keys"

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str] = mapped_column(String(100))
    vkey: Mapped[str] = mapped_column(String(200), unique=True)
    wrapped_private_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
