"""Replaying the deletion ledger after a restore (reference R-DEL-02): every tombstone's deletion is done again
in the restored store: the vault's subjects are crypto-shredded again, and a source's rows whose subject key
hashes to a tombstone and that are older than its time are deleted again (or anonymized again), chunk by chunk."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.core.db import Database
from govsvc.core.errors import NotFoundError
from govsvc.retention.models import DeletionTombstone, RetentionRun
from govsvc.retention.rules import categories_cover
from govsvc.retention.service import Retention
from govsvc.retention.targets import ANON_PREFIX, SourceTarget, _aware
from govsvc.subjects.models import Subject
from govsvc.vault.erasure import erase_fields
from govsvc.vault.models import VaultField, VaultFieldHistory


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
    shredded = retention.vault.shred(session, subject)
    session.execute(delete(VaultFieldHistory).where(VaultFieldHistory.subject_pk == subject.pk))
    if shredded["key_versions_destroyed"] or shredded["fields"]:
        counts["subjects_shredded"] += 1
        record(
            session,
            "key.destroyed",
            subject_ref=subject.subject_id,
            object_ref=f"key:subject:{subject.subject_id}",
            details={**shredded, "via": "ledger_replay"},
        )


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
