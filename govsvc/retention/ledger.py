"""Replaying the deletion ledger after a restore (reference R-DEL-02): every tombstone's deletion is done again
in the restored store: the vault's subjects are crypto-shredded again, and a source's rows whose subject key
hashes to a tombstone and that are older than its time are deleted again (or anonymized again), chunk by chunk.

A backup of the service database holds the ledger as it was then: the erasures made since are not in it. So the
ledger is also exported (``export_tombstones``, JSON lines of pseudonymous keys and names only) and kept apart from
the backups; after restoring the service database, ``import_tombstones`` adds the exported tombstones the restored
ledger lacks, and the replay then erases again what was erased after the backup was taken.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import Database
from govsvc.core.errors import NotFoundError, ValidationFailed
from govsvc.retention.models import DeletionTombstone, RetentionRun
from govsvc.retention.rules import categories_cover
from govsvc.retention.service import Retention
from govsvc.retention.targets import ANON_PREFIX, SourceTarget, _aware
from govsvc.subjects.models import Subject
from govsvc.vault.erasure import erase_fields
from govsvc.vault.models import VaultField, VaultFieldHistory
from govsvc.vault.service import delete_history, shred_erased_anything


def replay(database: Database, retention: Retention, *, store: str | None = None, chunk: int = 1000) -> dict[str, Any]:
    """Re-apply every tombstone (of one store, or all); returns what was erased again per store."""
    with database.transaction(write=False) as session:
        query = select(DeletionTombstone).order_by(DeletionTombstone.pk)
        if store:
            query = query.where(DeletionTombstone.store == store)
        tombstones = session.scalars(query).all()
        rules_of_runs = dict(session.execute(select(RetentionRun.run_id, RetentionRun.rule_key)).all())
    by_store: dict[str, dict[str, tuple[datetime, str, str | None]]] = {}
    vault: dict[str, list[VaultTombstone]] = {}
    for t in tombstones:
        if t.store == "vault":  # every deletion counts: two rules may each have deleted other categories
            vault.setdefault(t.subject_key, []).append(VaultTombstone(t.action, t.run_id, t.detail))
            continue
        current = by_store.setdefault(t.store, {}).get(t.subject_key)
        if current is None or t.deleted_before > current[0]:
            by_store[t.store][t.subject_key] = (t.deleted_before, t.action, t.run_id)
    result: dict[str, Any] = {}
    if vault:
        result["vault"] = _replay_vault(database, retention, vault, rules_of_runs)
    for name, keys in sorted(by_store.items()):
        if name.startswith("source:"):
            result[name] = _replay_source(database, retention, name, keys, rules_of_runs, chunk)
    with database.transaction() as session:
        record(
            session,
            "retention.ledger_replayed",
            object_ref=f"ledger:{store or '*'}",
            details={"tombstones": len(tombstones), "stores": result},
        )
    return result


@dataclass(frozen=True)
class VaultTombstone:
    action: str
    run_id: str | None
    detail: str | None


def _replay_vault(
    database: Database,
    retention: Retention,
    tombstones: dict[str, list[VaultTombstone]],
    rules_of_runs: dict[str, str],
) -> dict[str, int]:
    """Per subject: a crypto-shred tombstone shreds the subject again (it covers every other deletion); a rule's
    delete tombstone deletes the fields of its categories again; a partial erasure's tombstone erases its fields,
    the history, the identifiers and the birth date again."""
    counts: Counter[str] = Counter()
    with database.transaction(write=False) as session:
        policy = retention.policy(session)
    for subject_id, done in tombstones.items():
        with database.transaction() as session:
            subject = session.scalar(select(Subject).where(Subject.subject_id == subject_id))
            if subject is None:
                continue
            if any(t.action == "crypto_shred" for t in done):
                _shred_again(session, retention, subject, counts)
                continue
            rows = session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk)).all()
            for tombstone in done:
                detail = json.loads(tombstone.detail) if tombstone.detail else {}
                if tombstone.action == "erase_fields":
                    erased = erase_fields(session, subject, detail.get("fields", []))
                    counts.update({name: n for name, n in erased.items() if n})
                    continue
                categories = detail.get("categories")
                if categories is None:  # written before tombstones carried their categories: the run's rule
                    rule = policy.rule(rules_of_runs.get(tombstone.run_id or "", ""))
                    if rule is None:
                        counts["skipped_unknown_rule"] += 1
                        continue
                    covers = rule.covers
                else:
                    covers = partial(categories_cover, tuple(categories))
                fields = [row.field for row in rows if covers(row.category)]
                if fields:
                    deleted = session.execute(
                        delete(VaultField).where(VaultField.subject_pk == subject.pk, VaultField.field.in_(fields))
                    ).rowcount
                    session.execute(
                        delete(VaultFieldHistory).where(
                            VaultFieldHistory.subject_pk == subject.pk, VaultFieldHistory.field.in_(fields)
                        )
                    )
                    if deleted:
                        counts["fields_deleted"] += int(deleted)
    return dict(counts)


def _shred_again(session: Session, retention: Retention, subject: Subject, counts: Counter[str]) -> None:
    """Shred a subject the ledger says was shredded; counted (and audited) only when the restore had brought
    something back: a live key version, a plain value or blind index, an identifier or an earlier value."""
    shredded = retention.vault.shred(session, subject, via="ledger_replay")
    if delete_history(session, subject) or shred_erased_anything(shredded):
        counts["subjects_shredded"] += 1


def _replay_source(
    database: Database,
    retention: Retention,
    store: str,
    keys: dict[str, tuple[datetime, str, str | None]],
    rules_of_runs: dict[str, str],
    chunk: int,
) -> dict[str, int]:
    with database.transaction(write=False) as session:
        try:
            config = retention.sources.by_name(session, store.partition(":")[2])
        except NotFoundError:
            return {"skipped_unregistered": len(keys)}
        policy = retention.policy(session)
    sources = retention.sources
    counts: Counter[str] = Counter()
    after = None
    while True:
        rows = sources.page(config, before=None, after=after, limit=chunk)  # every row
        if not rows:
            break
        after = rows[-1][0]
        to_delete, to_anonymize = [], []
        for key, value, stamp in rows:
            if value is None or str(value).startswith(ANON_PREFIX):
                continue
            found = keys.get(retention.source_pseudonym(config, str(value)))
            moment = _aware(stamp)
            if found is None or moment is None or moment >= found[0]:
                continue
            (to_anonymize if found[1] == "anonymize" else to_delete).append((key, found))
        if to_delete:
            counts["rows_deleted"] += sources.delete_keys(
                config, [k for k, _ in to_delete], before=max(f[0] for _, f in to_delete)
            )
        for key, (_, _, run_id) in to_anonymize:
            rule = policy.rule(rules_of_runs.get(run_id or "", ""))
            if rule is None or rule.action != "anonymize":
                counts["rows_deleted"] += sources.delete_keys(config, [key], before=None)
                continue
            target = SourceTarget(sources, config, retention, retention.masker_of())
            counts["rows_anonymized"] += target.anonymize(rule, [key])
    return dict(counts)


# -- export and import (for restores of the service database) ------------------------------------------------------

EXPORT_FIELDS = ("subject_key", "store", "deleted_before", "action", "run_id", "recorded_at", "detail")
_TOKEN = re.compile(r"^[a-z][a-z0-9_]{0,15}$")


def export_tombstones(session: Session, *, after: int = 0, chunk: int = 1000) -> Iterator[dict[str, Any]]:
    """Every tombstone after ``pk`` ``after``, oldest first, as a JSON-ready document (pseudonymous subject keys,
    store and field or category names: no personal data). Read ``chunk`` rows at a time."""
    while True:
        rows = session.scalars(
            select(DeletionTombstone).where(DeletionTombstone.pk > after).order_by(DeletionTombstone.pk).limit(chunk)
        ).all()
        for row in rows:
            yield {
                "seq": row.pk,
                "subject_key": row.subject_key,
                "store": row.store,
                "deleted_before": _aware(row.deleted_before).isoformat(),  # type: ignore[union-attr]
                "action": row.action,
                "run_id": row.run_id,
                "recorded_at": _aware(row.recorded_at).isoformat(),  # type: ignore[union-attr]
                "detail": json.loads(row.detail) if row.detail else None,
            }
        if len(rows) < chunk:
            return
        after = rows[-1].pk


def export_line(document: dict[str, Any]) -> str:
    """One tombstone of an export as its JSON line (sorted keys, UTF-8, newline-terminated)."""
    return json.dumps(document, sort_keys=True, ensure_ascii=False) + "\n"


EXPORT_FILE_NAME = "deletion-ledger.jsonl"


def append_export(database: Database, directory: Path) -> dict[str, int]:
    """Bring the export file in ``directory`` (``deletion-ledger.jsonl``, made if missing) up to date: append the
    tombstones after its last line's ``seq``, then fsync. A last line cut short by a crash is cut off first (it is
    written again); an exclusive lock keeps two instances from appending at once. Lines are ``export-ledger``'s,
    so ``replay-ledger --from`` reads the file. Returns how many were appended and the last ``seq`` exported."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / EXPORT_FILE_NAME
    created = not path.exists()
    appended = 0
    with open(path, "a+b") as export:
        fcntl.flock(export, fcntl.LOCK_EX)
        last_seq = _last_complete_seq(export, path)
        with database.transaction(write=False) as session:
            for document in export_tombstones(session, after=last_seq):
                export.write(export_line(document).encode())
                appended, last_seq = appended + 1, document["seq"]
        export.flush()
        os.fsync(export.fileno())
    if created:  # the new file's directory entry must be durable too
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    if appended:
        with database.transaction() as session:
            record(
                session,
                "retention.ledger_exported",
                object_ref="ledger:deletion",
                details={"tombstones": appended, "through_seq": last_seq},
            )
    return {"appended": appended, "through_seq": last_seq}


