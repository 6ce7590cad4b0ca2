"""Access and portability bundles: a ZIP of JSON (published JSON Schema) and CSV, encrypted at rest, behind a
download link that expires and works once.

The ZIP is streamed: records go from each connector straight into the archive, and the archive straight into
encrypted chunks of 256 KiB stored in the database (``dsr_export_chunks``), so memory stays bounded whatever the
subject's volume. Each chunk is AES-256-GCM under a key derived (HKDF) from the download token's secret, with the
export id, the chunk's index and whether it is the last bound as associated data: without the token the bundle
cannot be read, and a reordered, dropped or truncated chunk fails. The token is shown once; only its SHA-256 is
stored, compared in constant time. The first successful download marks it used and deletes the chunks.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
import os
import secrets
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select, update

from govsvc.audit.service import record
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import NotFoundError, ServiceError
from govsvc.core.pii_guard import random_reference
from govsvc.dsr.connectors import Record
from govsvc.dsr.models import DsrExport, DsrExportChunk

CHUNK_BYTES = 256 * 1024
SCHEMA_ID = "urn:govsvc:dsr:export-bundle:v1"
SCHEMA_PATH = "/v1/dsr/schemas/export-bundle.json"
CSV_COLUMNS = ("source", "record_type", "record_id", "category", "provenance", "recorded_at", "field", "value")
_NONCE = 12


class LinkGone(ServiceError):
    """The download link expired, was used already, or never existed."""

    slug = "gone"


def bundle_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of every ``data/<source>.json`` file of a bundle, and of its manifest."""
    scalar = {"type": ["string", "number", "integer", "boolean", "null"]}
    record_schema = {
        "type": "object",
        "required": ["source", "record_type", "record_id", "provenance", "fields"],
        "additionalProperties": False,
        "properties": {
            "source": {"type": "string", "description": "the store: vault, consent, audit, webhook:<app>"},
            "record_type": {"type": "string"},
            "record_id": {"type": "string"},
            "category": {"type": ["string", "null"], "description": "data category of the taxonomy"},
            "provenance": {
                "enum": ["provided", "observed", "derived", "controller"],
                "description": "provided by you, observed from your use of the service, derived (inferred) by us, "
                "or the controller's own record of processing (access reports)",
            },
            "recorded_at": {"type": ["string", "null"], "format": "date-time"},
            "fields": {
                "type": "object",
                "additionalProperties": scalar | {"type": ["string", "number", "integer", "boolean", "null", "array"]},
            },
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "govsvc data-subject export bundle",
        "description": "A ZIP holding manifest.json, and for each source data/<source>.json (this schema's "
        "'source_file') and data/<source>.csv (one row per field: " + ", ".join(CSV_COLUMNS) + ").",
        "$defs": {
            "record": record_schema,
            "source_file": {
                "type": "object",
                "required": ["source", "records"],
                "properties": {
                    "source": {"type": "string"},
                    "records": {"type": "array", "items": {"$ref": "#/$defs/record"}},
                },
            },
            "manifest": {
                "type": "object",
                "required": ["request_id", "request_type", "subject_id", "generated_at", "schema", "sources"],
                "properties": {
                    "request_id": {"type": "string"},
                    "request_type": {"enum": ["access", "portability"]},
                    "subject_id": {"type": "string"},
                    "generated_at": {"type": "string", "format": "date-time"},
                    "schema": {"const": SCHEMA_ID},
                    "portability_filter": {"type": ["string", "null"]},
                    "sources": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["source", "records", "json", "csv"],
                            "properties": {
                                "source": {"type": "string"},
                                "records": {"type": "integer"},
                                "json": {"type": "string"},
                                "csv": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
        "$ref": "#/$defs/source_file",
    }


def _key(secret: str, export_id: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=f"govsvc dsr export v1|{export_id}".encode())
    return AESGCM(derived.derive(secret.encode()))


def _aad(export_id: str, seq: int, final: bool) -> bytes:
    return f"{export_id}|{seq}|{int(final)}".encode()


class _ChunkSink(io.RawIOBase):
    """A write-only stream for ``zipfile``: buffers, encrypts and stores 256 KiB chunks (one transaction each)."""

    def __init__(self, database: Database, export_pk: int, export_id: str, aead: AESGCM) -> None:
        super().__init__()
        self.database, self.export_pk, self.export_id, self.aead = database, export_pk, export_id, aead
        self.buffer = bytearray()
        self.position = 0
        self.seq = 0
        self.size = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seekable(self) -> bool:
        return False

    def write(self, data: Any) -> int:
        data = bytes(data)
        self.buffer += data
        self.position += len(data)
        while len(self.buffer) > CHUNK_BYTES:  # keep one chunk back: the last one is sealed as final
            self._store(bytes(self.buffer[:CHUNK_BYTES]), final=False)
            del self.buffer[:CHUNK_BYTES]
        return len(data)

    def _store(self, plain: bytes, *, final: bool) -> None:
        nonce = os.urandom(_NONCE)
        sealed = nonce + self.aead.encrypt(nonce, plain, _aad(self.export_id, self.seq, final))
        with self.database.transaction() as session:
            session.add(DsrExportChunk(export_pk=self.export_pk, seq=self.seq, data=sealed))
        self.seq += 1
        self.size += len(sealed)

    def finish(self) -> None:
        self._store(bytes(self.buffer), final=True)
        self.buffer.clear()


@dataclass(frozen=True)
class Issued:
    export_id: str
    token: str  # shown once
    expires_at: datetime
    manifest: dict[str, Any]


def _csv_rows(item: Record) -> Iterator[list[Any]]:
    for name, value in item.fields.items():
        text = json.dumps(value, ensure_ascii=False) if isinstance(value, list | dict) else value
        yield [
            item.source,
            item.record_type,
            item.record_id,
            item.category,
            item.provenance,
            item.recorded_at,
            name,
            text,
        ]


def build(
    database: Database,
    *,
    request_pk: int,
    request_id: str,
    request_type: str,
    subject_id: str,
    sources: Iterable[tuple[str, Iterable[Record]]],
    ttl: timedelta,
    portable_only: frozenset[str] | None,
) -> Issued:
    """Stream every source's records into an encrypted bundle; returns the one-time download token."""
    export_id = random_reference("exp_")
    secret = secrets.token_urlsafe(32)
    expires_at = utcnow() + ttl
    with database.transaction() as session:
        row = DsrExport(
            export_id=export_id,
            request_pk=request_pk,
            token_hash=hashlib.sha256(secret.encode()).hexdigest(),
            expires_at=expires_at,
            size_bytes=0,
            manifest="{}",
            created_at=utcnow(),
        )
        session.add(row)
        session.flush()
        export_pk = row.pk
    sink = _ChunkSink(database, export_pk, export_id, _key(secret, export_id))
    summary = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
        for name, records in sources:
            safe = name.replace(":", "_")
            count = 0
            with tempfile.SpooledTemporaryFile(
                max_size=4 * 1024 * 1024, mode="w+", encoding="utf-8", newline=""
            ) as spool:
                writer = csv.writer(spool)
                writer.writerow(CSV_COLUMNS)
                with archive.open(f"data/{safe}.json", "w") as entry:
                    entry.write(json.dumps({"source": name}, ensure_ascii=False)[:-1].encode() + b', "records": [')
                    for item in records:
                        if portable_only is not None and item.provenance not in portable_only:
                            continue
                        entry.write(
                            (b",\n" if count else b"\n") + json.dumps(item.as_dict(), ensure_ascii=False).encode()
                        )
                        writer.writerows(_csv_rows(item))
                        count += 1
                    entry.write(b"\n]}\n")
                spool.seek(0)
                with archive.open(f"data/{safe}.csv", "w") as entry:
                    entry.write("\ufeff".encode())  # BOM: spreadsheets read the UTF-8 (Chinese) correctly
                    while block := spool.read(64 * 1024):
                        entry.write(block.encode())
            summary.append({"source": name, "records": count, "json": f"data/{safe}.json", "csv": f"data/{safe}.csv"})
        manifest = {
            "request_id": request_id,
            "request_type": request_type,
            "subject_id": subject_id,
            "generated_at": utcnow().isoformat(),
            "schema": SCHEMA_ID,
            "schema_url": SCHEMA_PATH,
            "portability_filter": "provided and observed data only (GDPR Art 20)" if portable_only else None,
            "sources": summary,
        }
        archive.writestr("manifest.json", json.dumps(manifest, ensure_ascii=False, indent=2))
        archive.writestr("schema/export-bundle.schema.json", json.dumps(bundle_schema(), indent=2))
    sink.finish()
    with database.transaction() as session:
        session.execute(
            update(DsrExport)
            .where(DsrExport.pk == export_pk)
            .values(size_bytes=sink.size, manifest=json.dumps(manifest, ensure_ascii=False))
        )
    return Issued(export_id, f"{export_id}.{secret}", expires_at, manifest)


def claim(database: Database, token: str) -> tuple[int, str, str, str]:
    """Check a download token and mark its export used (once); returns (export pk, export id, secret, request
    id's object ref). LinkGone for an unknown, altered, expired or used token: the same answer for each."""
    export_id, _, secret = token.partition(".")
    gone = LinkGone("This download link has expired, was used already, or is not valid.")
    if not export_id.startswith("exp_") or len(export_id) > 40 or not secret:
        raise gone
    from govsvc.dsr.models import DsrRequest

    with database.transaction() as session:
        row = session.scalar(select(DsrExport).where(DsrExport.export_id == export_id))
        expected = row.token_hash if row is not None else "0" * 64
        matches = hmac.compare_digest(expected, hashlib.sha256(secret.encode()).hexdigest())
        usable = row is not None and matches and row.expires_at > utcnow() and row.size_bytes > 0
        claimed = 0
        if usable:
            assert row is not None
            claimed = session.execute(
                update(DsrExport)
                .where(DsrExport.pk == row.pk, DsrExport.downloaded_at.is_(None), DsrExport.purged_at.is_(None))
                .values(downloaded_at=utcnow())
            ).rowcount
        if claimed != 1 or row is None:
            record(session, "dsr.export_refused", outcome="denied", object_ref=f"export:{export_id}")
            refused = True
        else:
            refused = False
            request = session.get(DsrRequest, row.request_pk)
            assert request is not None
            record(
                session,
                "data.exported",
                object_ref=f"dsr:{request.request_id}",
                details={"export_id": export_id, "bytes": row.size_bytes, "via": "dsr_download"},
            )
            result = (row.pk, export_id, secret, request.request_id)
    if refused:  # the refusal is audited (committed above), then answered
        raise gone
    return result


def stream(database: Database, export_pk: int, export_id: str, secret: str) -> Iterator[bytes]:
    """Decrypt the chunks in order (checking order and completeness), then delete them."""
    aead = _key(secret, export_id)
    try:
        with database.transaction(write=False) as session:
            last = session.scalar(
                select(DsrExportChunk.seq)
                .where(DsrExportChunk.export_pk == export_pk)
                .order_by(DsrExportChunk.seq.desc())
                .limit(1)
            )
        seq = 0
        while True:
            with database.transaction(write=False) as session:
                chunk = session.scalar(
                    select(DsrExportChunk.data).where(DsrExportChunk.export_pk == export_pk, DsrExportChunk.seq == seq)
                )
            if chunk is None:
                raise NotFoundError("the bundle is incomplete")
            final = seq == last
            try:
                yield aead.decrypt(chunk[:_NONCE], chunk[_NONCE:], _aad(export_id, seq, final))
            except InvalidTag:
                raise NotFoundError("the bundle was altered") from None
            if final:
                return
            seq += 1
    finally:
        purge(database, export_pk)


def purge(database: Database, export_pk: int) -> None:
    with database.transaction() as session:
        session.execute(delete(DsrExportChunk).where(DsrExportChunk.export_pk == export_pk))
        session.execute(update(DsrExport).where(DsrExport.pk == export_pk).values(purged_at=utcnow()))


def purge_expired(database: Database, *, now: datetime | None = None) -> int:
    """Delete the chunks of every expired (or abandoned) bundle; returns how many bundles were purged."""
    now = now or utcnow()
    with database.transaction() as session:
        pks = list(
            session.scalars(select(DsrExport.pk).where(DsrExport.purged_at.is_(None), DsrExport.expires_at <= now))
        )
    for pk in pks:
        purge(database, pk)
    return len(pks)
