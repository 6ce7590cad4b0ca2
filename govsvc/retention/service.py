"""Retention runs: dry runs (what a rule would do: counts per category, pseudonymous samples, exclusions and
why) and executions (chunked, one transaction per chunk, resumable after a crash without counting twice, one
instance at a time per rule through a lease row). Every run is stored and audited (``retention.dry_run``,
``retention.purged``) with counts and ids only, never personal values; every deletion leaves a tombstone in the
insert-only deletion ledger, which a restore from backup replays."""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from govsvc.audit.service import AuditContext, record, reset_context, set_context
from govsvc.core.db import Database, utcnow
from govsvc.core.errors import ConflictError, NotFoundError, ServiceError, ValidationFailed
from govsvc.core.pii_guard import random_reference
from govsvc.crypto.kdf import derive_key
from govsvc.crypto.service import FieldKeys
from govsvc.holds.service import hold_index
from govsvc.retention import rules as rule_store
from govsvc.retention.models import DeletionTombstone, RetentionChunk, RetentionEvent, RetentionLease, RetentionRun
from govsvc.retention.rules import EVENT_TRIGGERS, RetentionPolicy, Rule
from govsvc.retention.targets import (
    ApiKeysTarget,
    ConsentTarget,
    DsrExportsTarget,
    Item,
    SourceTarget,
    Target,
    VaultTarget,
)
from govsvc.sources.service import SourceConfig, Sources, one_of
from govsvc.subjects.models import Subject, SubjectIdentifier
from govsvc.subjects.service import identifier_name, normalise
from govsvc.vault.service import Vault

SAMPLES = 10
JOB_CONTEXT = AuditContext(principal_id="job:retention", role="system")
# exclusion name -> (session, subject pks or None for all) -> the pks it excludes
Exclusion = Callable[[Session, set[int] | None], set[int]]


def leaves_tombstones(rule: Rule, store: str) -> bool:
    """Whether executing ``rule`` on ``store`` writes tombstones (one per subject and run, keyed like the report's
    pseudonymous ids): deletions of personal data, not restrictions nor the service's own API keys."""
    return rule.action in ("delete", "anonymize", "crypto_shred") and store != "api_keys"


class Interrupted(Exception):
    """Raised by a fault hook in tests to stop a run as a crash would (nothing after it runs)."""


@dataclass
class Tally:
    rows: int = 0
    restricted: int = 0
    by_category: Counter[str] = field(default_factory=Counter)
    exclusions: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    subjects: set[str] = field(default_factory=set)
    subjects_before: int = 0  # counted by an earlier (crashed) part of the run
    chunks: int = 0
    longest_chunk_ms: float = 0.0  # the longest transaction that changed the target: the longest lock held

    def counts(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "restricted": self.restricted,
            "subjects": self.subjects_before + len(self.subjects),
            "by_category": dict(sorted(self.by_category.items())),
            "chunks": self.chunks,
            "longest_chunk_ms": round(self.longest_chunk_ms, 1),
        }

    def chunk_took(self, seconds: float) -> None:
        self.chunks += 1
        self.longest_chunk_ms = max(self.longest_chunk_ms, seconds * 1000)

    @classmethod
    def of(cls, run: RetentionRun) -> Tally:
        counts = json.loads(run.counts or "{}")
        tally = cls(
            rows=int(counts.get("rows", 0)),
            restricted=int(counts.get("restricted", 0)),
            by_category=Counter(counts.get("by_category", {})),
            exclusions=Counter(json.loads(run.exclusions or "{}")),
            samples=list(json.loads(run.samples or "[]")),
        )
        tally.subjects_before = int(counts.get("subjects", 0))
        tally.chunks = int(counts.get("chunks", 0))
        tally.longest_chunk_ms = float(counts.get("longest_chunk_ms", 0.0))
        return tally

    def add(self, items: Sequence[Item]) -> None:
        self.rows += len(items)
        for categories, count in Counter(item.categories for item in items).items():
            for category in categories:
                self.by_category[category or "*"] += count
        pseudonyms = {item.pseudonym for item in items if item.pseudonym}
        self.subjects |= pseudonyms
        for pseudonym in sorted(pseudonyms):
            if len(self.samples) >= SAMPLES:
                break
            if pseudonym not in self.samples:
                self.samples.append(pseudonym)

    def store(self, run: RetentionRun) -> None:
        counts = self.counts()
        run.counts = json.dumps(counts, sort_keys=True)
        run.exclusions = json.dumps(dict(sorted(self.exclusions.items())), sort_keys=True)
        run.samples = json.dumps(self.samples)


