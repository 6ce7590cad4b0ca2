"""Auditor exports (JSONL bundles, streamed in bounded memory) and the server-side verification of the log.

A bundle carries the events exactly as committed to the tree, the signed checkpoint covering them, every
published verification key, and the proof material: a range proof for a contiguous range of sequence numbers,
or an inclusion proof per event for a filtered selection. ``python -m audit.verify`` checks it without govsvc.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from audit import merkle
from audit.bundle import PROOFS_INCLUSION, PROOFS_RANGE, BundleWriter
from audit.canonical import canonical_json
from audit.note import parse_checkpoint
from audit.verify import Finding, Report, verify_bundle
from govsvc.audit import proofs, signing
from govsvc.audit.models import AuditEvent, AuditLeaf
from govsvc.audit.sequencer import fetch_nodes
from govsvc.audit.service import EventFilter, canonical_event, format_time, iter_leaves, record
from govsvc.core.db import Database, utcnow

CHUNK = 2000
CSV_COLUMNS = (
    "seq",
    "event_id",
    "time",
    "actor_principal",
    "actor_role",
    "actor_client",
    "actor_ip_hash",
    "action",
    "subject_ref",
    "object_ref",
    "purpose",
    "data_categories",
    "outcome",
    "reason_code",
    "request_id",
    "details",
    "leaf_hash",
)


@dataclass(frozen=True)
class ExportPlan:
    """What an export will contain, fixed before streaming starts."""

    tree_size: int
    checkpoint_note: str
    vkeys: tuple[str, ...]
    from_seq: int
    to_seq: int
    criteria: EventFilter

    @property
    def mode(self) -> str:
        return PROOFS_RANGE if self.criteria.is_seq_range_only else PROOFS_INCLUSION


def plan_export(session: Session, criteria: EventFilter) -> ExportPlan:
    """Bound the export by the latest signed checkpoint."""
    checkpoint = proofs.checkpoint_at(session, None)
    size = checkpoint.tree_size
    from_seq = min(max(criteria.seq_from or 0, 0), size)
    to_seq = size if criteria.seq_to is None else min(max(criteria.seq_to, from_seq), size)
    vkeys = tuple(key.vkey for key in signing.published_keys(session))
    return ExportPlan(size, checkpoint.note, vkeys, from_seq, to_seq, criteria)


def _bounded(plan: ExportPlan) -> EventFilter:
    criteria = EventFilter(**{**plan.criteria.__dict__})
    criteria.seq_from, criteria.seq_to = plan.from_seq, plan.to_seq
    return criteria


def _chunks(session: Session, plan: ExportPlan) -> Iterator[list[AuditLeaf]]:
    chunk: list[AuditLeaf] = []
    for leaf in iter_leaves(session, _bounded(plan), chunk=CHUNK):
        chunk.append(leaf)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _inclusion_proofs(session: Session, seqs: list[int], size: int) -> dict[int, list[bytes]]:
    """Inclusion proofs of several leaves with one round of node fetching."""
    wanted: list[tuple[int, int]] = []

    def record(start: int, end: int) -> bytes:
        level = (end - start).bit_length() - 1
        wanted.append((level, start >> level))
        return b"\x00" * 32

    for seq in seqs:
        merkle.inclusion_proof(seq, size, record)
    hashes = fetch_nodes(session, list(dict.fromkeys(wanted)))

    def stored(start: int, end: int) -> bytes:
        level = (end - start).bit_length() - 1
        return hashes[(level, start >> level)]

    return {seq: merkle.inclusion_proof(seq, size, stored) for seq in seqs}


def bundle_lines(session: Session, plan: ExportPlan) -> Iterator[str]:
    """The JSONL bundle, line by line, reading the log in chunks."""
    lines: list[str] = []
    writer = BundleWriter(lines.append, verbatim=True)
    writer.header(
        origin=parse_checkpoint(plan.checkpoint_note).origin,
        tree_size=plan.tree_size,
        from_seq=plan.from_seq,
        to_seq=plan.to_seq,
        proofs=plan.mode,
        filters=plan.criteria.as_dict(),
        filtered=plan.mode == PROOFS_INCLUSION,
    )
    for vkey in plan.vkeys:
        writer.key(vkey)
    writer.checkpoint(plan.checkpoint_note)
    yield from lines
    lines.clear()
    for chunk in _chunks(session, plan):
        proof_of = (
            _inclusion_proofs(session, [leaf.seq for leaf in chunk], plan.tree_size)
            if plan.mode == PROOFS_INCLUSION
            else {}
        )
        for leaf in chunk:
            writer.stored_event(leaf.event_json, bytes(leaf.leaf_hash), proof=proof_of.get(leaf.seq))
        yield from lines
        lines.clear()
        session.expunge_all()
    if plan.mode == PROOFS_RANGE:
        writer.range_proof(proofs.range_proof(session, plan.from_seq, plan.to_seq, plan.tree_size))
    writer.trailer()
    yield from lines


def csv_lines(session: Session, plan: ExportPlan) -> Iterator[str]:
    """The same events as a spreadsheet: one row per event (verify with the JSONL bundle of the same range)."""
    buffer = io.StringIO()
    out = csv.writer(buffer)
    out.writerow(CSV_COLUMNS)
    for chunk in _chunks(session, plan):
        for leaf in chunk:
            event = json.loads(leaf.event_json)
            actor = event.get("actor") or {}
            out.writerow(
                [
                    event.get("seq"),
                    event.get("event_id"),
                    event.get("time"),
                    actor.get("principal"),
                    actor.get("role"),
                    actor.get("client"),
                    actor.get("ip_hash"),
                    event.get("action"),
                    event.get("subject_ref"),
                    event.get("object_ref"),
                    event.get("purpose"),
                    " ".join(event.get("data_categories") or []),
                    event.get("outcome"),
                    event.get("reason_code"),
                    event.get("request_id"),
                    json.dumps(event.get("details") or {}, sort_keys=True),
                    bytes(leaf.leaf_hash).hex(),
                ]
            )
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        session.expunge_all()


class _LineStream(io.RawIOBase):
    """A binary stream over an iterator of text lines (feeds the verifier without materialising a bundle)."""

    def __init__(self, lines: Iterator[str]) -> None:
        self._lines = lines
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._lines).encode()
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def _row_findings(session: Session, plan: ExportPlan) -> list[Finding]:
    """Events whose queryable row no longer matches what was committed to the tree."""
    findings: list[Finding] = []
    after = plan.from_seq - 1
    while True:
        rows = session.execute(
            select(AuditLeaf.seq, AuditLeaf.event_json, AuditEvent)
            .join(AuditEvent, AuditEvent.id == AuditLeaf.event_pk)
            .where(AuditLeaf.seq > after, AuditLeaf.seq < plan.to_seq)
            .order_by(AuditLeaf.seq)
            .limit(CHUNK)
        ).all()
        for seq, event_json, event in rows:
            if canonical_json(canonical_event(event, seq)).decode() != event_json:
                findings.append(
                    Finding("modified", f"the audit_events row of seq {seq} differs from the committed event", seq)
                )
        if len(rows) < CHUNK:
            return findings
        after = rows[-1][0]
        session.expunge_all()


def verify_stored_log(database: Database, seq_from: int | None, seq_to: int | None) -> Report:
    """Verify the stored log against its latest signed checkpoint with the auditor's own verifier code."""
    with database.transaction(write=False) as session:
        plan = plan_export(session, EventFilter(seq_from=seq_from, seq_to=seq_to))
        report = verify_bundle(
            io.BufferedReader(_LineStream(bundle_lines(session, plan))), trusted_vkeys=plan.vkeys, source="database"
        )
        report.findings.extend(_row_findings(session, plan))
    return report