def _last_complete_seq(export: BinaryIO, path: Path) -> int:
    """The ``seq`` of the export's last complete line (0 when empty), after cutting off an incomplete last line."""
    size = export.seek(0, os.SEEK_END)
    tail, start = b"", size
    while start > 0 and tail.count(b"\n") < 2:  # read back until the last complete line is whole
        start = max(0, start - 4096)
        export.seek(start)
        tail = export.read(size - start)
    if tail and not tail.endswith(b"\n"):
        complete = start + tail.rfind(b"\n") + 1  # 0 when no newline at all
        export.truncate(complete)
        tail = tail[: complete - start]
    lines = tail.splitlines()
    if not lines:
        return 0
    try:
        return int(json.loads(lines[-1])["seq"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: the last line is not an exported tombstone; nothing appended") from error


def _identity(store: str, subject_key: str, action: str, run_id: str | None, deleted_before: datetime) -> tuple:
    return (store, subject_key, action, run_id or "", _aware(deleted_before))


def import_tombstones(session: Session, lines: Iterable[str]) -> int:
    """Add the tombstones of an export (JSON lines) that this ledger lacks, with their own times; returns how many.

    A tombstone is the same when its store, subject key, action, run and time match. Every line is checked before
    anything is added (ValidationFailed names the bad lines), so an import adds all of its missing tombstones or
    none of them.
    """
    parsed, errors = [], []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            parsed.append(_tombstone_of(json.loads(line)))
        except KeyError as error:
            errors.append({"field": f"line {number}", "message": f"missing field {error.args[0]}"})
        except (ValueError, TypeError) as error:
            errors.append({"field": f"line {number}", "message": str(error) or type(error).__name__})
    if errors:
        raise ValidationFailed("The ledger export has invalid lines; nothing was imported.", errors=errors[:20])
    present = {
        _identity(*row)
        for row in session.execute(
            select(
                DeletionTombstone.store,
                DeletionTombstone.subject_key,
                DeletionTombstone.action,
                DeletionTombstone.run_id,
                DeletionTombstone.deleted_before,
            )
        )
    }
    missing = []
    for row in parsed:
        identity = _identity(row["store"], row["subject_key"], row["action"], row["run_id"], row["deleted_before"])
        if identity not in present:
            present.add(identity)
            missing.append(row)
    if missing:
        session.execute(DeletionTombstone.__table__.insert(), missing)
        record(
            session,
            "retention.ledger_imported",
            object_ref="ledger:*",
            details={"imported": len(missing), "read": len(parsed)},
        )
    return len(missing)


def _tombstone_of(document: Any) -> dict[str, Any]:
    """One exported tombstone, checked; ValueError/TypeError/KeyError say what is wrong."""
    if not isinstance(document, dict):
        raise TypeError("not a JSON object")
    unknown = set(document) - set(EXPORT_FIELDS) - {"seq"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    subject_key, store, action = document["subject_key"], document["store"], document["action"]
    for name, value, limit in (("subject_key", subject_key, 80), ("store", store, 120)):
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            raise ValueError(f"{name} must be a string of 1 to {limit} characters")
    if not isinstance(action, str) or not _TOKEN.match(action):
        raise ValueError("action must be a short lower-case name")
    run_id = document.get("run_id")
    if run_id is not None and (not isinstance(run_id, str) or len(run_id) > 40):
        raise ValueError("run_id must be a string of at most 40 characters")
    detail = document.get("detail")
    if detail is not None and not isinstance(detail, dict):
        raise ValueError("detail must be an object")
    times = {}
    for name in ("deleted_before", "recorded_at"):
        moment = datetime.fromisoformat(str(document[name]))
        if moment.tzinfo is None:
            raise ValueError(f"{name} must carry its UTC offset")
        times[name] = _aware(moment)
    return {
        "subject_key": subject_key,
        "store": store,
        "action": action,
        "run_id": run_id,
        "detail": json.dumps(detail, sort_keys=True) if detail is not None else None,
        **times,
    }