@dataclass
class Split:
    eligible: list[Item]
    restricted: list[Item]
    excluded: Counter[str]


class Retention:
    """The retention engine of one app."""

    def __init__(
        self,
        *,
        secret_key: str,
        policy_dir: Path,
        vault: Vault,
        field_keys: FieldKeys,
        sources: Sources,
        masker_of: Callable[[], Any],
        chunk_size: int = 1000,
        lease_seconds: int = 120,
    ) -> None:
        self.policy_dir = policy_dir
        self.vault = vault
        self.field_keys = field_keys
        self.sources = sources
        self.masker_of = masker_of
        self.chunk_size = chunk_size
        self.lease_seconds = lease_seconds
        self._pseudonym_key = derive_key(secret_key, "govsvc retention subject key v1")
        self.exclusions: dict[str, Exclusion] = {"open_contract": open_contracts}
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.on_subject_released: list[Callable[[Database, str, str], None]] = []

    # -- wiring -------------------------------------------------------------------------------------------------

    def add_exclusion(self, name: str, exclusion: Exclusion) -> None:
        """Register an exclusion a rule can name in ``exceptions`` (the DSR domain registers ``open_dsr``)."""
        self.exclusions[name] = exclusion

    def pseudonym(self, value: str) -> str:
        """A keyed, stable pseudonym of an external subject key (samples and the deletion ledger)."""
        return "psk_" + hmac.digest(self._pseudonym_key, value.encode(), "sha256").hex()[:32]

    def policy(self, session: Session) -> RetentionPolicy:
        return rule_store.current(session, self.policy_dir)

    def rule(self, session: Session, key: str) -> tuple[RetentionPolicy, Rule]:
        policy = self.policy(session)
        rule = policy.rule(key)
        if rule is None:
            raise NotFoundError(f"No retention rule {key!r}.")
        return policy, rule

    def target(self, session: Session, rule: Rule) -> Target:
        if rule.store == "vault":
            return VaultTarget(self.vault)
        if rule.store == "consent":
            return ConsentTarget()
        if rule.store == "dsr_exports":
            return DsrExportsTarget()
        if rule.store == "api_keys":
            return ApiKeysTarget()
        name = rule.source_name or ""
        try:
            config = self.sources.by_name(session, name)
        except NotFoundError:
            raise ConflictError(f"Rule {rule.key} names source {name!r}, which is not registered.") from None
        return SourceTarget(self.sources, config, self, self.masker_of())

    def source_keys(self, config: SourceConfig, values: Iterable[str]) -> dict[str, tuple[str, str | None]]:
        """For each external subject key: its pseudonym (samples, the ledger) and its blind index (the keyed hash
        our identifiers are found by; the pseudonym is derived from it, so one HMAC serves both)."""
        found: dict[str, tuple[str, str | None]] = {}
        for value in values:
            try:
                normalised = normalise(config.subject_kind, value)
            except ServiceError:
                found[value] = (self.pseudonym(value), None)
                continue
            index = self.field_keys.blind_index(config.subject_kind, config.subject_system, normalised)
            found[value] = ("psk_" + index[:32], index)
        return found

    def subject_values(self, session: Session, config: SourceConfig, due: dict[int, datetime]) -> dict[str, datetime]:
        """The source's key values of these subjects (their identifiers of its kind and system, opened), each with
        the time its retention started."""
        found: dict[str, datetime] = {}
        pks = sorted(due)
        name = identifier_name(config.subject_kind, config.subject_system)
        for start in range(0, len(pks), 500):
            for subject_id, subject_pk, sealed in session.execute(
                select(Subject.subject_id, SubjectIdentifier.subject_pk, SubjectIdentifier.value_enc)
                .join(Subject, Subject.pk == SubjectIdentifier.subject_pk)
                .where(
                    SubjectIdentifier.kind == config.subject_kind,
                    SubjectIdentifier.system == config.subject_system,
                    SubjectIdentifier.subject_pk.in_(pks[start : start + 500]),
                )
            ):
                try:
                    found[self.field_keys.open(session, subject_id, name, sealed)] = due[subject_pk]
                except ServiceError:
                    continue  # shredded: nothing of it can be matched any more
        return found

    def source_pseudonym(self, config: SourceConfig, value: str) -> str:
        return self.source_keys(config, [value])[value][0]

    def watched(self, session: Session, config: SourceConfig, rule: Rule) -> dict[str, int]:
        """Blind index -> subject of the subjects a purge must look out for in this source: those with a subject
        hold or another exclusion the rule names (open DSR, open contract). Every other row belongs to nobody
        an exclusion protects, so a chunk needs no lookup of its thousands of keys."""
        pks = set(hold_index(session).by_subject)
        for name in rule.exceptions:
            exclusion = self.exclusions.get(name)
            if exclusion is not None:
                pks |= exclusion(session, None)
        if not pks:
            return {}
        return self._indexes_of(session, config, SubjectIdentifier.subject_pk, sorted(pks))

    def subjects_by_index(self, session: Session, config: SourceConfig, indexes: Sequence[str]) -> dict[str, int]:
        return self._indexes_of(session, config, SubjectIdentifier.blind_index, list(indexes))

    def _indexes_of(self, session: Session, config: SourceConfig, column: Any, values: list[Any]) -> dict[str, int]:
        found: dict[str, int] = {}
        dialect = session.get_bind().dialect.name
        step = 500 if dialect == "sqlite" else 20_000
        for start in range(0, len(values), step):
            for blind_index, subject_pk in session.execute(
                select(SubjectIdentifier.blind_index, SubjectIdentifier.subject_pk).where(
                    SubjectIdentifier.kind == config.subject_kind,
                    SubjectIdentifier.system == config.subject_system,
                    one_of(column, values[start : start + step], dialect),
                )
            ):
                found[blind_index] = subject_pk
        return found

    # -- classification -----------------------------------------------------------------------------------------

    def split(self, session: Session, rule: Rule, store: str, items: Sequence[Item], now: datetime) -> Split:
        """Which candidates the rule acts on, which it only restricts (minimum legal retention not reached,
        PIPL Art 47 para 2), and which are excluded and why (legal hold, open DSR, open contract)."""
        holds = hold_index(session)
        real = [i for i in items if i.categories]
        if holds.dataset_held(store):
            return Split([], [], Counter({"legal_hold": len(real)}))
        pks = {i.subject_pk for i in real if i.subject_pk is not None}
        excluded_by: dict[str, set[int]] = {}
        for name in rule.exceptions:
            exclusion = self.exclusions.get(name)
            if exclusion is not None and pks:
                excluded_by[name] = exclusion(session, pks)
        minimum = now - timedelta(days=rule.min_retention_days) if rule.min_retention_days else None
        split = Split([], [], Counter())
        any_category_hold = bool(holds.categories)
        for item in real:
            if (any_category_hold and holds.category_held(item.categories)) or (
                item.subject_pk in holds.by_subject and holds.subject_held(item.subject_pk, item.categories)
            ):
                split.excluded["legal_hold"] += 1
                continue
            reason = next((name for name, held in excluded_by.items() if item.subject_pk in held), None)
            if reason is not None:
                split.excluded[reason] += 1
            elif minimum is not None and item.ref_time is not None and item.ref_time > minimum:
                split.restricted.append(item)
            else:
                split.eligible.append(item)
        return split

    # -- dry runs -----------------------------------------------------------------------------------------------

    def dry_run(self, database: Database, rule_key: str, *, actor: str) -> RetentionRun:
        """What the rule would do now; stored and audited as ``retention.dry_run``."""
        started = time.monotonic()
        now = utcnow()
        with database.transaction(write=False) as session:
            policy, rule = self.rule(session, rule_key)
            target = self.target(session, rule)
            cutoff = now - timedelta(days=rule.period_days)
            tally = Tally()
            after = None
            errors: list[str] = []
            try:
                while True:
                    items = target.page(session, rule, cutoff, after, self.chunk_size)
                    if not items:
                        break
                    split = self.split(session, rule, target.store, items, now)
                    tally.add(split.eligible)
                    tally.restricted += len(split.restricted)
                    tally.exclusions.update(split.excluded)
                    after = items[-1].key
            except ServiceError as error:
                errors.append(error.detail)
        with database.transaction() as session:
            run = RetentionRun(
                run_id=random_reference("rrun_"),
                rule_key=rule.key,
                policy_version=policy.version,
                mode="dry_run",
                status="failed" if errors else "completed",
                store=rule.store,
                cutoff=cutoff,
                errors=json.dumps(errors),
                requested_by=actor,
                started_at=now,
                finished_at=utcnow(),
                duration_ms=int((time.monotonic() - started) * 1000),
            )
            tally.store(run)
            session.add(run)
            session.flush()
            record(
                session,
                "retention.dry_run",
                outcome="failure" if errors else "success",
                object_ref=f"retention_run:{run.run_id}",
                details=_audit_details(run, rule),
            )
        return run

    def approve(self, session: Session, run_id: str, *, actor: str) -> RetentionRun:
        run = self.get_run(session, run_id, for_update=True)
        if run.mode != "dry_run" or run.status != "completed":
            raise ConflictError("Only a completed dry run can be approved.")
        if run.approved_at is not None:
            raise ConflictError("This dry run is approved already.")
        run.approved_by, run.approved_at = actor, utcnow()
        record(session, "retention.approved", object_ref=f"retention_run:{run.run_id}", details={"rule": run.rule_key})
        return run

    # -- executions ---------------------------------------------------------------------------------------------

    def execute(
        self,
        database: Database,
        rule_key: str,
        *,
        actor: str,
        dry_run_id: str | None = None,
        fault: Callable[[str, int], None] | None = None,
    ) -> RetentionRun:
        """Carry out a rule (resuming its unfinished execution if one crashed). When the policy requires it, the
        execution follows an approved dry run of the same rule and policy version, and uses its cutoff.
        ``fault`` (tests) is called at each step and may raise ``Interrupted`` to stop like a crash."""
        name = f"retention:{rule_key}"
        holder = f"{self.holder}:{secrets.token_hex(4)}"  # per execution: two threads of one process contend too
        if not acquire_lease(database, name, holder, self.lease_seconds):
            raise ConflictError(f"Rule {rule_key} is running on another instance.", reason="lease_held")
        try:
            run = self._open_run(database, rule_key, actor=actor, dry_run_id=dry_run_id)
            return self._execute(database, run.run_id, holder, fault)
        finally:
            release_lease(database, name, holder)

    def _open_run(self, database: Database, rule_key: str, *, actor: str, dry_run_id: str | None) -> RetentionRun:
        now = utcnow()
        with database.transaction() as session:
            policy, rule = self.rule(session, rule_key)
            unfinished = session.scalar(
                select(RetentionRun).where(
                    RetentionRun.rule_key == rule_key, RetentionRun.mode == "execute", RetentionRun.status == "running"
                )
            )
            if unfinished is not None:
                return unfinished  # a crashed execution: resume it
            cutoff = now - timedelta(days=rule.period_days)
            if dry_run_id is not None or policy.require_approved_dry_run:
                approved = self._approved_dry_run(session, policy, rule, dry_run_id, now)
                cutoff = approved.cutoff
            self.target(session, rule)  # a missing source fails before anything is stored
            run = RetentionRun(
                run_id=random_reference("rrun_"),
                rule_key=rule.key,
                policy_version=policy.version,
                mode="execute",
                status="running",
                store=rule.store,
                cutoff=cutoff,
                dry_run_id=dry_run_id,
                requested_by=actor,
                started_at=now,
            )
            session.add(run)
            session.flush()
            return run

    def _approved_dry_run(
        self, session: Session, policy: RetentionPolicy, rule: Rule, dry_run_id: str | None, now: datetime
    ) -> RetentionRun:
        if dry_run_id is None:
            raise ConflictError(
                "This policy requires an approved dry run before an execution: name it in dry_run_id.",
                reason="dry_run_required",
            )
        dry = self.get_run(session, dry_run_id)
        if dry.mode != "dry_run" or dry.rule_key != rule.key:
            raise ConflictError("That is not a dry run of this rule.", reason="dry_run_mismatch")
        if dry.approved_at is None and policy.require_approved_dry_run:
            raise ConflictError("That dry run is not approved.", reason="dry_run_not_approved")
        if dry.policy_version != policy.version:
            raise ConflictError("The rules changed since that dry run: run a new one.", reason="dry_run_stale")
        if dry.approved_at is not None and dry.approved_at < now - timedelta(days=policy.approval_valid_days):
            raise ConflictError("That approval has expired: run a new dry run.", reason="dry_run_stale")
        used = session.scalar(select(RetentionRun.pk).where(RetentionRun.dry_run_id == dry.run_id))
        if used is not None:
            raise ConflictError("That dry run was executed already.", reason="dry_run_used")
        return dry

    def _execute(
        self, database: Database, run_id: str, holder: str, fault: Callable[[str, int], None] | None
    ) -> RetentionRun:
        started = time.monotonic()
        with database.transaction(write=False) as session:
            run = self.get_run(session, run_id)
            _, rule = self.rule(session, run.rule_key)
            target = self.target(session, rule)
            # the subjects an earlier, crashed part of this run tombstoned: neither tombstoned nor counted again
            ledgered = set(
                session.scalars(select(DeletionTombstone.subject_key).where(DeletionTombstone.run_id == run.run_id))
            )
        tally = Tally.of(run)
        if leaves_tombstones(rule, target.store):
            tally.subjects, tally.subjects_before = set(ledgered), 0
        errors: list[str] = []
        cutoff = run.cutoff
        seq = 0
        try:
            if target.external:
                seq = self._finish_pending(database, run.pk, target, rule, cutoff, tally)
            after = json.loads(run.cursor) if run.cursor else None
            while True:
                now = utcnow()
                chunk_started = time.perf_counter()
                with database.transaction() as session:
                    items = target.page(session, rule, cutoff, after, self.chunk_size)
                    if not items:
                        break
                    split = self.split(session, rule, target.store, items, now)
                    restricted = self._restrict(session, split.restricted, target)
                    tally.restricted += restricted
                    tally.exclusions.update(split.excluded)
                    stored = session.get(RetentionRun, run.pk)
                    assert stored is not None
                    after = items[-1].key
                    stored.cursor = json.dumps(after)
                    if not target.external:
                        target.act(session, rule, split.eligible, cutoff)
                        tally.add(split.eligible)
                        tally.chunk_took(time.perf_counter() - chunk_started)
                        self._tombstones(session, split.eligible, target.store, rule, run, cutoff, ledgered)
                        tally.store(stored)
                    elif split.eligible:
                        seq += 1
                        session.add(
                            RetentionChunk(
                                run_pk=run.pk,
                                seq=seq,
                                keys=json.dumps([i.key for i in split.eligible]),
                                planned=len(split.eligible),
                                status="pending",
                            )
                        )
                        self._tombstones(session, split.eligible, target.store, rule, run, cutoff, ledgered)
                        tally.store(stored)
                if fault:
                    fault("planned", seq)
                if target.external and split.eligible:
                    assert isinstance(target, SourceTarget)
                    acted_at = time.perf_counter()
                    target.act_external(rule, [i.key for i in split.eligible], cutoff)
                    tally.chunk_took(time.perf_counter() - acted_at)
                    if fault:
                        fault("acted", seq)
                    with database.transaction() as session:
                        chunk = session.scalar(
                            select(RetentionChunk).where(RetentionChunk.run_pk == run.pk, RetentionChunk.seq == seq)
                        )
                        assert chunk is not None
                        chunk.status, chunk.done = "done", chunk.planned
                        tally.add(split.eligible)
                        stored = session.get(RetentionRun, run.pk)
                        assert stored is not None
                        tally.store(stored)
                renew_lease(database, f"retention:{rule.key}", holder, self.lease_seconds)
        except Interrupted:
            raise
        except ServiceError as error:
            errors.append(error.detail)
        except Exception as error:  # a source failing mid-run: the run stays resumable, the report says so
            errors.append(f"{type(error).__name__} while purging; resumable")
        with database.transaction() as session:
            stored = session.get(RetentionRun, run.pk)
            assert stored is not None
            if errors:
                stored.errors = json.dumps(errors)
                stored.status = "failed"
            else:
                stored.status = "completed"
            stored.finished_at = utcnow()
            stored.duration_ms = (stored.duration_ms or 0) + int((time.monotonic() - started) * 1000)
            tally.store(stored)
            record(
                session,
                "retention.purged",
                outcome="failure" if errors else "success",
                object_ref=f"retention_run:{stored.run_id}",
                details=_audit_details(stored, rule),
            )
            return stored

    def _finish_pending(
        self, database: Database, run_pk: int, target: Target, rule: Rule, cutoff: datetime, tally: Tally
    ) -> int:
        """After a crash: a planned chunk whose delete may or may not have committed is deleted again (a no-op
        for rows already gone) and counted once, from its plan."""
        assert isinstance(target, SourceTarget)
        with database.transaction(write=False) as session:
            pending = session.scalars(
                select(RetentionChunk).where(RetentionChunk.run_pk == run_pk, RetentionChunk.status == "pending")
            ).all()
            last = session.scalar(
                select(RetentionChunk.seq).where(RetentionChunk.run_pk == run_pk).order_by(RetentionChunk.seq.desc())
            )
        for chunk in pending:
            target.act_external(rule, json.loads(chunk.keys), cutoff)
            with database.transaction() as session:
                stored = session.get(RetentionChunk, chunk.pk)
                assert stored is not None
                stored.status, stored.done = "done", stored.planned
                tally.rows += stored.planned
                for category in target.config.columns.values():
                    if rule.action == "delete" or rule.covers(category):
                        tally.by_category[category] += stored.planned
                run = session.get(RetentionRun, run_pk)
                assert run is not None
                tally.store(run)
        return int(last or 0)

    def _restrict(self, session: Session, items: Sequence[Item], target: Target) -> int:
        """Data the law still requires to keep: storage only (the subject is restricted)."""
        pks = {i.subject_pk for i in items if i.subject_pk is not None}
        unknown = sorted({i.index for i in items if i.subject_pk is None and i.index})
        if unknown and isinstance(target, SourceTarget):
            pks |= set(self.subjects_by_index(session, target.config, unknown).values())
        for pk in pks:
            subject = session.get(Subject, pk)
            if subject is not None and not subject.restricted:
                subject.restricted = True
                subject.updated_at = utcnow()
        return len(items)

    def _tombstones(
        self,
        session: Session,
        items: Sequence[Item],
        store: str,
        rule: Rule,
        run: RetentionRun,
        cutoff: datetime,
        seen: set[str],
    ) -> None:
        if not leaves_tombstones(rule, store):
            return
        before = utcnow() if rule.action == "crypto_shred" else cutoff
        # what was deleted, so that a replay after a restore needs no other table (names only)
        detail = None if rule.action == "crypto_shred" else json.dumps({"categories": list(rule.categories)})
        rows = []
        for item in items:
            key = item.subject_id or item.pseudonym
            if not key or key in seen:
                continue
            seen.add(key)
            rows.append(
                {
                    "subject_key": key,
                    "store": store,
                    "deleted_before": before,
                    "action": rule.action,
                    "run_id": run.run_id,
                    "recorded_at": utcnow(),
                    "detail": detail,
                }
            )
        if rows:
            session.execute(DeletionTombstone.__table__.insert(), rows)

    # -- reads --------------------------------------------------------------------------------------------------

    def get_run(self, session: Session, run_id: str, *, for_update: bool = False) -> RetentionRun:
        query = select(RetentionRun).where(RetentionRun.run_id == run_id)
        if for_update:
            query = query.with_for_update()
        run = session.scalar(query)
        if run is None:
            raise NotFoundError("No such retention run.")
        return run

    # -- proactive triggers -------------------------------------------------------------------------------------

    def record_event(
        self, session: Session, subject: Subject, trigger: str, *, actor: str, purpose: str | None = None
    ) -> list[str]:
        """A subject event that starts retention clocks (contract end, purpose completed, account cancelled);
        returns the rules it schedules (their next run picks the subject up once their period has passed)."""
        if trigger not in (*EVENT_TRIGGERS, "contract_started"):
            raise ValidationFailed(
                "Unknown event.",
                errors=[
                    {
                        "field": "event",
                        "message": "contract_started, contract_end, purpose_completed, account_cancelled",
                    }
                ],
            )
        session.add(RetentionEvent(subject_pk=subject.pk, trigger=trigger, purpose=purpose, recorded_by=actor))
        session.flush()
        record(
            session,
            "retention.event",
            subject_ref=subject.subject_id,
            reason_code=trigger,
            details={"purpose": purpose},
        )
        return self.rules_for(session, "contract_end" if trigger == "account_cancelled" else trigger)

    def rules_for(self, session: Session, trigger: str) -> list[str]:
        return sorted(rule.key for rule in self.policy(session).rules.values() if rule.trigger == trigger)