def export_filename(plan: ExportPlan, extension: str) -> str:
    return f"govsvc-audit-{plan.from_seq}-{plan.to_seq}-{format_time(utcnow())[:19].replace(':', '')}.{extension}"


EXPORT_FORMATS = {"jsonl": "application/jsonl", "csv": "text/csv"}


def start_export(session: Session, criteria: EventFilter, export_format: str) -> ExportPlan:
    """Plan an export and audit it (``audit.exported``, in the caller's transaction); stream it with
    ``export_lines``."""
    plan = plan_export(session, criteria)
    record(
        session,
        "audit.exported",
        object_ref=f"audit-log:{plan.from_seq}-{plan.to_seq}",
        details={"format": export_format, "filters": plan.criteria.as_dict(), "tree_size": plan.tree_size},
    )
    return plan


def export_lines(database: Database, plan: ExportPlan, export_format: str) -> Iterator[str]:
    """The export's lines, read in a transaction of their own while they are streamed."""
    with database.transaction(write=False) as reader:
        yield from (bundle_lines if export_format == "jsonl" else csv_lines)(reader, plan)


def verify_and_record(database: Database, seq_from: int | None, seq_to: int | None) -> Report:
    """Verify the stored log and audit the verification (``audit.verified``, failure when tampering is found).

    The event is written in a short transaction of its own once the verification is done: the caller's may stay
    a read (no write lock is held, on SQLite, while a long log is verified). Call it outside a write transaction.
    """
    report = verify_stored_log(database, seq_from, seq_to)
    with database.transaction() as session:
        record(
            session,
            "audit.verified",
            outcome="success" if report.ok else "failure",
            object_ref=f"audit-log:{report.from_seq}-{report.to_seq}",
            reason_code=None if report.ok else "tampering_detected",
        )
    return report
