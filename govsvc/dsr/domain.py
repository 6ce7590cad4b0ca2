"""The DSR domain of one app: its rules, services, connectors and retention hook, built once at start-up.

Phase 2 (issue 8) is wired in ``wire_retention``: the external SQL sources become connectors
(``dsr.registry.add_provider``), legal holds and the retention rules' legal minimums become sources of
``dsr.exceptions``, erasures leave tombstones in the deletion ledger, retention rules skip subjects with an open
request (``open_dsr``), and releasing a hold re-runs the erasures it kept back (``rerun_held_erasures``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from govsvc.audit.service import record
from govsvc.config import Settings
from govsvc.core.db import Database, utcnow
from govsvc.crypto.service import FieldKeys, KeyWrapper
from govsvc.dsr import opendsr
from govsvc.dsr.connectors import (
    WEBHOOK_SECRET_LABEL,
    AuditAccessConnector,
    BuiltinConnector,
    ConnectorRegistry,
    ConsentConnector,
    Job,
    Outcome,
    VaultConnector,
    open_identifiers,
)
from govsvc.dsr.erasure import (
    RetentionException,
    RetentionExceptions,
    erasable_fields,
    legal_hold_flag,
    retention_rules,
)
from govsvc.dsr.fulfilment import Fulfilment
from govsvc.dsr.models import DsrRequest
from govsvc.dsr.rules import ERASING_TYPES, DsrRules, load_rules
from govsvc.dsr.service import OPEN, DsrService
from govsvc.subjects.models import Subject
from govsvc.taxonomy.service import TaxonomyCache
from govsvc.vault.service import Vault

if TYPE_CHECKING:
    from govsvc.retention.service import Retention
    from govsvc.sources.service import Sources


@dataclass
class Dsr:
    rules: DsrRules
    service: DsrService
    registry: ConnectorRegistry
    exceptions: RetentionExceptions
    fulfilment: Fulfilment
    secrets: KeyWrapper  # webhook secrets and the OpenDSR processor key, wrapped under the service secret
    domain: str
    export_ttl: timedelta

    def notify_status(self, session: Session, request: DsrRequest) -> None:
        """Queue OpenDSR status callbacks for a request that came through the facade."""
        if request.source != "opendsr":
            return
        urls = opendsr.callback_urls(session, request)
        if urls:
            opendsr.enqueue_callbacks(session, request, urls, request.created_by, self.domain)

    def deliver_callbacks(self, database: Database) -> dict[str, int]:
        return opendsr.deliver_callbacks(database, self.secrets, self.domain)


def build(settings: Settings, vault: Vault, field_keys: FieldKeys, taxonomy: TaxonomyCache) -> Dsr:
    rules = load_rules(Path(settings.policy_dir))
    service = DsrService(rules, field_keys, settings.secret_key)
    secrets = KeyWrapper(settings.secret_key, WEBHOOK_SECRET_LABEL)
    registry = ConnectorRegistry(
        [ConsentConnector(field_keys, taxonomy), AuditAccessConnector(), VaultConnector(vault, taxonomy, rules)],
        secrets,
    )
    exceptions = RetentionExceptions([legal_hold_flag, retention_rules(rules)])
    ttl = timedelta(hours=settings.dsr_export_ttl_hours)
    dsr = Dsr(rules, service, registry, exceptions, None, secrets, settings.dsr_processor_domain, ttl)  # type: ignore[arg-type]
    dsr.fulfilment = Fulfilment(
        service, registry, exceptions, field_keys, export_ttl=ttl, on_status_change=dsr.notify_status
    )
    return dsr


# -- phase 2: retention, legal holds and external SQL sources (issue 8) --------------------------------------------


def wire_retention(dsr: Dsr, retention: Retention, sources: Sources) -> None:
    """Plug issue 8 into DSR fulfilment, and DSRs into retention."""
    from govsvc.holds.service import hold_exceptions
    from govsvc.sources.connector import SqlSourceConnector

    dsr.exceptions.add(hold_exceptions)
    dsr.exceptions.add(retention_minimums(retention))

    def sql_connectors(session: Session) -> Iterator[SqlSourceConnector]:
        for config in sources.configs(session):
            yield SqlSourceConnector(
                sources, config, lambda value, config=config: retention.source_pseudonym(config, value)
            )

    dsr.registry.add_provider(sql_connectors)
    dsr.registry.add_provider(lambda session: [LedgerConnector()])
    retention.add_exclusion("open_dsr", open_dsr_subjects)


def open_dsr_subjects(session: Session, subject_pks: set[int] | None) -> set[int]:
    """Subjects (of ``subject_pks``, or all) with a request still open: retention leaves their data alone until
    it is answered."""
    query = select(DsrRequest.subject_pk).where(DsrRequest.status.in_(OPEN), DsrRequest.subject_pk.is_not(None))
    if subject_pks is not None:
        query = query.where(DsrRequest.subject_pk.in_(subject_pks))
    return {pk for pk in session.scalars(query) if pk is not None}


def retention_minimums(retention: Retention) -> Any:
    """Retention rules with a legal minimum keep their categories of the vault until it has passed."""

    def source(session: Session, subject: Subject) -> list[RetentionException]:
        found = []
        for rule in retention.policy(session).rules.values():
            if not rule.min_retention_days or rule.store != "vault":
                continue
            until = None
            if rule.trigger == "created_at":
                ends = subject.created_at + timedelta(days=rule.min_retention_days)
                if ends <= utcnow():
                    continue
                until = ends.date().isoformat()
            found.append(
                RetentionException(
                    source=f"retention:{rule.key}",
                    categories=rule.categories,
                    reason_code="legal_retention",
                    reason={
                        "en": f"kept for the legal retention period ({rule.legal_source})",
                        "zh": f"依法定保存期限保存（{rule.legal_source}）",
                    },
                    legal_basis=rule.legal_source or "",
                    until=until,
                )
            )
        return found

    return source


class LedgerConnector(BuiltinConnector):
    """Writes the vault's tombstone in the deletion ledger before the vault erases the profile, so that a restored
    backup is erased again: a crypto-shred, or, when a hold or legal retention keeps part of the profile, the
    fields erased now (names only; nothing when a hold keeps everything)."""

    name = "ledger"
    operations = frozenset({"erase"})

    def run(self, operation: str, job: Job) -> Outcome:
        if operation != "erase":
            return super().run(operation, job)
        if any("*" in exception.categories for exception in job.exceptions):
            return Outcome("skipped", notes=["the whole profile is kept; its retention rule erases it later"])
        from govsvc.retention.models import DeletionTombstone
        from govsvc.subjects.service import get_subject
        from govsvc.vault.models import VaultField

        with job.database.transaction() as session:
            tombstone = DeletionTombstone(
                subject_key=job.subject_id,
                store="vault",
                deleted_before=utcnow(),
                action="crypto_shred",
                run_id=f"dsr:{job.request_id}",
                recorded_at=utcnow(),
            )
            if job.exceptions:  # as the vault decides: when a field is kept, the data key stays and the rest goes
                subject = get_subject(session, job.subject_id)
                rows = session.scalars(select(VaultField).where(VaultField.subject_pk == subject.pk)).all()
                erased = erasable_fields(rows, job.exceptions)
                if len(erased) < len(rows):
                    tombstone.action = "erase_fields"
                    tombstone.detail = json.dumps({"fields": erased})
            session.add(tombstone)
        return Outcome("done", counts={"tombstones": 1})


def rerun_held_erasures(database: Database, dsr: Dsr, subject_id: str, *, actor: str) -> list[str]:
    """After a hold is released: run again the erasures it kept back (requests closed as partially completed
    because of a legal hold), unless another hold still applies. Returns the request ids re-run."""
    from govsvc.subjects.service import get_subject

    with database.transaction(write=False) as session:
        subject = get_subject(session, subject_id)
        requests = session.scalars(
            select(DsrRequest).where(
                DsrRequest.subject_pk == subject.pk,
                DsrRequest.request_type.in_(sorted(ERASING_TYPES)),
                DsrRequest.status == "partially_completed",
            )
        ).all()
        held = [r for r in requests if "legal_hold" in json.dumps(json.loads(r.outcome or "{}").get("kept", []))]
        exceptions = dsr.exceptions.for_subject(session, subject)
        if not held or any(e.reason_code == "legal_hold" for e in exceptions):
            return []
        identifiers = open_identifiers(session, dsr.fulfilment.keys, subject)
        connectors = dsr.registry.connectors(session)
        jobs = [
            (
                request.pk,
                Job(
                    database=database,
                    request_id=request.request_id,
                    request_type=request.request_type,
                    subject_id=subject.subject_id,
                    regimes=dsr.service.regimes(request),
                    channel=request.channel,
                    actor=actor,
                    parameters=dsr.service.parameters(request),
                    identifiers=identifiers,
                    exceptions=exceptions,
                ),
            )
            for request in held
        ]
    done = []
    for request_pk, job in jobs:
        for connector in connectors:
            operation = dsr.fulfilment._operation_for(connector, "erase")
            if operation is None:
                continue
            outcome = dsr.fulfilment._run_one(connector, operation, job)
            dsr.fulfilment._store_run(database, request_pk, connector.name, operation, outcome, job)
        with database.transaction() as session:
            record(
                session,
                "dsr.erasure_rerun",
                subject_ref=job.subject_id,
                object_ref=f"dsr:{job.request_id}",
                reason_code="hold_released",
            )
        done.append(job.request_id)
    return done