def _audit_details(run: RetentionRun, rule: Rule) -> dict[str, Any]:
    counts = json.loads(run.counts or "{}")
    return {
        "rule": rule.key,
        "store": rule.store,
        "action": rule.action,
        "policy_version": run.policy_version,
        "rows": counts.get("rows", 0),
        "restricted": counts.get("restricted", 0),
        "by_category": counts.get("by_category", {}),
        "exclusions": json.loads(run.exclusions or "{}"),
        "errors": len(json.loads(run.errors or "[]")),
    }


def open_contracts(session: Session, subject_pks: set[int] | None) -> set[int]:
    """Subjects (of ``subject_pks``, or all) whose latest contract event is ``contract_started`` (no end or
    cancellation after it)."""
    latest: dict[int, tuple[datetime, str]] = {}
    query = select(RetentionEvent.subject_pk, RetentionEvent.trigger, RetentionEvent.occurred_at).where(
        RetentionEvent.trigger.in_(("contract_started", "contract_end", "account_cancelled"))
    )
    if subject_pks is not None:
        query = query.where(RetentionEvent.subject_pk.in_(subject_pks))
    for subject_pk, trigger, at in session.execute(query):
        if subject_pk not in latest or at >= latest[subject_pk][0]:
            latest[subject_pk] = (at, trigger)
    return {pk for pk, (_, trigger) in latest.items() if trigger == "contract_started"}


# -- leases: one instance runs a given purge ---------------------------------------------------------------------


def acquire_lease(database: Database, name: str, holder: str, seconds: int) -> bool:
    """Take (or renew) the lease ``name`` until now + ``seconds``; False when another holder has it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    with database.transaction() as session:
        taken = session.execute(
            update(RetentionLease)
            .where(RetentionLease.name == name, or_(RetentionLease.expires_at < now, RetentionLease.holder == holder))
            .values(holder=holder, expires_at=until)
        ).rowcount
        if taken:
            return True
        if session.get(RetentionLease, name) is not None:
            return False
        try:
            with session.begin_nested():
                session.add(RetentionLease(name=name, holder=holder, expires_at=until))
                session.flush()
        except IntegrityError:
            return False
        return True


def renew_lease(database: Database, name: str, holder: str, seconds: int) -> None:
    if not acquire_lease(database, name, holder, seconds):
        raise ConflictError("The lease was lost to another instance; stopping.", reason="lease_lost")


def release_lease(database: Database, name: str, holder: str) -> None:
    with database.transaction() as session:
        session.execute(
            update(RetentionLease)
            .where(RetentionLease.name == name, RetentionLease.holder == holder)
            .values(expires_at=utcnow())
        )


def as_job(function: Callable[[], Any]) -> Any:
    token = set_context(JOB_CONTEXT)
    try:
        return function()
    finally:
        reset_context(token)
